/* A request: its arguments parsed and judged against the policy, then one transaction that
 * files the operation (OCI payloads read here, digests normalised, requests budgeted). */
#include "approvald/authz.h"
#include "approvald/csr_payload.h"
#include "approvald/pgp_payload.h"
#include "approvald/idtoken.h"
#include "approvald/jwks_sources.h"
#include "approvald/jbuild.h"
#include "approvald/ops_internal.h"

#include <ctype.h>
#include <inttypes.h>

#include <openssl/evp.h>

#include "approvald/textsafe.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define MAX_KEYS     16
#define MAX_DIGESTS  64
#define MAX_USES     1000000
#define MAX_VALIDITY (10LL * 365 * 86400)
#define MAX_TEXT     1024
#define MAX_CONTEXT  4096
#define MAX_NAME     128 /* a request's title */
#define MAX_META     32  /* metadata entries */
#define MAX_META_KEY 64  /* [A-Za-z0-9._-] */
#define MAX_META_VAL 1024
#define MAX_PAYLOAD  16384 /* bytes of one cosign payload */
#define MAX_REFNAME  512   /* bytes of a payload's docker-reference */

/* ---- digests ------------------------------------------------------------ */

static const struct {
	const char *alg;
	size_t len;
} digest_algs[] = {
    {"sha1", 20},     {"sha224", 28},   {"sha256", 32},    {"sha384", 48},
    {"sha512", 64},   {"sha3-224", 28}, {"sha3-256", 32},  {"sha3-384", 48},
    {"sha3-512", 64}, {"md5", 16},      {"ripemd160", 20},
};

bool p11g_digest_normalise(const char *s, char *out, size_t outsz)
{
	const char *colon = strchr(s, ':');
	if (!colon)
		return false;
	size_t alen = (size_t)(colon - s);
	for (size_t i = 0; i < P11G_ARRAY_SIZE(digest_algs); i++) {
		if (strlen(digest_algs[i].alg) != alen || strncasecmp(s, digest_algs[i].alg, alen))
			continue;
		const char *hex = colon + 1;
		size_t hlen = strlen(hex);
		unsigned char bin[64];
		if (hlen != 2 * digest_algs[i].len ||
		    p11g_hex_decode(hex, hlen, bin, sizeof(bin)) < 0)
			return false;
		if (alen + 1 + hlen + 1 > outsz)
			return false;
		for (size_t k = 0; k < alen; k++)
			out[k] = (char)tolower((unsigned char)s[k]);
		out[alen] = ':';
		p11g_hex_encode(bin, digest_algs[i].len, out + alen + 1);
		return true;
	}
	return false;
}

/* ---- OCI payloads --------------------------------------------------------- */

/* Strict base64 (RFC 4648, padded, no whitespace, zero pad bits): the bytes
 * decoded into out, or -1. */
static ssize_t b64_decode(const char *s, size_t len, unsigned char *out, size_t max)
{
	static const char alphabet[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = 0;

	if (len == 0 || len % 4)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		uint32_t w = 0;
		size_t pad = 0;
		for (size_t j = 0; j < 4; j++) {
			const char *at = s[i + j] ? strchr(alphabet, s[i + j]) : NULL;
			if (s[i + j] == '=' && i + 4 == len && j >= 2)
				pad++;
			else if (pad || !at)
				return -1;
			w = w << 6 | (at && !pad ? (uint32_t)(at - alphabet) : 0);
		}
		if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)) || n + 3 - pad > max)
			return -1;
		for (size_t j = 0; j < 3 - pad; j++)
			out[n++] = (unsigned char)(w >> (16 - 8 * j));
	}
	return (ssize_t)n;
}

/* An object with exactly these members (NULL-terminated). */
static bool members_are(const json_t *o, const char *const *names)
{
	size_t n = 0;
	if (!json_is_object(o))
		return false;
	for (; names[n]; n++)
		if (!json_object_get(o, names[n]))
			return false;
	return json_object_size(o) == n;
}

/* A name as the docker-reference of a cosign payload: host[:port]/repository,
 * in the characters image names use (which leaves nothing for a screen). */
static bool image_ref_valid(const char *s, size_t len)
{
	size_t host = strcspn(s, "/");
	if (len == 0 || len > MAX_REFNAME || strlen(s) != len || host == 0 || host + 1 >= len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-:/", s[i]))
			return false;
	return true;
}

static bool manifest_digest_valid(const char *s)
{
	if (strlen(s) != 71 || strncmp(s, "sha256:", 7))
		return false;
	for (size_t i = 7; i < 71; i++)
		if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
			return false;
	return true;
}

/* A claim's docker-manifest-digest (cosign's and containers/image's alike). */
static int check_manifest_digest(const json_t *dig, size_t i, p11g_err *err)
{
	if (!json_is_string(dig) || !manifest_digest_valid(json_string_value(dig)))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payloads[%zu]: docker-manifest-digest must be sha256:<64 "
		                    "lowercase hex digits>",
		                    i);
	return 0;
}

/* Annotations as cosign writes them: null, or an object of strings, none
 * holding what a screen would act on. */
static bool annotations_valid(const json_t *o)
{
	const char *k;
	json_t *v;
	uint32_t cp;
	if (json_is_null(o))
		return true;
	if (!json_is_object(o))
		return false;
	json_object_foreach((json_t *)o, k, v)
	{
		if (!json_is_string(v) || p11g_text_find(k, strlen(k), &cp) >= 0 ||
		    strlen(json_string_value(v)) != json_string_length(v) ||
		    p11g_text_find(json_string_value(v), json_string_length(v), &cp) >= 0)
			return false;
	}
	return true;
}

/* A claim's name as containers/image reads it, so that the registry a rule checks is the one
 * it pulls from: the first component is a registry (it has a '.' or ':', or is localhost:
 * containers/image puts any other name on Docker Hub), each path component starts and ends
 * with a letter or digit. */
static bool atomic_name_valid(const char *nm)
{
	size_t host = strcspn(nm, "/");
	if ((!memchr(nm, '.', host) && !memchr(nm, ':', host) &&
	     !(host == 9 && !memcmp(nm, "localhost", 9))))
		return false;
	for (const char *c = nm + host; *c == '/';) {
		size_t n = strcspn(c + 1, "/");
		if (n == 0 || !isalnum((unsigned char)c[1]) || !isalnum((unsigned char)c[n]))
			return false;
		for (size_t k = 1; k <= n; k++)
			if (isupper((unsigned char)c[k])) /* repositories are lower case */
				return false;
		c += n + 1;
	}
	return true;
}

/* The optional part of an atomic claim as containers/image and ocisign write it: a creator
 * (plain text) and a timestamp, shown as annotations. */
static json_t *atomic_optional(const json_t *opt)
{
	const json_t *creator = json_object_get(opt, "creator"),
	             *ts = json_object_get(opt, "timestamp");
	uint32_t cp;
	char n[32];
	if (!json_is_object(opt) || json_object_size(opt) != (size_t)(!!creator + !!ts) ||
	    (creator &&
	     (!json_is_string(creator) || json_string_length(creator) > 256 ||
	      strlen(json_string_value(creator)) != json_string_length(creator) ||
	      p11g_text_find(json_string_value(creator), json_string_length(creator), &cp) >= 0)) ||
	    (ts && !json_is_integer(ts)))
		return NULL;
	json_t *ann = json_object();
	if (ann && creator)
		json_object_set(ann, "creator", (json_t *)creator);
	if (ann && ts) {
		snprintf(n, sizeof(n), "%" JSON_INTEGER_FORMAT, json_integer_value(ts));
		json_object_set_new(ann, "timestamp", json_string(n));
	}
	return ann;
}

/*
 * An OpenPGP signature's hashed data (ocisign's simple signing and OpenPGP keys, read by
 * pgp_payload.c): a certification of a user ID, {openpgp_certification: {user_id,
 * fingerprint, key, created}, payload_digest}; or a binary document that is containers/image's
 * atomic container signature claim, {reference: registry/repository, identity: the claim's
 * docker-reference, digest, payload_digest, format: "simple-signing", openpgp_key: the
 * signer's fingerprint, annotations?: creator and timestamp}.  payload_digest is what the
 * gate binds the token's signature to.
 */
static int read_pgp_payload(const unsigned char *buf, size_t n, size_t i, json_t **ret,
                            p11g_err *err)
{
	static const char *const top[] = {"critical", "optional", NULL},
	                         *const crit_m[] = {"identity", "image", "type", NULL},
	                         *const ident_m[] = {"docker-reference", NULL},
	                         *const image_m[] = {"docker-manifest-digest", NULL};
	struct p11g_pgp_payload pp;
	char why[200];
	json_error_t je;

	if (p11g_pgp_payload_read(buf, n, p11g_now(), &pp, why, sizeof(why)) < 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "payloads[%zu]: OpenPGP: %s", i, why);
	if (pp.certification) {
		/* key_fingerprint: the certified key as p11gate.so names a token key; only
		 * it signs the certification (ops_use.c) */
		*ret = json_pack("{s:o, s:s, s:s}", "openpgp_certification", pp.certification,
		                 "payload_digest", pp.use_digest, "key_fingerprint", pp.key_spki);
		pp.certification = NULL; /* taken by json_pack, even when it fails */
		return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	_cleanup_json_ json_t *root =
	    json_loadb((const char *)buf, pp.doc_len, JSON_REJECT_DUPLICATES, &je);
	const json_t *crit = json_object_get(root, "critical");
	const json_t *ref = json_object_get(json_object_get(crit, "identity"), "docker-reference");
	const json_t *dig =
	    json_object_get(json_object_get(crit, "image"), "docker-manifest-digest");
	const char *type = json_string_value(json_object_get(crit, "type"));
	if (!root || !members_are(root, top) || !members_are(crit, crit_m) ||
	    !members_are(json_object_get(crit, "identity"), ident_m) ||
	    !members_are(json_object_get(crit, "image"), image_m) || !type ||
	    strcmp(type, "atomic container signature"))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payloads[%zu]: an OpenPGP signature of something other than "
		                    "an atomic container signature claim (critical: identity, "
		                    "image, type; optional)",
		                    i);
	if (check_manifest_digest(dig, i, err) < 0)
		return -1;
	/* the identity: registry/repository, and the tag or digest (the claim's own: what else
	 * would approvers be shown?) it was named by; a name alone is none containers/image
	 * accepts */
	const char *id = json_string_value(ref), *at = id ? strchr(id, '@') : NULL;
	size_t idlen = json_string_length(ref), slash = id ? strcspn(id, "/") : 0;
	size_t end = at ? (size_t)(at - id) : idlen, name = end;
	for (size_t k = end; id && k > slash; k--)
		if (id[k - 1] == ':') {
			name = k - 1;
			break;
		}
	size_t taglen = name < end ? end - name - 1 : 0;
	const char *tag = id ? id + name + 1 : "";
	char nm[MAX_REFNAME + 1] = "";
	if (id && name <= MAX_REFNAME)
		memcpy(nm, id, name), nm[name] = '\0';
	if (!id || strlen(id) != idlen || !image_ref_valid(nm, name) || !atomic_name_valid(nm) ||
	    (name < end && (taglen == 0 || taglen > 128 || tag[0] == '.' || tag[0] == '-' ||
	                    strspn(tag, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                                "abcdefghijklmnopqrstuvwxyz0123456789_.-") < taglen)) ||
	    (at && strcmp(at + 1, json_string_value(dig))) || (name == end && !at))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payloads[%zu]: docker-reference must be "
		                    "registry/repository:tag or registry/repository@DIGEST, the "
		                    "claim's manifest digest",
		                    i);
	json_t *ann = atomic_optional(json_object_get(root, "optional"));
	if (!ann)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payloads[%zu]: optional must be an object of a creator (plain "
		                    "text) and a timestamp (an integer)",
		                    i);
	*ret = json_pack("{s:s%, s:O, s:O, s:s, s:s, s:s}", "reference", id, name, "identity", ref,
	                 "digest", dig, "payload_digest", pp.use_digest, "format", "simple-signing",
	                 "openpgp_key", pp.issuer);
	if (*ret && json_object_size(ann) && json_object_set(*ret, "annotations", ann) < 0) {
		json_decref(*ret);
		*ret = NULL;
	}
	json_decref(ann);
	return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
}

/*
 * payloads[i] of a request: the base64 of one cosign simple-signing payload,
 * {"critical": {"identity": {"docker-reference"}, "image":
 * {"docker-manifest-digest"}, "type": "cosign container image signature"},
 * "optional": null or annotations}, with nothing else in it.  The image
 * approvers see: {reference, digest, payload_digest: sha256 of the bytes,
 * annotations?}.  Or the DER CertificationRequestInfo of a PKCS#10 request
 * (ocisign csr): {csr: {subject, key, names?, extended_key_usage?},
 * payload_digest} (csr_payload.c).
 */
static int read_payload(const json_t *jp, size_t i, json_t **ret, p11g_err *err)
{
	static const char *const top[] = {"critical", "optional", NULL},
	                         *const crit_m[] = {"identity", "image", "type", NULL},
	                         *const ident_m[] = {"docker-reference", NULL},
	                         *const image_m[] = {"docker-manifest-digest", NULL};
	unsigned char buf[MAX_PAYLOAD], md[32];
	char hex[2 * sizeof(md) + 1], pdigest[8 + sizeof(hex)];
	json_error_t je;
	ssize_t n;

	if (!json_is_string(jp) ||
	    (n = b64_decode(json_string_value(jp), json_string_length(jp), buf, sizeof(buf))) < 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payloads[%zu]: expected the base64 of a payload of at most %d "
		                    "bytes",
		                    i, MAX_PAYLOAD);
	if (!EVP_Digest(buf, (size_t)n, md, NULL, EVP_sha256(), NULL))
		return p11g_err_set(err, P11G_E_INTERNAL, "sha256 failed");
	p11g_hex_encode(md, sizeof(md), hex);
	snprintf(pdigest, sizeof(pdigest), "sha256:%s", hex);
	if (p11g_csr_payload_looks(buf, (size_t)n)) {
		/* a certificate request (ocisign csr): what approvers see of it is read here */
		char why[160];
		json_t *csr = p11g_csr_payload_describe(buf, (size_t)n, why, sizeof(why));
		if (!csr)
			return p11g_err_set(err, P11G_E_BAD_REQUEST, "payloads[%zu]: %s", i, why);
		*ret = json_pack("{s:o, s:s}", "csr", csr, "payload_digest", pdigest);
		return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	if (p11g_pgp_payload_looks(buf, (size_t)n))
		return read_pgp_payload(buf, (size_t)n, i, ret, err);
	_cleanup_json_ json_t *root =
	    json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "payloads[%zu]: not JSON: %s", i,
		                    je.text);
	const json_t *crit = json_object_get(root, "critical");
	const json_t *ref = json_object_get(json_object_get(crit, "identity"), "docker-reference");
	const json_t *dig =
	    json_object_get(json_object_get(crit, "image"), "docker-manifest-digest");
	const json_t *opt = json_object_get(root, "optional");
	if (!members_are(root, top) || !members_are(crit, crit_m) ||
	    !members_are(json_object_get(crit, "identity"), ident_m) ||
	    !members_are(json_object_get(crit, "image"), image_m) ||
	    !json_is_string(json_object_get(crit, "type")) ||
	    strcmp(json_string_value(json_object_get(crit, "type")),
	           "cosign container image signature"))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payloads[%zu]: not a cosign container image signature payload "
		                    "(critical: identity, image, type; optional)",
		                    i);
	if (!json_is_string(ref) ||
	    !image_ref_valid(json_string_value(ref), json_string_length(ref)))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payloads[%zu]: docker-reference must be registry/repository",
		                    i);
	if (check_manifest_digest(dig, i, err) < 0)
		return -1;
	if (!annotations_valid(opt))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payloads[%zu]: optional must be null or an object of plain "
		                    "strings",
		                    i);
	*ret = json_pack("{s:O, s:O, s:s}", "reference", ref, "digest", dig, "payload_digest",
	                 pdigest);
	if (*ret && json_object_size(opt) &&
	    json_object_set(*ret, "annotations", (json_t *)opt) < 0) {
		json_decref(*ret);
		*ret = NULL;
	}
	return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
}

bool ops_image_binds_identity(const json_t *img)
{
	return json_is_object(json_object_get(img, "csr")) ||
	       json_is_object(json_object_get(img, "openpgp_certification"));
}

bool ops_registry_allowed(const struct p11g_rule *r, const char *ref)
{
	size_t host = strcspn(ref, "/");
	if (r->n_registries == 0)
		return true;
	for (size_t i = 0; i < r->n_registries; i++)
		if (strlen(r->registries[i]) == host && !memcmp(r->registries[i], ref, host))
			return true;
	return false;
}

static bool in_strings(const json_t *arr, const char *s)
{
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) if (!strcmp(json_string_value(v), s)) return true;
	return false;
}

/* Whether the requester's "oci" names one of the images: it is shown to
 * approvers, so it says nothing the payloads do not (but the tag). */
static bool oci_matches(const json_t *oci, const json_t *images)
{
	static const char *const with_tag[] = {"registry", "repository", "digest", "reference",
	                                       NULL},
	                         *const no_tag[] = {"registry", "repository", "digest", NULL};
	const char *reg = json_string_value(json_object_get(oci, "registry")),
	           *repo = json_string_value(json_object_get(oci, "repository")),
	           *dig = json_string_value(json_object_get(oci, "digest")),
	           *tag = json_string_value(json_object_get(oci, "reference"));
	const json_t *img;
	size_t i;

	if (!members_are(oci, tag ? with_tag : no_tag) || !reg || !repo || !dig)
		return false;
	/* The tag or digest the requester named the image by: shown, not checked,
	 * so a plain one. */
	if (tag && (!tag[0] || strlen(tag) > 128 ||
	            tag[strspn(tag, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                            "abcdefghijklmnopqrstuvwxyz"
	                            "0123456789_.-:")]))
		return false;
	json_array_foreach(images, i, img)
	{
		const char *ref = json_string_value(json_object_get(img, "reference"));
		if (!ref) /* a certificate request */
			continue;
		size_t host = strcspn(ref, "/");
		if (strlen(reg) == host && !strncmp(ref, reg, host) &&
		    !strcmp(ref + host + 1, repo) &&
		    !strcmp(json_string_value(json_object_get(img, "digest")), dig))
			return true;
	}
	return false;
}

/*
 * The images of a request (NULL without "payloads"), read from the payloads
 * themselves: a rule with registries signs nothing else, so one of those
 * needs them, and each payload's registry must be one every such rule of the
 * request names.  Their sha256 are the operation's digests; a digest the
 * request names must be one of them.  "oci", what the requester says the
 * image is, must be one of them too.
 */
static int request_images(const json_t *args, const struct p11g_rule *const *rules, size_t n_rules,
                          json_t *digests, json_t **ret, p11g_err *err)
{
	const json_t *jp = json_object_get(args, "payloads"), *oci = json_object_get(args, "oci");
	_cleanup_json_ json_t *images = json_array(), *pinned = json_array();
	size_t i;
	json_t *v;

	*ret = NULL;
	if (!jp) {
		for (i = 0; i < n_rules; i++)
			if (rules[i]->n_registries)
				return p11g_err_set(
				    err, P11G_E_BAD_REQUEST,
				    "rule %s signs only image payloads and certificate requests "
				    "approvald reads: give them in \"payloads\" (ocisign sign "
				    "--request and ocisign csr --request do)",
				    rules[i]->name);
		if (oci)
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "oci: give the payloads of the image in \"payloads\"");
		return 0;
	}
	if (!json_is_array(jp) || json_array_size(jp) == 0 || json_array_size(jp) > MAX_DIGESTS)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payloads: an array of 1 to %d base64 strings", MAX_DIGESTS);
	if (!images || !pinned)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	json_array_foreach(jp, i, v)
	{
		json_t *img;
		if (read_payload(v, i, &img, err) < 0)
			return -1;
		/* it takes img even when it fails: img is not read after a failure */
		if (json_array_append_new(images, img) < 0)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		const char *ref = json_string_value(json_object_get(img, "reference"));
		/* a certificate request names no registry: a rule's registries limit images */
		for (size_t j = 0; ref && j < n_rules; j++)
			if (!ops_registry_allowed(rules[j], ref))
				return p11g_err_set(
				    err, P11G_E_REGISTRY,
				    "rule %s does not allow signing images for registry %.*s",
				    rules[j]->name, (int)strcspn(ref, "/"), ref);
		const char *pd = json_string_value(json_object_get(img, "payload_digest"));
		if (!in_strings(pinned, pd) && json_array_append_new(pinned, json_string(pd)) < 0)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	json_array_foreach(digests, i, v)
	{
		if (!in_strings(pinned, json_string_value(v)))
			return p11g_err_set(
			    err, P11G_E_BAD_REQUEST,
			    "digests[%zu]: %s is not the digest of a payload given "
			    "(the sha256 of a cosign payload or certificate request, the "
			    "signed hash of an OpenPGP one)",
			    i, json_string_value(v));
	}
	if (oci && !oci_matches(oci, images))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "oci: {registry, repository, digest, reference?} must name an "
		                    "image of the payloads");
	if (json_array_clear(digests) < 0 || json_array_extend(digests, pinned) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	*ret = json_incref(images);
	return 0;
}

/* ---- request ------------------------------------------------------------ */

/* A request's arguments, parsed and judged against the policy before the transaction: none of
 * it depends on the store, and the body may run more than once. */
struct request {
	P11KitUri *pats[MAX_KEYS];
	const struct p11g_rule *judged[MAX_KEYS]; /* the policy's, for each key */
	size_t n_keys;
	json_t *digests; /* normalised; the payloads' sha256 when payloads are given */
	/* The operation as filed, but for its id, state and times: keys (unused), rule
	 * snapshots, digests, images, the requester's oci, texts, orderer and signer. */
	struct p11g_op op;
	int64_t valid;
	bool auto_all; /* every rule approves the caller's requests on creation */
	/* the ID token's "jti", when a rule asked for a token: kept once the request is filed */
	char jti[2 * 32 + 1];
	int64_t jti_exp;
};

static void request_clear(struct request *q)
{
	for (size_t i = 0; i < q->n_keys; i++)
		p11_kit_uri_free(q->pats[i]);
	json_decref(q->digests);
	p11g_op_clear(&q->op);
}

/* The rule a request's key URI falls under: the one rule that could govern a
 * key it names (p11g_policy_overlapping).  Under two, approvals for one would
 * let keys of the other sign. */
static int judge_key(const struct p11g_policy *pol, P11KitUri *pat, const char *uri,
                     const struct p11g_rule **ret, p11g_err *err)
{
	const struct p11g_rule *r[3];
	size_t n = p11g_policy_overlapping(pol, pat, r, P11G_ARRAY_SIZE(r));
	char names[P11G_ARRAY_SIZE(r) * 72 + 16];
	size_t len = 0;

	if (n == 0)
		return p11g_err_set(err, P11G_E_NO_RULE,
		                    "no policy rule covers %s; ask an admin to add one", uri);
	if (n == 1) {
		*ret = r[0];
		return 0;
	}
	names[0] = '\0';
	for (size_t i = 0; i < n && i < P11G_ARRAY_SIZE(r); i++)
		len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s",
		                        i == 0       ? ""
		                        : i + 1 == n ? " and "
		                                     : ", ",
		                        r[i]->name);
	return p11g_err_set(err, P11G_E_BAD_REQUEST,
	                    "key %s could name keys of rules %s%s: name keys of one rule only "
	                    "(object= and id= name one key)",
	                    uri, names, n > P11G_ARRAY_SIZE(r) ? " and more" : "");
}

/* keys[i]: {uri, uses?}, judged under its rule, which the caller must be allowed to order
 * under and whose ceilings it must keep (a default validity shrinks to fit). */
static int parse_key(const struct p11g_ops *o, const struct p11g_ident *caller, const json_t *k,
                     size_t i, bool valid_given, struct request *q, p11g_err *err)
{
	const json_t *juri = json_object_get(k, "uri"), *juses = json_object_get(k, "uses");
	if (!json_is_object(k) || !json_is_string(juri) ||
	    strlen(json_string_value(juri)) > MAX_TEXT)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "keys[%zu]: needs a \"uri\" string",
		                    i);
	if (json_object_size(k) > (juses ? 2u : 1u))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "keys[%zu]: only \"uri\" and \"uses\" are allowed", i);
	if (juses && (!json_is_integer(juses) || json_integer_value(juses) < 1 ||
	              json_integer_value(juses) > MAX_USES))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "keys[%zu]: \"uses\" must be a number from 1 to %d", i,
		                    MAX_USES);
	int64_t uses = juses ? json_integer_value(juses) : 1;
	P11KitUri *pat;
	if (p11g_keyuri_parse(json_string_value(juri), &pat, err) < 0)
		return -1;
	q->pats[q->n_keys++] = pat;
	if (o->audit_key && p11g_keyuri_overlap(o->audit_key, pat))
		return p11g_err_set(
		    err, P11G_E_FORBIDDEN,
		    "keys[%zu] could name approvald's audit key, which signs its audit "
		    "checkpoints and nothing else",
		    i);
	/* What is stored and shown: the pattern judged, without a query (pin-value). */
	_cleanup_free_ char *uri = p11g_keyuri_format(pat);
	if (!uri)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	const struct p11g_rule *rule = NULL;
	if (judge_key(o->policy, pat, uri, &rule, err) < 0)
		return -1;
	/* One count per key: two entries that could name one key would add up
	 * to a number nobody was shown, past the rule's max_uses. */
	for (size_t j = 0; j + 1 < q->n_keys; j++) {
		if (!p11g_keyuri_overlap(q->pats[j], pat))
			continue;
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "key %s could name the same key as %s: "
		                    "name each key once, with all its uses",
		                    uri, q->op.keys[j].uri);
	}
	if (p11g_authz_check_orderer(rule, caller, uri, err) < 0)
		return -1;
	if (rule->max_uses && (uint64_t)uses > rule->max_uses)
		return p11g_err_set(
		    err, P11G_E_LIMIT, "%s: %lld uses asked, rule %s allows at most %llu", uri,
		    (long long)uses, rule->name, (unsigned long long)rule->max_uses);
	if (rule->max_validity && (uint64_t)q->valid > rule->max_validity) {
		if (valid_given)
			return p11g_err_set(err, P11G_E_LIMIT,
			                    "validity of %llds asked, rule %s allows at most %llus",
			                    (long long)q->valid, rule->name,
			                    (unsigned long long)rule->max_validity);
		q->valid = (int64_t)rule->max_validity; /* the default shrinks to fit */
	}
	q->judged[i] = rule;
	q->auto_all &= p11g_rule_auto_approves(rule, caller);
	if (!json_object_get(q->op.rules, rule->name) &&
	    json_object_set_new(q->op.rules, rule->name, p11g_rule_to_json(rule)) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	struct p11g_op_key *e = &q->op.keys[q->op.n_keys++];
	e->uses = uses;
	e->uri = uri;
	uri = NULL; /* e's */
	if (!(e->rule = strdup(rule->name)))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return 0;
}

/* ---- pipeline ID tokens (issue 19) ----------------------------------------------- */

static void jti_key(const char *issuer, const char *jti, char out[65])
{
	unsigned char md[32];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int l = 0;
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, issuer, strlen(issuer) + 1) != 1 ||
	    EVP_DigestUpdate(ctx, jti, strlen(jti)) != 1 || EVP_DigestFinal_ex(ctx, md, &l) != 1)
		memset(md, 0, sizeof(md));
	EVP_MD_CTX_free(ctx);
	p11g_hex_encode(md, sizeof(md), out);
}

/* A token is good for one request: its jti is kept in the store, in the transaction that files
 * the request, until the token expires (P11G_JTI_PREFIX, pruned by the expiry sweep). */
static int jti_claim(p11g_txn *t, const struct request *q, p11g_err *err)
{
	char name[sizeof(P11G_JTI_PREFIX) + sizeof(q->jti)];
	int64_t exp = 0;
	snprintf(name, sizeof(name), "%s%s", P11G_JTI_PREFIX, q->jti);
	int r = p11g_txn_meta_get_int(t, name, &exp, err);
	if (r < 0 && r != -ENOENT)
		return -1;
	/* kept until it could no longer verify (the sweep prunes it after): present is used */
	if (r == 0)
		return p11g_err_set(err, P11G_E_TOKEN_INVALID,
		                    "ID token: already used for another request (its jti)");
	return p11g_txn_meta_put_int(t, name, q->jti_exp, err);
}

/* Copies claim name of claims into into (an object), when the token has it. */
static int keep_claim(json_t *into, const json_t *claims, const char *name)
{
	json_t *v = json_object_get(claims, name);
	return !v || json_object_set(into, name, v) == 0 ? 0 : -1;
}

/* What the operation keeps of the pipeline that asked (never the token): the issuer, subject and
 * jti, and the claims
 * the issuer shows approvers, the rule matched, and the one naming the actor. */
static int keep_identity(struct request *q, const struct p11g_issuer *is,
                         const struct p11g_rule_claims *rc, const struct p11g_idtoken *tok,
                         p11g_err *err)
{
	json_t *id = q->op.identity, *kept;
	if (!id && !(id = q->op.identity =
	                 json_pack("{s:s, s:s, s:s, s:s, s:{}}", "issuer", is->name, "iss",
	                           tok->iss, "subject", tok->sub, "jti", tok->jti, "claims")))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	kept = json_object_get(id, "claims");
	int r = 0;
	for (size_t i = 0; i < is->n_show; i++)
		r |= keep_claim(kept, tok->claims, is->show[i]);
	for (size_t i = 0; i < rc->n; i++)
		r |= keep_claim(kept, tok->claims, rc->names[i]);
	if (rc->actor_claim)
		r |= keep_claim(kept, tok->claims, rc->actor_claim);
	return r ? p11g_err_set(err, P11G_E_INTERNAL, "out of memory") : 0;
}

/* A rule with "claims": the request carries an ID token from the rule's issuer, valid, new,
 * whose claims match.  0, or -1 with err token_required, token_invalid or claims_mismatch. */
static int check_token(const struct p11g_ops *o, const struct p11g_rule *rule, const json_t *jtok,
                       struct request *q, p11g_err *err)
{
	const struct p11g_rule_claims *rc = rule->claims;
	const struct p11g_issuer *is = p11g_policy_issuer(o->policy, rc->issuer);
	size_t idx = is ? (size_t)(is - o->policy->issuers) : 0;
	const struct p11g_jwks *keys = !is               ? NULL
	                               : is->jwks_url    ? p11g_jwks_sources_keys(o->jwks, is)
	                               : o->policy->jwks ? o->policy->jwks[idx]
	                                                 : NULL;
	struct p11g_idtoken tok __attribute__((cleanup(p11g_idtoken_clear))) = {0};
	int64_t now = p11g_now();
	char why[300];

	if (!jtok)
		return p11g_err_set(
		    err, P11G_E_TOKEN_REQUIRED,
		    "rule %s asks for an ID token from issuer %s (approvald request "
		    "--id-token FILE)",
		    rule->name, rc->issuer);
	if (!json_is_string(jtok))
		return p11g_err_set(err, P11G_E_TOKEN_INVALID, "ID token: not a string");
	if (!is || !keys) {
		const char *last = is && is->jwks_url ? p11g_jwks_sources_want(o->jwks, is) : "";
		return p11g_err_set(err, P11G_E_TOKEN_INVALID,
		                    "ID token: approvald has no keys of issuer %s yet%s%s%s",
		                    rc->issuer, *last ? " (" : "", last, *last ? ")" : "");
	}
	unsigned algs = 0;
	for (size_t i = 0; i < is->n_algorithms; i++)
		algs |= p11g_idtoken_alg(is->algorithms[i]);
	struct p11g_idtoken_trust t = {
	    .issuer = is->issuer, .audience = is->audience, .algs = algs, .keys = keys};
	bool unknown_kid = false;
	if (p11g_idtoken_verify(json_string_value(jtok), json_string_length(jtok), &t, now, &tok,
	                        &unknown_kid, err) < 0) {
		/* keys rotated: the set is fetched again (rate-limited), the orderer asks again */
		if (unknown_kid && is->jwks_url) {
			p11g_jwks_sources_want(o->jwks, is);
			size_t len = strlen(err->msg);
			snprintf(err->msg + len, sizeof(err->msg) - len,
			         "; approvald fetches issuer %s's keys again: ask again in a few "
			         "seconds",
			         is->name);
		}
		return -1;
	}
	_cleanup_json_ json_t *match = json_object();
	for (size_t i = 0; match && i < rc->n; i++)
		if (json_object_set_new(match, rc->names[i], json_string(rc->patterns[i])) < 0)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (!match)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (p11g_claims_match(tok.claims, match, why, sizeof(why)))
		return p11g_err_set(err, P11G_E_CLAIMS_MISMATCH, "rule %s: %s", rule->name, why);
	/* an approver must differ from the actor: a token naming none cannot show that */
	const json_t *actor = rc->actor_claim ? json_object_get(tok.claims, rc->actor_claim) : NULL;
	if (rc->actor_claim && (!json_is_string(actor) || !json_string_length(actor)))
		return p11g_err_set(
		    err, P11G_E_CLAIMS_MISMATCH,
		    "rule %s: the token has no string claim \"%s\" naming the actor "
		    "(whom approvers must differ from)",
		    rule->name, rc->actor_claim);
	if (keep_identity(q, is, rc, &tok, err) < 0)
		return -1;
	char key[65];
	jti_key(tok.iss, tok.jti, key); /* the token's issuer, whatever the policy calls it */
	if (q->jti[0] && strcmp(q->jti, key) != 0)
		return p11g_err_set(err, P11G_E_TOKEN_INVALID,
		                    "ID token: the keys' rules name different issuers");
	snprintf(q->jti, sizeof(q->jti), "%s", key);
	q->jti_exp = tok.exp;
	return 0;
}

static bool meta_key_ok(const char *k)
{
	size_t n = strlen(k);
	if (n == 0 || n > MAX_META_KEY)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)k[i]) && !strchr("._-", k[i]))
			return false;
	return true;
}

/* What the requester calls the operation: "name", "meta" {KEY: VALUE} and "payload_names" (one
 * per entry of "digests", "" for none).  Checked here, shown escaped wherever it is shown. */
static int request_labels(const json_t *args, struct request *q, p11g_err *err)
{
	const json_t *jname = json_object_get(args, "name"), *jmeta = json_object_get(args, "meta"),
	             *jpn = json_object_get(args, "payload_names"), *v;
	const char *k;
	size_t i;

	if (jname && (!json_is_string(jname) || json_string_length(jname) == 0 ||
	              json_string_length(jname) > MAX_NAME ||
	              strlen(json_string_value(jname)) != json_string_length(jname)))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "name: 1 to %d bytes of text",
		                    MAX_NAME);
	if (jname && !(q->op.name = strdup(json_string_value(jname))))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (jmeta && (!json_is_object(jmeta) || json_object_size(jmeta) > MAX_META))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "meta: an object of at most %d KEY: VALUE texts", MAX_META);
	json_object_foreach((json_t *)jmeta, k, v)
	{
		if (!meta_key_ok(k))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "meta: a key is 1 to %d of A-Z a-z 0-9 . _ -",
			                    MAX_META_KEY);
		if (!json_is_string(v) || json_string_length(v) > MAX_META_VAL ||
		    strlen(json_string_value(v)) != json_string_length(v))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "meta: %s: a value is text of at most %d bytes", k,
			                    MAX_META_VAL);
	}
	if (jmeta && json_object_size(jmeta))
		q->op.meta = json_deep_copy(jmeta);
	const json_t *jdig = json_object_get(args, "digests");
	if (jpn && (!json_is_array(jpn) || json_array_size(jpn) > json_array_size(jdig)))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payload_names: an array naming the entries of digests");
	json_array_foreach(jpn, i, v)
	{
		if (!json_is_string(v) || json_string_length(v) > MAX_TEXT ||
		    strlen(json_string_value(v)) != json_string_length(v))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "payload_names[%zu]: text of at most %d bytes", i,
			                    MAX_TEXT);
	}
	if (jmeta && json_object_size(jmeta) && !q->op.meta)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return 0;
}

/* The payload names, by the pinned digest each names, in the order of the operation's pinned
 * digests (which the payloads may have reordered): a name goes with its digest, whatever
 * order the request gave them in.  After the digests are final. */
static int align_payload_names(const json_t *args, struct request *q, p11g_err *err)
{
	const json_t *jpn = json_object_get(args, "payload_names"),
	             *jdig = json_object_get(args, "digests"), *v;
	size_t i;
	char norm[160];
	bool any = false;

	if (!json_array_size(jpn))
		return 0;
	_cleanup_json_ json_t *by = json_object(), *names = json_array();
	if (!by || !names)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	json_array_foreach(jpn, i, v)
	{
		const json_t *old;
		if (!p11g_digest_normalise(json_string_value(json_array_get(jdig, i)), norm,
		                           sizeof(norm)))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "payload_names[%zu]: no digest", i);
		if (!json_string_length(v))
			continue;
		if ((old = json_object_get(by, norm)) && !json_equal(old, (json_t *)v))
			return p11g_err_set(
			    err, P11G_E_BAD_REQUEST,
			    "payload_names[%zu]: digest %s has another name already", i, norm);
		if (json_object_set(by, norm, (json_t *)v) < 0)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	for (i = 0; i < q->op.n_digests; i++) {
		const json_t *n = json_object_get(by, q->op.digests[i]);
		any |= n != NULL;
		if (json_array_append_new(names, n ? json_incref((json_t *)n) : json_string("")) <
		    0)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	if (any)
		q->op.payload_names = json_incref(names);
	return 0;
}

/* Everything a request says, checked, in the order its errors are reported: keys and validity,
 * texts, digests, payloads, signer. */
static int request_parse(const struct p11g_ops *o, const struct p11g_ident *caller,
                         const json_t *args, struct request *q, p11g_err *err)
{
	const json_t *keys = json_object_get(args, "keys"), *k, *d;
	bool needs_digest = false;
	size_t i;

	q->auto_all = true;
	q->valid = o->limits.default_validity;
	if (!(q->op.keys = calloc(MAX_KEYS, sizeof(*q->op.keys))) ||
	    !(q->op.rules = json_object()) || !(q->digests = json_array()) ||
	    p11g_op_set_orderer(&q->op, caller) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (!json_is_array(keys) || json_array_size(keys) == 0 || json_array_size(keys) > MAX_KEYS)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "keys: give 1 to %d keys", MAX_KEYS);

	const json_t *jvalid = json_object_get(args, "valid");
	if (jvalid) {
		if (!json_is_integer(jvalid) || json_integer_value(jvalid) < 1 ||
		    json_integer_value(jvalid) > MAX_VALIDITY)
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "valid: a number of seconds from 1 to %lld",
			                    (long long)MAX_VALIDITY);
		q->valid = json_integer_value(jvalid);
	}
	json_array_foreach(keys, i, k)
	{
		if (parse_key(o, caller, k, i, jvalid != NULL, q, err) < 0)
			return -1;
		needs_digest |= q->judged[i]->bind_digest;
	}
	/* the pipeline that asks, when a rule wants to know */
	const json_t *jtok = json_object_get(args, "id_token");
	for (i = 0; i < q->n_keys; i++)
		if (q->judged[i]->claims && check_token(o, q->judged[i], jtok, q, err) < 0)
			return -1;

	const json_t *jdesc = json_object_get(args, "description"),
	             *jctx = json_object_get(args, "context");
	if ((jdesc && (!json_is_string(jdesc) || strlen(json_string_value(jdesc)) > MAX_TEXT)) ||
	    (jctx && (!json_is_string(jctx) || strlen(json_string_value(jctx)) > MAX_CONTEXT)))
		return p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "description (at most %d bytes) and context (at most %d) are strings", MAX_TEXT,
		    MAX_CONTEXT);
	if (!(q->op.description = strdup(jdesc ? json_string_value(jdesc) : "")) ||
	    !(q->op.context = strdup(jctx ? json_string_value(jctx) : "")))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (request_labels(args, q, err) < 0)
		return -1;

	const json_t *jdig = json_object_get(args, "digests");
	if (jdig && (!json_is_array(jdig) || json_array_size(jdig) > MAX_DIGESTS))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "digests: an array of at most %d",
		                    MAX_DIGESTS);
	json_array_foreach(jdig, i, d)
	{
		char norm[160];
		if (!json_is_string(d) ||
		    !p11g_digest_normalise(json_string_value(d), norm, sizeof(norm)))
			return p11g_err_set(
			    err, P11G_E_BAD_REQUEST,
			    "digests[%zu]: expected ALG:HEX such as sha256:<64 hex digits>", i);
		if (json_array_append_new(q->digests, json_string(norm)) < 0)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	/* OCI: the images, from their payloads */
	if (request_images(args, q->judged, q->n_keys, q->digests, &q->op.images, err) < 0)
		return -1;
	/* auto_approve lets a rule's orderers past its approvers for the images it names: a
	 * certificate request is the approvers' call (a rule without approvers needs none) */
	bool csr = false;
	json_array_foreach(q->op.images, i, d) csr |= ops_image_binds_identity(d);
	for (size_t r = 0; csr && r < q->n_keys; r++)
		q->auto_all &= !p11g_rule_needs_approval(q->judged[r]);
	q->op.oci = json_incref(json_object_get(args, "oci"));
	if (!(q->op.digests = calloc(json_array_size(q->digests) + 1, sizeof(char *))))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	json_array_foreach(q->digests, i, d)
	{
		if (!(q->op.digests[q->op.n_digests++] = strdup(json_string_value(d))))
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	if (align_payload_names(args, q, err) < 0)
		return -1;
	if (needs_digest && json_array_size(q->digests) == 0)
		return p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "a rule of these keys binds digests: give the digests to be signed (--digest)");

	const json_t *jfor = json_object_get(args, "for");
	if (jfor) {
		struct p11g_principal p;
		if (!json_is_string(jfor) ||
		    p11g_principal_parse(json_string_value(jfor), &p, err) < 0)
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "for: expected user:NAME, group:NAME or uid:N");
		q->op.signer = p11g_principal_to_string(&p);
		p11g_principal_clear(&p);
	} else if (asprintf(&q->op.signer, "uid:%u", (unsigned)caller->uid) < 0) {
		q->op.signer = NULL;
	}
	if (!q->op.signer)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return 0;
}

/* The URIs of the operation's keys, for its "created" record. */
static json_t *keys_uris(struct p11g_jb *b, const struct p11g_op *op)
{
	json_t *uris = p11g_jb_new(b, json_array());
	for (size_t i = 0; i < op->n_keys; i++)
		p11g_jb_append(b, uris, json_string(op->keys[i].uri));
	return uris;
}

static int request_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	const struct request *q = c->args;
	int64_t now = p11g_now();

	/* a quota per orderer: pending requests are a resource the client controls */
	size_t pending = 0;
	if (p11g_txn_pending_count(t, c->caller->uid, &pending, err) < 0)
		return -1;
	if (!q->auto_all && pending >= c->o->limits.max_pending_per_user)
		return p11g_err_set(
		    err, P11G_E_LIMIT,
		    "you have %zu pending requests, the most allowed; withdraw or wait", pending);

	uint64_t id;
	_cleanup_op_ struct p11g_op op = {0};
	if (q->jti[0] && jti_claim(t, q, err) < 0)
		return -1;
	if (p11g_txn_next_id(t, &id, err) < 0)
		return -1;
	if (p11g_op_copy(&q->op, &op) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	op.id = id;
	op.state = q->auto_all ? P11G_OP_APPROVED : P11G_OP_PENDING;
	op.created = now;
	op.expires = now + q->valid;
	struct p11g_jb b = {0};
	json_t *uris = keys_uris(&b, &op);
	if (p11g_jb_check(&b, err) < 0) {
		json_decref(uris);
		return -1;
	}
	if (ops_audit_op(t, "created", c->caller, &op,
	                 json_pack("{s:o, s:s, s:I, s:O, s:s, s:O*, s:O*, s:s*, s:O*, s:O*}",
	                           "keys", uris, "signer", op.signer, "expires",
	                           (json_int_t)op.expires, "digests", q->digests, "description",
	                           op.description, "images", op.images, "identity", op.identity,
	                           "name", op.name, "meta", op.meta, "payload_names",
	                           op.payload_names),
	                 err) < 0)
		return -1;
	if (q->auto_all &&
	    ops_audit_op(t, "approved", c->caller, &op,
	                 json_pack("{s:s, s:s}", "state", "approved", "by", "policy"), err) < 0)
		return -1;
	ops_ctx_result(c, ops_public(&op));
	c->changed = id; /* a result that could not be built is reported by ops_finish */
	return 0;
}

/* Requests filed by one uid in its current minute. */
#define BUDGET_UIDS 4096
struct budget_entry {
	uid_t uid;
	int64_t start; /* 0: unused */
	unsigned n;
	size_t bytes;
};
struct p11g_request_budget {
	struct budget_entry e[BUDGET_UIDS];
};

/* The uid's entry, its minute started anew when over; NULL when the table is full of
 * current minutes (then the request is not limited: 4096 uids filing at once is no flood of
 * one). */
static struct budget_entry *budget_of(struct p11g_ops *o, uid_t uid, int64_t now)
{
	struct p11g_request_budget *b = o->budget;
	ssize_t free_at = -1;

	if (!b && !(b = o->budget = calloc(1, sizeof(*b))))
		return NULL;
	for (size_t i = 0; i < BUDGET_UIDS; i++) {
		bool stale = now - b->e[i].start >= 60;
		if (b->e[i].start && b->e[i].uid == uid) {
			if (stale)
				b->e[i] = (struct budget_entry){.uid = uid, .start = now};
			return &b->e[i];
		}
		if (free_at < 0 && (!b->e[i].start || stale))
			free_at = (ssize_t)i;
	}
	if (free_at < 0)
		return NULL;
	b->e[free_at] = (struct budget_entry){.uid = uid, .start = now};
	return &b->e[free_at];
}

int p11g_ops_request(struct p11g_ops *o, const struct p11g_ident *caller, const json_t *args,
                     json_t **ret_op, p11g_err *err)
{
	struct request q __attribute__((cleanup(request_clear))) = {.n_keys = 0};
	struct txn_ctx c = {.o = o, .caller = caller, .args = &q};
	bool limited =
	    caller->uid != 0 && caller->uid != o->daemon_uid &&
	    (o->limits.max_requests_per_minute || o->limits.max_request_bytes_per_minute);
	int64_t now = p11g_now();
	struct budget_entry *b = limited ? budget_of(o, caller->uid, now) : NULL;
	size_t bytes = b ? json_dumpb(args, NULL, 0, JSON_COMPACT) : 0;

	if (b &&
	    ((o->limits.max_requests_per_minute && b->n >= o->limits.max_requests_per_minute) ||
	     (o->limits.max_request_bytes_per_minute &&
	      b->bytes + bytes > o->limits.max_request_bytes_per_minute)))
		return p11g_err_set(
		    err, P11G_E_LIMIT,
		    "uid %u filed %u requests (%zu bytes) in the last minute, at most "
		    "%u (%zu bytes) a minute: try again in %lld s",
		    (unsigned)caller->uid, b->n, b->bytes, o->limits.max_requests_per_minute,
		    o->limits.max_request_bytes_per_minute, (long long)(60 - (now - b->start)));
	if (request_parse(o, caller, args, &q, err) < 0)
		return -1;
	int r = ops_finish(&c, p11g_store_write(o->store, request_body, &c, err), ret_op, err);
	if (r == 0 && b) {
		b->n++;
		b->bytes += bytes;
	}
	return r;
}
