/* ocisign's verbs: generate, sign, attach, verify and pubkey, on top of the registry, key and
 * approval parts. */
#include <jansson.h>
#include <openssl/err.h>

#include "p11gate/wire.h"

#include "approval.h"
#include "attach.h"
#include "cert.h"
#include "openpgp.h"
#include "p11.h"
#include "pgpverify.h"
#include "ref.h"
#include "registry.h"
#include "sigcrypto.h"
#include "simplesign.h"
#include "tool_cfg.h"

#include "approvald/textsafe.h"
#include "p11gate/idtoken_src.h"

#define MAX_CHILDREN 1024 /* manifests of one index that --recursive signs */

/* The one error line: its text may quote a registry's or approvald's words, shown escaped
 * (textsafe.h) so that none of them drives the terminal. */
static int fail(const p11g_err *err)
{
	char shown[3 * sizeof(err->msg)];
	p11g_text_escape(shown, sizeof(shown), err->msg, strlen(err->msg));
	fprintf(stderr, "ocisign: %s\n", shown);
	return OCI_EXIT_FAIL;
}

static struct oci_reg_opts reg_opts(const struct oci_config *cfg, bool push)
{
	return (struct oci_reg_opts){
	    .creds = cfg->creds, .ca_file = cfg->ca_file, .insecure = cfg->insecure, .push = push};
}

static bool is_index(const char *mt)
{
	return !strcmp(mt, OCI_MT_OCI_INDEX) || !strcmp(mt, OCI_MT_DOCKER_LIST);
}

/* The manifest digest IMAGE names (asks the registry unless IMAGE has a
 * digest and want_body is false). */
static int resolve(struct oci_reg *r, const struct oci_ref *ref, bool want_body,
                   struct oci_manifest *ret, p11g_err *err)
{
	if (ref->digest[0] && !want_body) {
		memset(ret, 0, sizeof(*ret));
		memcpy(ret->digest, ref->digest, sizeof(ret->digest));
		return 0;
	}
	return oci_reg_get_manifest(r, ref->digest[0] ? ref->digest : oci_ref_reference(ref), false,
	                            ret, err);
}

static int write_all(FILE *f, const void *p, size_t n)
{
	return fwrite(p, 1, n, f) == n && fflush(f) == 0 ? 0 : -1;
}

static int write_out(const char *path, const char *text, p11g_err *err)
{
	FILE *f = path ? fopen(path, "we") : stdout;
	if (!f)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "cannot write %s: %s", path,
		                    strerror(errno));
	int r = write_all(f, text, strlen(text));
	if (path && fclose(f) != 0)
		r = -1;
	if (r < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot write %s: %s",
		                    path ? path : "to stdout", strerror(errno));
	return 0;
}

static int do_generate(struct oci_config *cfg)
{
	struct oci_ref ref;
	struct oci_reg *r = NULL;
	struct oci_manifest m = {0};
	char name[600], *payload = NULL;
	size_t plen;
	p11g_err err;
	int rc = OCI_EXIT_FAIL;

	if (oci_ref_parse(cfg->image, &ref, &err) < 0)
		return fail(&err);
	struct oci_reg_opts o = reg_opts(cfg, false);
	/* cosign does not ask the registry about an image given by digest */
	if (!ref.digest[0] && oci_reg_open(&ref, &o, &r, &err) < 0)
		return fail(&err);
	oci_ref_name(&ref, name, sizeof(name));
	if (resolve(r, &ref, false, &m, &err) < 0 ||
	    oci_payload_build(name, m.digest, cfg->ann, cfg->n_ann, &payload, &plen, &err) < 0) {
		fail(&err);
		goto out;
	}
	if (write_all(stdout, payload, plen) < 0) {
		fprintf(stderr, "ocisign: cannot write the payload: %s\n", strerror(errno));
		goto out;
	}
	rc = 0;
out:
	free(payload);
	oci_manifest_free(&m);
	oci_reg_close(r);
	return rc;
}

/* The digests sign covers: the image, and with --recursive an index's children. */
static int sign_targets(const struct oci_config *cfg, const struct oci_manifest *m,
                        char (**ret)[OCI_DIGEST_LEN + 1], size_t *ret_n, p11g_err *err)
{
	json_t *root = NULL;
	size_t n = 1, i;
	json_t *children = NULL, *c;

	if (cfg->recursive && is_index(m->media_type)) {
		root = json_loadb((const char *)m->body.data, m->body.len, 0, NULL);
		children = json_object_get(root, "manifests");
		if (!json_is_array(children)) {
			json_decref(root);
			return p11g_err_set(err, P11G_E_PROTOCOL,
			                    "the index %s has no \"manifests\" list", m->digest);
		}
		if (json_array_size(children) > MAX_CHILDREN) {
			json_decref(root);
			return p11g_err_set(err, P11G_E_PROTOCOL,
			                    "the index %s lists %zu manifests, more than %d",
			                    m->digest, json_array_size(children), MAX_CHILDREN);
		}
		n += json_array_size(children);
	}
	char(*t)[OCI_DIGEST_LEN + 1] = calloc(n, sizeof(*t));
	if (!t) {
		json_decref(root);
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	size_t k = 0;
	memcpy(t[k++], m->digest, OCI_DIGEST_LEN + 1);
	json_array_foreach(children, i, c)
	{
		const char *d = json_string_value(json_object_get(c, "digest"));
		if (!d || !oci_digest_valid(d)) {
			free(t);
			json_decref(root);
			return p11g_err_set(err, P11G_E_PROTOCOL,
			                    "manifest %zu of index %s has no sha256 digest", i,
			                    m->digest);
		}
		bool dup = false;
		for (size_t j = 0; j < k; j++)
			dup |= !strcmp(t[j], d);
		if (!dup)
			memcpy(t[k++], d, OCI_DIGEST_LEN + 1);
	}
	json_decref(root);
	*ret = t;
	*ret_n = k;
	return 0;
}

/* approvald takes a request's title of TITLE_MAX bytes: a longer one is cut, ending in "...",
 * never inside a UTF-8 sequence (an OpenPGP user ID may be any UTF-8; image names and
 * subjects as OpenSSL escapes them are ASCII). */
#define TITLE_MAX 128
__attribute__((format(printf, 2, 3))) static void fit_title(char out[TITLE_MAX + 1],
                                                            const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, TITLE_MAX + 1, fmt, ap);
	va_end(ap);
	if (n > TITLE_MAX) {
		size_t cut = TITLE_MAX - 3;
		while (cut > 0 && ((unsigned char)out[cut] & 0xc0) == 0x80)
			cut--; /* out[cut] starts a character: the cut ends the one before whole */
		memcpy(out + cut, "...", 4);
	}
}

/* The pipeline's ID token for --request, when it has one to give (*ret NULL when not). */
static int load_id_token(const struct oci_config *cfg, char **ret, p11g_err *err)
{
	const char *tok_file = cfg->id_token ? cfg->id_token : getenv("APPROVALD_ID_TOKEN_FILE");
	bool want = cfg->id_token_github || cfg->id_token_env || (tok_file && *tok_file);
	*ret = NULL;
	if (cfg->id_token_github)
		*ret = p11g_id_token_github(cfg->id_token_github, true, err);
	else if (cfg->id_token_env)
		*ret = p11g_id_token_load(NULL, cfg->id_token_env, err);
	else if (want)
		*ret = p11g_id_token_load(tok_file, NULL, err);
	return want && !*ret ? -1 : 0;
}

/* The certificate sign attaches (cert_pem, NULL without one) and its chain: checked as cosign
 * checks them (the key's, valid now, code signing, chaining to the chain file's last). */
static int sign_certificate(const struct oci_config *cfg, struct oci_key *key, char **ret_cert,
                            char **ret_chain, p11g_err *err)
{
	EVP_PKEY *pk = NULL;
	X509 *leaf = NULL;
	STACK_OF(X509) *certs = NULL, *chain = NULL;
	_cleanup_buf_ struct oci_buf chainfile = {0};
	char what[600];
	int res = -1;

	*ret_cert = *ret_chain = NULL;
	if (!cfg->cert_file && !cfg->cert_from_token)
		return 0;
	if (oci_key_public(key, &pk, err) < 0)
		goto out;
	if (cfg->cert_from_token) {
		/* the key's URI without its query, which may hold the PIN */
		snprintf(what, sizeof(what), "the token's certificate of %s", oci_key_uri(key));
		int r = oci_key_token_cert(key, pk, &leaf, err);
		if (r < 0)
			goto out;
		if (r == 1) {
			p11g_err_set(err, P11G_E_NOT_FOUND,
			             "the token has no certificate for this key (a CKO_CERTIFICATE "
			             "with its CKA_ID: ocisign import-cert stores one)");
			goto out;
		}
	} else {
		snprintf(what, sizeof(what), "the certificate %s", cfg->cert_file);
		if (!(certs = oci_certs_load(cfg->cert_file, "certificate", err)))
			goto out;
		leaf = sk_X509_shift(certs);
		if (oci_cert_check_key(leaf, pk, what, err) < 0)
			goto out;
	}
	if (oci_cert_check_time(leaf, what, err) < 0 ||
	    oci_cert_check_codesign(leaf, what, err) < 0)
		goto out;
	if (cfg->chain_file) {
		if (oci_read_file(cfg->chain_file, OCI_SMALL_MAX, &chainfile, "certificate chain",
		                  err) < 0 ||
		    !(chain =
		          oci_certs_from_pem(chainfile.data, chainfile.len, cfg->chain_file, err)))
			goto out;
		if (oci_cert_verify_chain_file(leaf, chain, what, err) < 0)
			goto out;
		if (!(*ret_chain = strndup((const char *)chainfile.data, chainfile.len))) {
			p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
			goto out;
		}
	}
	if (!(*ret_cert = oci_cert_to_pem(leaf, err)))
		goto out;
	res = 0;
out:
	if (res < 0) {
		free(*ret_chain);
		*ret_chain = NULL;
	}
	X509_free(leaf);
	oci_certs_free(certs);
	oci_certs_free(chain);
	EVP_PKEY_free(pk);
	return res;
}

static int do_sign(struct oci_config *cfg)
{
	struct oci_ref ref;
	struct oci_reg *r = NULL;
	struct oci_key *key = NULL;
	struct oci_manifest m = {0};
	char name[600], (*targets)[OCI_DIGEST_LEN + 1] = NULL;
	char **payloads = NULL, **pdigests = NULL;
	size_t *plens = NULL, n = 0;
	char *req_uri = NULL, *id_token = NULL, **pnames = NULL, *cert = NULL, *chain = NULL;
	p11g_err err;
	int rc = OCI_EXIT_FAIL;

	if (oci_ref_parse(cfg->image, &ref, &err) < 0 ||
	    oci_key_request_uri(cfg->key, &req_uri, &err) < 0)
		return fail(&err);
	if (cfg->request) {
		const char *sock = p11g_wire_socket_path(cfg->socket);
		/* The module asks the daemon we asked: same socket unless told otherwise. */
		setenv("P11GATE_SOCKET", sock, 0);
	}
	/* Log in first: a wrong URI or PIN must not cost a registry round trip
	 * or bother approvers. */
	struct oci_key_opts ko = {
	    .uri = cfg->key, .module = cfg->module, .pin_file = cfg->pin_file};
	if (oci_key_open(&ko, true, &key, &err) < 0 ||
	    sign_certificate(cfg, key, &cert, &chain, &err) < 0)
		goto failed;
	struct oci_reg_opts o = reg_opts(cfg, true);
	if (oci_reg_open(&ref, &o, &r, &err) < 0 || resolve(r, &ref, true, &m, &err) < 0 ||
	    sign_targets(cfg, &m, &targets, &n, &err) < 0)
		goto failed;
	oci_ref_name(&ref, name, sizeof(name));
	payloads = calloc(n, sizeof(*payloads));
	pdigests = calloc(n, sizeof(*pdigests));
	plens = calloc(n, sizeof(*plens));
	if (!payloads || !pdigests || !plens) {
		p11g_err_set(&err, P11G_E_INTERNAL, "out of memory");
		goto failed;
	}
	for (size_t i = 0; i < n; i++) {
		if (oci_payload_build(name, targets[i], cfg->ann, cfg->n_ann, &payloads[i],
		                      &plens[i], &err) < 0)
			goto failed;
		if (!(pdigests[i] = malloc(OCI_DIGEST_LEN + 1))) {
			p11g_err_set(&err, P11G_E_INTERNAL, "out of memory");
			goto failed;
		}
		oci_sha256_digest(payloads[i], plens[i], pdigests[i]);
	}
	if (cfg->request) {
		char desc[900];
		if (n > 1)
			snprintf(desc, sizeof(desc),
			         "ocisign: sign image %s@%s (%s) and the %zu manifests it lists",
			         name, m.digest, oci_ref_reference(&ref), n - 1);
		else
			snprintf(desc, sizeof(desc), "ocisign: sign image %s@%s (%s)", name,
			         m.digest, oci_ref_reference(&ref));
		if (load_id_token(cfg, &id_token, &err) < 0)
			goto failed;
		/* named after the image; each payload after the manifest it signs */
		char title[TITLE_MAX + 1];
		fit_title(title, "Sign %s%s%s", name, ref.digest[0] ? "@" : ":",
		          oci_ref_reference(&ref));
		if (!(pnames = calloc(n, sizeof(*pnames)))) {
			p11g_err_set(&err, P11G_E_INTERNAL, "out of memory");
			goto failed;
		}
		for (size_t i = 0; i < n; i++)
			if (asprintf(&pnames[i], "%s@%s", name, targets[i]) < 0) {
				pnames[i] = NULL;
				p11g_err_set(&err, P11G_E_INTERNAL, "out of memory");
				goto failed;
			}
		struct oci_approval a = {
		    .name = title,
		    .payload_names = (const char *const *)pnames,
		    .id_token = id_token,
		    .socket = cfg->socket,
		    .key_uri = req_uri,
		    .registry = ref.registry,
		    .repository = ref.repository,
		    .reference = oci_ref_reference(&ref),
		    .digest = m.digest,
		    .payloads = (const char *const *)payloads,
		    .payload_lens = plens,
		    .payload_digests = (const char *const *)pdigests,
		    .n_payloads = n,
		    .description = desc,
		    .timeout_s = cfg->wait_s,
		};
		if (oci_approval_get(&a, &err) < 0)
			goto failed;
		oci_key_note_approved(key);
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char *sig = NULL;
		size_t slen;
		char *b64 = NULL, tag[80];
		bool skipped = false;
		if (oci_key_sign(key, payloads[i], plens[i], &sig, &slen, &err) < 0)
			goto failed;
		b64 = oci_b64_encode(sig, slen);
		free(sig);
		if (!b64) {
			p11g_err_set(&err, P11G_E_INTERNAL, "out of memory");
			goto failed;
		}
		int a = oci_attach(r, targets[i], payloads[i], plens[i], b64, cert, chain, &skipped,
		                   &err);
		free(b64);
		if (a < 0)
			goto failed;
		oci_sig_tag(targets[i], tag);
		printf("%s:%s\n", name, tag);
		fflush(stdout);
		if (skipped)
			fprintf(stderr, "ocisign: %s@%s already carries this signature\n", name,
			        targets[i]);
	}
	rc = 0;
	goto out;
failed:
	fail(&err);
out:
	for (size_t i = 0; i < n; i++) {
		if (payloads)
			free(payloads[i]);
		if (pdigests)
			free(pdigests[i]);
		if (pnames)
			free(pnames[i]);
	}
	free(pnames);
	free(cert);
	free(chain);
	p11g_id_token_free(id_token);
	free(payloads);
	free(pdigests);
	free(plens);
	free(targets);
	free(req_uri);
	oci_key_close(key);
	oci_manifest_free(&m);
	oci_reg_close(r);
	return rc;
}

/* Trims trailing white space (a signature file usually ends in a newline). */
static size_t trimmed(const unsigned char *p, size_t n)
{
	while (n && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	return n;
}

static int do_attach(struct oci_config *cfg)
{
	struct oci_ref ref;
	struct oci_reg *r = NULL;
	struct oci_manifest m = {0};
	_cleanup_buf_ struct oci_buf payload = {0};
	_cleanup_buf_ struct oci_buf sigfile = {0};
	char pdigest[OCI_DIGEST_LEN + 1], pref[600], name[600], tag[80];
	unsigned char *raw = NULL;
	size_t rawlen;
	bool skipped = false;
	p11g_err err;
	int rc = OCI_EXIT_FAIL;

	if (oci_ref_parse(cfg->image, &ref, &err) < 0 ||
	    oci_read_file(cfg->payload_file, OCI_BLOB_MAX, &payload, "payload", &err) < 0 ||
	    oci_read_file(cfg->signature_file, 64 * 1024, &sigfile, "signature", &err) < 0)
		return fail(&err);
	size_t slen = trimmed(sigfile.data, sigfile.len);
	if (slen == 0 || memchr(sigfile.data, '\0', slen) ||
	    oci_b64_decode((const char *)sigfile.data, slen, &raw, &rawlen) < 0 || rawlen == 0) {
		free(raw);
		p11g_err_set(&err, P11G_E_BAD_REQUEST,
		             "%s is not a base64 signature (as cosign attach signature takes it)",
		             cfg->signature_file);
		return fail(&err);
	}
	free(raw);
	sigfile.data[slen] = '\0';
	if (oci_payload_parse(payload.data, payload.len, pdigest, pref, sizeof(pref), &err) < 0) {
		char why[sizeof(err.msg)];
		memcpy(why, err.msg, sizeof(why));
		p11g_err_set(&err, err.code, "%.300s: %.700s", cfg->payload_file, why);
		return fail(&err);
	}
	struct oci_reg_opts o = reg_opts(cfg, true);
	if (oci_reg_open(&ref, &o, &r, &err) < 0 || resolve(r, &ref, true, &m, &err) < 0)
		goto failed;
	if (strcmp(pdigest, m.digest)) {
		p11g_err_set(&err, P11G_E_BAD_REQUEST, "the payload signs %s but %s is %s", pdigest,
		             cfg->image, m.digest);
		goto failed;
	}
	if (oci_attach(r, m.digest, payload.data, payload.len, (const char *)sigfile.data, NULL,
	               NULL, &skipped, &err) < 0)
		goto failed;
	oci_ref_name(&ref, name, sizeof(name));
	oci_sig_tag(m.digest, tag);
	printf("%s:%s\n", name, tag);
	if (skipped)
		fprintf(stderr, "ocisign: %s@%s already carries this signature\n", name, m.digest);
	rc = 0;
	goto out;
failed:
	fail(&err);
out:
	oci_manifest_free(&m);
	oci_reg_close(r);
	return rc;
}

/* What verify checks signatures with: a public key, or trusted roots (and an identity). */
struct verifier {
	EVP_PKEY *pk;
	STACK_OF(X509) * roots;
	const char *identity;
};

/* The key of a layer's certificate, once the certificate chains to the roots, allows code
 * signing and is for the identity asked for. */
static EVP_PKEY *layer_cert_key(const struct verifier *v, const json_t *ann, p11g_err *err)
{
	const char *cert = json_string_value(json_object_get(ann, OCI_ANN_CERTIFICATE));
	const json_t *jchain = json_object_get(ann, OCI_ANN_CHAIN);
	STACK_OF(X509) *certs = NULL, *chain = NULL;
	EVP_PKEY *pk = NULL;

	if (!cert) {
		p11g_err_set(err, P11G_E_BAD_SIGNATURE,
		             "no certificate is attached (%s annotation)", OCI_ANN_CERTIFICATE);
		return NULL;
	}
	if (jchain && !json_is_string(jchain)) {
		p11g_err_set(err, P11G_E_PROTOCOL, "the %s annotation is not a string",
		             OCI_ANN_CHAIN);
		return NULL;
	}
	if (!(certs = oci_certs_from_pem(cert, strlen(cert), "the certificate annotation", err)))
		return NULL;
	if (sk_X509_num(certs) != 1) {
		p11g_err_set(err, P11G_E_PROTOCOL,
		             "the certificate annotation holds %d certificates, not one",
		             sk_X509_num(certs));
		goto out;
	}
	/* an empty chain is cosign's "none": the roots' file must then hold the issuer */
	if (json_string_length(jchain) &&
	    !(chain = oci_certs_from_pem(json_string_value(jchain), json_string_length(jchain),
	                                 "the chain annotation", err)))
		goto out;
	X509 *leaf = sk_X509_value(certs, 0);
	char subj[256], what[300];
	oci_cert_subject(leaf, subj, sizeof(subj));
	snprintf(what, sizeof(what), "the certificate %s", subj);
	if (oci_cert_verify_chain(leaf, chain, v->roots, what, err) < 0 ||
	    (v->identity && oci_cert_check_identity(leaf, v->identity, err) < 0))
		goto out;
	if (!(pk = X509_get_pubkey(leaf)))
		p11g_err_set(err, P11G_E_PROTOCOL, "OpenSSL cannot read the certificate's key");
out:
	ERR_clear_error();
	oci_certs_free(certs);
	oci_certs_free(chain);
	return pk;
}

/* Checks one layer of the .sig manifest; 0 verified (payload in *ret), -1 with the reason. */
static int verify_layer(struct oci_reg *r, const struct verifier *v, const json_t *layer,
                        const char *image_digest, struct oci_buf *ret, p11g_err *err)
{
	const char *mt = json_string_value(json_object_get(layer, "mediaType"));
	const char *d = json_string_value(json_object_get(layer, "digest"));
	const char *sig = json_string_value(
	    json_object_get(json_object_get(layer, "annotations"), OCI_ANN_SIGNATURE));
	struct oci_buf payload = {0};
	unsigned char *raw = NULL;
	size_t rawlen;
	char pdigest[OCI_DIGEST_LEN + 1], pref[600];

	if (!mt || strcmp(mt, OCI_MT_SIMPLESIGNING))
		return p11g_err_set(err, P11G_E_PROTOCOL, "not a simple-signing layer");
	if (!d || !sig)
		return p11g_err_set(err, P11G_E_PROTOCOL, "no digest or no signature annotation");
	if (oci_b64_decode(sig, strlen(sig), &raw, &rawlen) < 0)
		return p11g_err_set(err, P11G_E_PROTOCOL, "the signature annotation is not base64");
	EVP_PKEY *pk =
	    v->pk ? v->pk : layer_cert_key(v, json_object_get(layer, "annotations"), err);
	if (!pk || oci_reg_get_blob(r, d, OCI_BLOB_MAX, &payload, err) < 0) {
		if (pk != v->pk)
			EVP_PKEY_free(pk);
		free(raw);
		return -1;
	}
	int ok = oci_verify(pk, payload.data, payload.len, raw, rawlen);
	if (pk != v->pk)
		EVP_PKEY_free(pk);
	free(raw);
	if (!ok) {
		oci_buf_free(&payload);
		return p11g_err_set(err, P11G_E_BAD_SIGNATURE,
		                    v->pk ? "the signature does not verify with this key"
		                          : "the signature does not verify with the certificate's "
		                            "key");
	}
	if (oci_payload_parse(payload.data, payload.len, pdigest, pref, sizeof(pref), err) < 0) {
		oci_buf_free(&payload);
		return -1;
	}
	if (strcmp(pdigest, image_digest)) {
		oci_buf_free(&payload);
		return p11g_err_set(err, P11G_E_BAD_SIGNATURE,
		                    "the payload signs %s, not this image", pdigest);
	}
	*ret = payload;
	return 0;
}

static int do_verify(struct oci_config *cfg)
{
	struct oci_ref ref;
	struct oci_reg *r = NULL;
	struct oci_manifest m = {0}, sigm = {0};
	struct verifier v = {.identity = cfg->identity};
	json_t *root = NULL, *layer;
	char name[600], tag[80], first_reason[sizeof(((p11g_err *)0)->msg) + 32] = "";
	size_t i, verified = 0, checked = 0;
	p11g_err err;
	int rc = OCI_EXIT_FAIL;

	if (oci_ref_parse(cfg->image, &ref, &err) < 0 ||
	    (cfg->key && !(v.pk = oci_pkey_load_pem(cfg->key, &err))) ||
	    (cfg->roots_file &&
	     !(v.roots = oci_certs_load(cfg->roots_file, "trusted certificates", &err))))
		return fail(&err);
	const char *with = cfg->key ? cfg->key : cfg->roots_file;
	struct oci_reg_opts o = reg_opts(cfg, false);
	oci_ref_name(&ref, name, sizeof(name));
	if (oci_reg_open(&ref, &o, &r, &err) < 0 || resolve(r, &ref, false, &m, &err) < 0)
		goto failed;
	oci_sig_tag(m.digest, tag);
	int got = oci_reg_get_manifest(r, tag, true, &sigm, &err);
	if (got < 0)
		goto failed;
	if (got == 1) {
		p11g_err_set(&err, P11G_E_NOT_FOUND, "no signatures found for %s@%s (no %s tag)",
		             name, m.digest, tag);
		goto failed;
	}
	root = json_loadb((const char *)sigm.body.data, sigm.body.len, 0, NULL);
	const json_t *layers = json_object_get(root, "layers");
	if (!json_is_array(layers)) {
		p11g_err_set(&err, P11G_E_PROTOCOL, "%s:%s is not an image manifest with layers",
		             name, tag);
		goto failed;
	}
	json_array_foreach(layers, i, layer)
	{
		struct oci_buf payload = {0};
		if (i >= OCI_SIG_LAYERS_MAX)
			break;
		checked++;
		if (verify_layer(r, &v, layer, m.digest, &payload, &err) < 0) {
			if (!first_reason[0])
				snprintf(first_reason, sizeof(first_reason), "signature %zu: %s",
				         i + 1, err.msg);
			continue;
		}
		verified++;
		if (write_all(stdout, payload.data, payload.len) < 0 ||
		    write_all(stdout, "\n", 1) < 0) {
			oci_buf_free(&payload);
			p11g_err_set(&err, P11G_E_INTERNAL, "cannot write to stdout: %s",
			             strerror(errno));
			goto failed;
		}
		oci_buf_free(&payload);
	}
	if (verified == 0) {
		p11g_err_set(&err, P11G_E_BAD_SIGNATURE,
		             "no signature of %s@%s verifies with %s (%zu checked%s%s)", name,
		             m.digest, with, checked, first_reason[0] ? "; " : "", first_reason);
		goto failed;
	}
	fprintf(stderr, "ocisign: %zu of %zu signatures of %s@%s verified with %s\n", verified,
	        checked, name, m.digest, with);
	if (v.roots)
		fprintf(stderr, "ocisign: certificate chains were checked at the current time: "
		                "without a timestamp, the time of signing is not known\n");
	rc = 0;
	goto out;
failed:
	fail(&err);
out:
	json_decref(root);
	EVP_PKEY_free(v.pk);
	oci_certs_free(v.roots);
	oci_manifest_free(&sigm);
	oci_manifest_free(&m);
	oci_reg_close(r);
	return rc;
}

static int do_pubkey(struct oci_config *cfg)
{
	struct oci_key *key = NULL;
	struct oci_key_opts ko = {
	    .uri = cfg->key, .module = cfg->module, .pin_file = cfg->pin_file};
	char *pem = NULL;
	p11g_err err;
	int rc = OCI_EXIT_FAIL;

	if (oci_key_open(&ko, false, &key, &err) < 0 || oci_key_public_pem(key, &pem, &err) < 0) {
		fail(&err);
	} else if (write_all(stdout, pem, strlen(pem)) < 0) {
		fprintf(stderr, "ocisign: cannot write to stdout: %s\n", strerror(errno));
	} else {
		rc = 0;
	}
	free(pem);
	oci_key_close(key);
	return rc;
}

/* "CSR for DN" and the request's metadata: what approvers see of a certificate request. */
static int csr_approval(const struct oci_config *cfg, struct oci_key *key, const char *req_uri,
                        const char *dn, const unsigned char *tbs, size_t tlen, p11g_err *err)
{
	char digest[OCI_DIGEST_LEN + 1], title[TITLE_MAX + 1], desc[2200], sans[1001] = "";
	char *id_token = NULL;
	size_t off = 0;

	for (size_t i = 0; i < cfg->n_sans && off < sizeof(sans); i++) {
		int n =
		    snprintf(sans + off, sizeof(sans) - off, "%s%s", i ? ", " : "", cfg->sans[i]);
		off += n > 0 ? (size_t)n : 0;
	}
	if (off >= sizeof(sans))
		snprintf(sans + sizeof(sans) - 4, 4, "...");
	if (load_id_token(cfg, &id_token, err) < 0)
		return -1;
	oci_sha256_digest(tbs, tlen, digest);
	fit_title(title, "CSR for %s", dn);
	snprintf(desc, sizeof(desc),
	         "ocisign: PKCS#10 certificate signing request for a code-signing certificate, "
	         "subject %.900s%s%s",
	         dn, sans[0] ? ", names " : "", sans);
	/* approvald reads the request itself: approvers see its subject, key and names */
	const char *payload = (const char *)tbs, *pdigest = digest, *pname = title;
	const char *meta[] = {"kind", "PKCS#10 certificate signing request", "subject",
	                      dn,     sans[0] ? "subject-alt-names" : NULL,  sans,
	                      NULL};
	struct oci_approval a = {
	    .name = title,
	    .payload_names = &pname,
	    .id_token = id_token,
	    .socket = cfg->socket,
	    .key_uri = req_uri,
	    .payloads = &payload,
	    .payload_lens = &tlen,
	    .payload_digests = &pdigest,
	    .n_payloads = 1,
	    .description = desc,
	    .timeout_s = cfg->wait_s,
	    .meta = meta,
	};
	int r = oci_approval_get(&a, err);
	p11g_id_token_free(id_token);
	if (r == 0)
		oci_key_note_approved(key);
	return r;
}

static int do_csr(struct oci_config *cfg)
{
	struct oci_key *key = NULL;
	EVP_PKEY *pk = NULL;
	X509_NAME *subj = NULL;
	X509_REQ *req = NULL;
	unsigned char *tbs = NULL, *sig = NULL;
	size_t tlen = 0, slen = 0;
	char *pem = NULL, *req_uri = NULL, dn[1024];
	p11g_err err;
	int rc = OCI_EXIT_FAIL;

	if (!(subj = oci_subject_parse(cfg->subject, &err)) ||
	    oci_key_request_uri(cfg->key, &req_uri, &err) < 0) {
		X509_NAME_free(subj);
		return fail(&err);
	}
	if (!X509_NAME_oneline(subj, dn, sizeof(dn)))
		snprintf(dn, sizeof(dn), "%s", cfg->subject);
	if (cfg->request)
		setenv("P11GATE_SOCKET", p11g_wire_socket_path(cfg->socket), 0);
	struct oci_key_opts ko = {
	    .uri = cfg->key, .module = cfg->module, .pin_file = cfg->pin_file};
	if (oci_key_open(&ko, true, &key, &err) < 0 || oci_key_public(key, &pk, &err) < 0 ||
	    oci_csr_build(pk, subj, cfg->sans, cfg->n_sans, &req, &tbs, &tlen, &err) < 0 ||
	    (cfg->request && csr_approval(cfg, key, req_uri, dn, tbs, tlen, &err) < 0) ||
	    oci_key_sign(key, tbs, tlen, &sig, &slen, &err) < 0 ||
	    oci_csr_finish(req, pk, sig, slen, &pem, &err) < 0 ||
	    write_out(cfg->output, pem, &err) < 0) {
		fail(&err);
		goto out;
	}
	if (cfg->output)
		fprintf(stderr, "ocisign: certificate request for %s written to %s\n", dn,
		        cfg->output);
	rc = 0;
out:
	free(pem);
	free(sig);
	OPENSSL_free(tbs);
	free(req_uri);
	X509_REQ_free(req);
	X509_NAME_free(subj);
	EVP_PKEY_free(pk);
	oci_key_close(key);
	return rc;
}

static int do_import_cert(struct oci_config *cfg)
{
	struct oci_key *key = NULL;
	EVP_PKEY *pk = NULL;
	STACK_OF(X509) *certs = NULL, *chain = NULL;
	char what[600], subj[256];
	unsigned replaced = 0;
	p11g_err err;
	int rc = OCI_EXIT_FAIL;

	snprintf(what, sizeof(what), "the certificate %s", cfg->cert_file);
	/* the files first: a wrong file must not cost a login */
	if (!(certs = oci_certs_load(cfg->cert_file, "certificate", &err)) ||
	    (cfg->chain_file &&
	     !(chain = oci_certs_load(cfg->chain_file, "certificate chain", &err))))
		goto failed;
	X509 *leaf = sk_X509_value(certs, 0);
	oci_cert_subject(leaf, subj, sizeof(subj));
	struct oci_key_opts ko = {
	    .uri = cfg->key, .module = cfg->module, .pin_file = cfg->pin_file, .rw = true};
	if (oci_key_open(&ko, true, &key, &err) < 0 || oci_key_public(key, &pk, &err) < 0 ||
	    oci_cert_check_key(leaf, pk, what, &err) < 0 ||
	    oci_cert_check_time(leaf, what, &err) < 0 ||
	    oci_cert_check_codesign(leaf, what, &err) < 0)
		goto failed;
	if ((chain && oci_cert_verify_chain_file(leaf, chain, what, &err) < 0) ||
	    oci_key_import_cert(key, leaf, &replaced, &err) < 0)
		goto failed;
	printf("stored %s on the token as the certificate of %s (its CKA_ID and CKA_LABEL)", subj,
	       oci_key_uri(key));
	if (replaced)
		printf(" (replacing %u certificate%s)", replaced, replaced == 1 ? "" : "s");
	printf("\n");
	rc = 0;
	goto out;
failed:
	fail(&err);
out:
	oci_certs_free(certs);
	oci_certs_free(chain);
	EVP_PKEY_free(pk);
	oci_key_close(key);
	return rc;
}

/* ---- OpenPGP: keys and simple signing ---------------------------------------- */

/* The creation time of the token key's OpenPGP form in an exported key file (sign
 * --openpgp-key): the one with which the key's fingerprint is one of the file's. */
static int created_from_file(const char *file, EVP_PKEY *pk, uint32_t *ret, p11g_err *err)
{
	struct oci_pgp_verifier *v = NULL;
	uint32_t times[64];
	int r = -1;
	bool failed = false;

	if (oci_pgp_verifier_open(file, &v, err) < 0)
		return -1;
	size_t n = oci_pgp_verifier_times(v, times, P11G_ARRAY_SIZE(times));
	for (size_t i = 0; i < n && r < 0 && !failed; i++) {
		struct oci_pgp_key k;
		char fpr[OCI_PGP_FPR_HEX];
		uint32_t c;
		if (oci_pgp_key_init(pk, times[i], &k, err) < 0) {
			failed = true; /* its reason stands */
			break;
		}
		p11g_pgp_fingerprint_hex(k.fpr, fpr);
		if (oci_pgp_verifier_has(v, fpr, &c) && c == times[i]) {
			*ret = times[i];
			r = 0;
		}
	}
	if (r < 0 && !failed)
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "%s holds no OpenPGP key of this token key (ocisign pubkey --format "
		             "openpgp exports one)",
		             file);
	oci_pgp_verifier_close(v);
	return r;
}

/* The key's OpenPGP form: its public key, created at --created, at the time its exported
 * key says (--openpgp-key), or at its CKA_START_DATE. */
static int pgp_key(const struct oci_config *cfg, struct oci_key *key, struct oci_pgp_key *ret,
                   p11g_err *err)
{
	EVP_PKEY *pk = NULL;
	uint32_t created = cfg->created;
	int r = cfg->created_set || cfg->openpgp_key ? 0 : oci_key_start_date(key, &created, err);

	if (r == 1)
		return p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "%s has no CKA_START_DATE: give the OpenPGP key's creation time with --created "
		    "(the same every time: the fingerprint depends on it)",
		    oci_key_uri(key));
	if (r < 0 || oci_key_public(key, &pk, err) < 0 ||
	    (cfg->openpgp_key && created_from_file(cfg->openpgp_key, pk, &created, err) < 0)) {
		EVP_PKEY_free(pk);
		return -1;
	}
	r = oci_pgp_key_init(pk, created, ret, err);
	EVP_PKEY_free(pk);
	if (r == 0 && (time_t)created > time(NULL))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "the key's creation time is in the future: GnuPG would not "
		                    "accept its signatures");
	return r;
}

/* Signs tbs (oci_pgp_tbs) through the token: the signature packet in *ret. */
static int pgp_sign(struct oci_key *key, const struct oci_pgp_key *k, const struct oci_buf *tbs,
                    size_t fields, struct oci_buf *ret, p11g_err *err)
{
	unsigned char *sig = NULL;
	size_t slen = 0;
	if (oci_key_sign_pgp(key, k->hash == P11G_PGP_SHA384, tbs->data, tbs->len, &sig, &slen,
	                     err) < 0)
		return -1;
	oci_buf_init(ret, 4 * OCI_PGP_BODY_MAX);
	int r = oci_pgp_sig_packet(k, tbs, fields, sig, slen, ret, err);
	free(sig);
	return r;
}

/* One use, pinned to the digest the gate binds the token's signature of tbs to; tbs itself
 * is the payload, which approvald reads (pgp_payload.c). */
static int pgp_approval(const struct oci_config *cfg, struct oci_key *key, const char *req_uri,
                        const struct oci_pgp_key *k, const struct oci_buf *tbs,
                        struct oci_approval *a, p11g_err *err)
{
	char digest[P11G_PGP_DIGEST_MAX], *id_token = NULL;
	const char *payload = (const char *)tbs->data, *pdigest = digest;
	size_t plen = tbs->len;

	if (load_id_token(cfg, &id_token, err) < 0)
		return -1;
	if (!p11g_pgp_use_digest(k->algo, k->hash, tbs->data, tbs->len, digest)) {
		p11g_id_token_free(id_token);
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "cannot hash what is to be signed (OpenPGP payload digest)");
	}
	a->id_token = id_token;
	a->socket = cfg->socket;
	a->key_uri = req_uri;
	a->payloads = &payload;
	a->payload_lens = &plen;
	a->payload_digests = &pdigest;
	a->n_payloads = 1;
	a->timeout_s = cfg->wait_s;
	int r = oci_approval_get(a, err);
	p11g_id_token_free(id_token);
	if (r == 0)
		oci_key_note_approved(key);
	return r;
}

static int do_pubkey_openpgp(struct oci_config *cfg)
{
	struct oci_key *key = NULL;
	struct oci_pgp_key k;
	struct oci_buf tbs = {0}, sigpkt = {0};
	char *req_uri = NULL, *block = NULL, fpr[OCI_PGP_FPR_HEX], when[32];
	size_t fields;
	p11g_err err;
	int rc = OCI_EXIT_FAIL;

	if (oci_key_request_uri(cfg->key, &req_uri, &err) < 0)
		return fail(&err);
	if (cfg->request)
		setenv("P11GATE_SOCKET", p11g_wire_socket_path(cfg->socket), 0);
	struct oci_key_opts ko = {
	    .uri = cfg->key, .module = cfg->module, .pin_file = cfg->pin_file};
	if (oci_key_open(&ko, true, &key, &err) < 0 || pgp_key(cfg, key, &k, &err) < 0 ||
	    oci_pgp_tbs(&k, P11G_PGP_SIG_POSITIVE_CERT, (uint32_t)time(NULL), NULL, 0, cfg->uid,
	                &tbs, &fields, &err) < 0)
		goto failed;
	p11g_pgp_fingerprint_hex(k.fpr, fpr);
	if (cfg->request) {
		char title[TITLE_MAX + 1], desc[900];
		fit_title(title, "OpenPGP certification for %s", cfg->uid);
		snprintf(desc, sizeof(desc),
		         "ocisign: OpenPGP self-certification of %s key %s for user ID %s", k.desc,
		         fpr, cfg->uid);
		const char *meta[] = {
		    "kind", "OpenPGP certification", "user-id", cfg->uid, "fingerprint", fpr, NULL};
		const char *pname = title;
		struct oci_approval a = {
		    .name = title, .payload_names = &pname, .description = desc, .meta = meta};
		if (pgp_approval(cfg, key, req_uri, &k, &tbs, &a, &err) < 0)
			goto failed;
	}
	if (pgp_sign(key, &k, &tbs, fields, &sigpkt, &err) < 0 ||
	    oci_pgp_public_key_block(&k, cfg->uid, &sigpkt, &block, &err) < 0 ||
	    write_out(cfg->output, block, &err) < 0)
		goto failed;
	time_t c = k.created;
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&c));
	fprintf(stderr, "ocisign: OpenPGP key %s (%s, created %s) for %s\n", fpr, k.desc, when,
	        cfg->uid);
	rc = 0;
	goto out;
failed:
	fail(&err);
out:
	oci_buf_free(&tbs);
	oci_buf_free(&sigpkt);
	free(block);
	free(req_uri);
	oci_key_close(key);
	return rc;
}

static int do_sign_simple(struct oci_config *cfg)
{
	struct oci_ref ref;
	struct oci_reg *r = NULL;
	struct oci_key *key = NULL;
	struct oci_manifest m = {0};
	struct oci_lookaside store;
	struct oci_pgp_key k;
	struct oci_buf tbs = {0}, sigpkt = {0}, msg = {0};
	char *req_uri = NULL, *claim = NULL, name[600], identity[800], path[3072];
	size_t clen = 0, fields;
	unsigned n;
	p11g_err err;
	int rc = OCI_EXIT_FAIL;

	if (oci_ref_parse(cfg->image, &ref, &err) < 0 ||
	    oci_key_request_uri(cfg->key, &req_uri, &err) < 0 ||
	    oci_lookaside_open(cfg->sigstore, true, NULL, &store, &err) < 0) {
		free(req_uri);
		return fail(&err);
	}
	if (cfg->request)
		setenv("P11GATE_SOCKET", p11g_wire_socket_path(cfg->socket), 0);
	struct oci_key_opts ko = {
	    .uri = cfg->key, .module = cfg->module, .pin_file = cfg->pin_file};
	struct oci_reg_opts o = reg_opts(cfg, false);
	/* the key first: a wrong URI or PIN must not cost a registry round trip */
	if (oci_key_open(&ko, true, &key, &err) < 0 || pgp_key(cfg, key, &k, &err) < 0 ||
	    oci_reg_open(&ref, &o, &r, &err) < 0 || resolve(r, &ref, false, &m, &err) < 0)
		goto failed;
	if (oci_lookaside_prepare(&store, &ref, m.digest, &err) < 0)
		goto failed;
	time_t now = time(NULL);
	oci_atomic_identity(&ref, identity, sizeof(identity));
	if (oci_atomic_claim(identity, m.digest, "ocisign (p11gate) " P11GATE_VERSION, now, &claim,
	                     &clen, &err) < 0 ||
	    oci_pgp_tbs(&k, P11G_PGP_SIG_BINARY, (uint32_t)now, claim, clen, NULL, &tbs, &fields,
	                &err) < 0)
		goto failed;
	oci_ref_name(&ref, name, sizeof(name));
	if (cfg->request) {
		char title[TITLE_MAX + 1], desc[2400], pname[800], fpr[OCI_PGP_FPR_HEX];
		p11g_pgp_fingerprint_hex(k.fpr, fpr);
		fit_title(title, "Sign %s (simple signing)", identity);
		snprintf(pname, sizeof(pname), "%s@%s (simple signing)", name, m.digest);
		snprintf(desc, sizeof(desc),
		         "ocisign: simple-signing (OpenPGP) signature of image %s@%s as %s, by "
		         "OpenPGP key %s",
		         name, m.digest, identity, fpr);
		const char *pn = pname;
		const char *meta[] = {"kind", "simple signing (OpenPGP)", "fingerprint", fpr, NULL};
		/* containers/image's name for Docker Hub, as the claim says it */
		struct oci_approval a = {
		    .name = title,
		    .payload_names = &pn,
		    .description = desc,
		    .meta = meta,
		    .registry =
		        strcmp(ref.registry, OCI_DEFAULT_REGISTRY) ? ref.registry : "docker.io",
		    .repository = ref.repository,
		    .reference = oci_ref_reference(&ref),
		    .digest = m.digest,
		};
		if (pgp_approval(cfg, key, req_uri, &k, &tbs, &a, &err) < 0)
			goto failed;
	}
	if (pgp_sign(key, &k, &tbs, fields, &sigpkt, &err) < 0 ||
	    oci_pgp_signed_message(&k, claim, clen, &sigpkt, &msg, &err) < 0 ||
	    oci_lookaside_put(&store, &ref, m.digest, msg.data, msg.len, &n, path, sizeof(path),
	                      &err) < 0)
		goto failed;
	printf("%s\n", path);
	fprintf(stderr, "ocisign: %s@%s signed as %s (signature-%u)\n", name, m.digest, identity,
	        n);
	rc = 0;
	goto out;
failed:
	fail(&err);
out:
	oci_buf_free(&tbs);
	oci_buf_free(&sigpkt);
	oci_buf_free(&msg);
	free(claim);
	free(req_uri);
	oci_key_close(key);
	oci_manifest_free(&m);
	oci_reg_close(r);
	return rc;
}

static int do_verify_simple(struct oci_config *cfg)
{
	struct oci_ref ref;
	struct oci_reg *r = NULL;
	struct oci_manifest m = {0};
	struct oci_lookaside store;
	struct oci_pgp_verifier *v = NULL;
	char name[600], first_reason[sizeof(((p11g_err *)0)->msg) + 32] = "";
	unsigned verified = 0, checked = 0;
	p11g_err err;
	int rc = OCI_EXIT_FAIL;

	if (oci_ref_parse(cfg->image, &ref, &err) < 0 ||
	    oci_lookaside_open(cfg->sigstore, false, cfg->ca_file, &store, &err) < 0 ||
	    oci_pgp_verifier_open(cfg->keyring, &v, &err) < 0)
		return fail(&err);
	struct oci_reg_opts o = reg_opts(cfg, false);
	oci_ref_name(&ref, name, sizeof(name));
	if (oci_reg_open(&ref, &o, &r, &err) < 0 || resolve(r, &ref, false, &m, &err) < 0)
		goto failed;
	for (unsigned n = 1; n <= OCI_LOOKASIDE_MAX_N; n++) {
		struct oci_buf sig = {0}, claim = {0};
		char fpr[64];
		int got = oci_lookaside_get(&store, &ref, m.digest, n, &sig, &err);
		if (got == 1)
			break;
		if (got < 0) /* a store that cannot be read is no "no signature" */
			goto failed;
		checked++;
		if (oci_pgp_verify(v, sig.data, sig.len, &claim, fpr, &err) < 0 ||
		    oci_atomic_check(claim.data, claim.len, &ref, m.digest, &err) < 0) {
			if (!first_reason[0])
				snprintf(first_reason, sizeof(first_reason), "signature-%u: %s", n,
				         err.msg);
			oci_buf_free(&sig);
			oci_buf_free(&claim);
			continue;
		}
		verified++;
		int w =
		    write_all(stdout, claim.data, claim.len) < 0 || write_all(stdout, "\n", 1) < 0;
		oci_buf_free(&sig);
		oci_buf_free(&claim);
		if (w) {
			p11g_err_set(&err, P11G_E_INTERNAL, "cannot write to stdout: %s",
			             strerror(errno));
			goto failed;
		}
	}
	if (verified == 0) {
		p11g_err_set(&err, P11G_E_BAD_SIGNATURE,
		             "no simple-signing signature of %s@%s in %s verifies with %s (%u "
		             "checked%s%s)",
		             name, m.digest, store.base, cfg->keyring, checked,
		             first_reason[0] ? "; " : "", first_reason);
		goto failed;
	}
	fprintf(stderr, "ocisign: %u of %u simple-signing signatures of %s@%s verified with %s\n",
	        verified, checked, name, m.digest, cfg->keyring);
	rc = 0;
	goto out;
failed:
	fail(&err);
out:
	oci_pgp_verifier_close(v);
	oci_manifest_free(&m);
	oci_reg_close(r);
	return rc;
}

int oci_operate(struct oci_config *cfg)
{
	switch (cfg->verb) {
	case OCI_GENERATE:
		return do_generate(cfg);
	case OCI_SIGN:
		return cfg->format == OCI_FMT_SIMPLE_SIGNING ? do_sign_simple(cfg) : do_sign(cfg);
	case OCI_ATTACH:
		return do_attach(cfg);
	case OCI_VERIFY:
		return cfg->format == OCI_FMT_SIMPLE_SIGNING ? do_verify_simple(cfg)
		                                             : do_verify(cfg);
	case OCI_PUBKEY:
		return cfg->format == OCI_FMT_OPENPGP ? do_pubkey_openpgp(cfg) : do_pubkey(cfg);
	case OCI_CSR:
		return do_csr(cfg);
	case OCI_IMPORT_CERT:
		return do_import_cert(cfg);
	}
	return OCI_EXIT_USAGE;
}
