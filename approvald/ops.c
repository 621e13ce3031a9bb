/* Operation lifecycle: every state change and its audit record in one durable transaction. */
#include "approvald/ops.h"
#include "approvald/refusals.h"

#include <ctype.h>
#include <inttypes.h>

#include <openssl/evp.h>

#include "approvald/textsafe.h"
#include "p11gate/mech.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define MAX_KEYS     16
#define MAX_DIGESTS  64
#define MAX_USES     1000000
#define MAX_VALIDITY (10LL * 365 * 86400)
#define MAX_TEXT     1024
#define MAX_CONTEXT  4096
#define RECENT_ENDED 1024                    /* ended operations looked at to explain a refusal */
#define REPLY_BUDGET (P11G_FRAME_MAX - 4096) /* listings page before a reply outgrows a frame */
#define RULE_CACHE   16                      /* parsed rule snapshots kept for uses */
#define MAX_PAYLOAD  16384                   /* bytes of one cosign payload */
#define MAX_REFNAME  512                     /* bytes of a payload's docker-reference */

static void rule_freep(struct p11g_rule **r)
{
	p11g_rule_free(*r);
}
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))
#define _cleanup_rule_ __attribute__((cleanup(rule_freep)))

static const char *state_of(const json_t *op)
{
	const char *s = json_string_value(json_object_get(op, "state"));
	return s ? s : "";
}

static bool is_active(const char *state)
{
	return !strcmp(state, "pending") || !strcmp(state, "approved");
}

static int64_t int_of(const json_t *obj, const char *name)
{
	return (int64_t)json_integer_value(json_object_get(obj, name));
}

static json_t *actor_json(const struct p11g_ident *id)
{
	return json_pack("{s:I, s:s, s:I}", "uid", (json_int_t)id->uid, "user", id->user, "pid",
	                 (json_int_t)id->pid);
}

static void notify(struct p11g_ops *o, uint64_t id)
{
	if (o->changed)
		o->changed(o->changed_arg, id);
}

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

/* ---- rules and quorum ---------------------------------------------------- */

/* Snapshots parsed before, by their canonical text: every use looks at the
 * rule of each operation for its key, and parsing one costs more than
 * printing it. */
struct p11g_rule_cache {
	struct {
		char *text;
		struct p11g_rule *rule;
		json_t *snap; /* the snapshot object last found to hold text, kept */
	} e[RULE_CACHE];
	size_t next; /* the slot the next miss takes */
};

void p11g_ops_clear(struct p11g_ops *o)
{
	struct p11g_rule_cache *rc = o->rule_cache;
	p11g_refusals_free(o->refusals);
	o->refusals = NULL;
	free(o->budget);
	o->budget = NULL;
	if (!rc)
		return;
	for (size_t i = 0; i < RULE_CACHE; i++) {
		free(rc->e[i].text);
		p11g_rule_free(rc->e[i].rule);
		json_decref(rc->e[i].snap);
	}
	free(rc);
	o->rule_cache = NULL;
}

/* The rule snapshot an operation keeps for one of its keys, parsed as
 * p11g_rule_from_json does.  Borrowed from o's cache: valid until the next
 * call, which may evict it.  op comes from a walk of the store, so it is not
 * changed while anyone holds it (p11g_op_visit_fn), and snapshots are never
 * changed once written: the object a snapshot was last seen as answers
 * without printing it again. */
static const struct p11g_rule *op_rule(struct p11g_ops *o, const json_t *op, const char *name,
                                       p11g_err *err)
{
	struct p11g_rule *r = NULL;
	json_t *snap = json_object_get(json_object_get(op, "rules"), name);
	if (!snap) {
		p11g_err_set(err, P11G_E_INTERNAL,
		             "operation %" JSON_INTEGER_FORMAT " has no snapshot of rule %s",
		             json_integer_value(json_object_get(op, "id")), name);
		return NULL;
	}
	if (!o->rule_cache && !(o->rule_cache = calloc(1, sizeof(*o->rule_cache)))) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		return NULL;
	}
	struct p11g_rule_cache *rc = o->rule_cache;
	for (size_t i = 0; i < RULE_CACHE; i++)
		if (rc->e[i].snap == snap)
			return rc->e[i].rule;
	char *text = json_dumps(snap, JSON_COMPACT | JSON_SORT_KEYS);
	if (!text) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < RULE_CACHE; i++) {
		if (rc->e[i].text && !strcmp(rc->e[i].text, text)) {
			free(text);
			json_decref(rc->e[i].snap);
			rc->e[i].snap = json_incref(snap);
			return rc->e[i].rule;
		}
	}
	if (p11g_rule_from_json(snap, &r, err) < 0) {
		free(text);
		return NULL;
	}
	size_t i = rc->next;
	rc->next = (i + 1) % RULE_CACHE;
	free(rc->e[i].text);
	p11g_rule_free(rc->e[i].rule);
	json_decref(rc->e[i].snap);
	rc->e[i].text = text;
	rc->e[i].rule = r;
	rc->e[i].snap = json_incref(snap);
	return r;
}

static int load_idents(const json_t *arr, struct p11g_ident **ret, size_t *ret_n)
{
	size_t n = json_array_size(arr), i;
	struct p11g_ident *v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		if (p11g_ident_from_json(json_array_get(arr, i), &v[i]) < 0)
			break;
	if (i < n) {
		for (size_t k = 0; k < i; k++)
			p11g_ident_clear(&v[k]);
		free(v);
		return -EINVAL;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static void free_idents(struct p11g_ident *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p11g_ident_clear(&v[i]);
	free(v);
}

/*
 * Whether every rule of the operation is satisfied by its approvals (all or
 * nothing).  missing gets a sentence for the first rule that is not.
 */
static int op_quorum(const json_t *op, bool *ret_met, char *missing, size_t missing_size,
                     p11g_err *err)
{
	struct p11g_ident *apv = NULL, orderer = {0};
	size_t n_apv = 0;
	const char *name;
	json_t *snap;
	bool met = true;
	int r = 0;

	if (load_idents(json_object_get(op, "approvals"), &apv, &n_apv) < 0 ||
	    p11g_ident_from_json(json_object_get(op, "orderer"), &orderer) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "operation record is damaged");
	if (missing_size)
		missing[0] = '\0';
	json_object_foreach(json_object_get(op, "rules"), name, snap)
	{
		_cleanup_rule_ struct p11g_rule *rule = NULL;
		char why[256] = "";
		if (p11g_rule_from_json(snap, &rule, err) < 0) {
			r = -1;
			break;
		}
		if (p11g_rule_auto_approves(rule, &orderer))
			continue;
		if (!p11g_rule_quorum_met(rule, apv, n_apv, orderer.uid, why, sizeof(why))) {
			if (met && missing_size)
				snprintf(missing, missing_size, "rule %s %s", name, why);
			met = false;
		}
	}
	free_idents(apv, n_apv);
	p11g_ident_clear(&orderer);
	if (r == 0)
		*ret_met = met;
	return r;
}

/* Applies fn-like predicates over the operation's rule snapshots. */
enum rule_pred { PRED_MAY_APPROVE, PRED_IS_ADMIN };

static bool op_any_rule(const json_t *op, const struct p11g_ident *id, enum rule_pred pred)
{
	const char *name;
	json_t *snap;
	json_object_foreach(json_object_get(op, "rules"), name, snap)
	{
		_cleanup_rule_ struct p11g_rule *rule = NULL;
		if (p11g_rule_from_json(snap, &rule, NULL) < 0)
			continue;
		if (pred == PRED_MAY_APPROVE && p11g_rule_may_approve(rule, id))
			return true;
		if (pred == PRED_IS_ADMIN && p11g_rule_is_admin(rule, id))
			return true;
	}
	return false;
}

static bool signer_matches(const json_t *op, const struct p11g_ident *id)
{
	struct p11g_principal p;
	const char *s = json_string_value(json_object_get(op, "signer"));
	if (!s || p11g_principal_parse(s, &p, NULL) < 0)
		return false;
	bool m = p11g_principal_matches(&p, id);
	p11g_principal_clear(&p);
	return m;
}

static bool is_orderer(const json_t *op, const struct p11g_ident *id)
{
	return int_of(json_object_get(op, "orderer"), "uid") == (int64_t)id->uid;
}

bool p11g_ops_visible(struct p11g_ops *o, const struct p11g_ident *caller, const json_t *op)
{
	return caller->uid == 0 || caller->uid == o->daemon_uid || is_orderer(op, caller) ||
	       signer_matches(op, caller) || op_any_rule(op, caller, PRED_MAY_APPROVE) ||
	       op_any_rule(op, caller, PRED_IS_ADMIN);
}

static bool has_approved(const json_t *op, uid_t uid)
{
	size_t i;
	json_t *a;
	json_array_foreach(json_object_get(op, "approvals"), i, a)
	{
		if (int_of(a, "uid") == (int64_t)uid)
			return true;
	}
	return false;
}

/* The state a person should see: an active operation past its window is
 * expired even before the sweep records it. */
static const char *effective_state(const json_t *op, int64_t now)
{
	const char *s = state_of(op);
	if (is_active(s) && now >= int_of(op, "expires"))
		return "expired";
	return s;
}

/* The public form: no rule snapshots, no group lists; state as seen now,
 * and for pending operations what they still need. */
static json_t *op_public(const json_t *op)
{
	json_t *pub = json_deep_copy(op), *a;
	size_t i;
	int64_t now = p11g_now();

	if (!pub)
		return NULL;
	json_t *rules = json_object();
	const char *name;
	json_t *snap;
	json_object_foreach(json_object_get(op, "rules"), name, snap)
	{
		json_object_set_new(rules, name,
		                    json_pack("{s:O?, s:O?, s:O?}", "quorum",
		                              json_object_get(snap, "quorum"), "max_uses",
		                              json_object_get(snap, "max_uses"), "bind_digest",
		                              json_object_get(snap, "bind_digest")));
	}
	json_object_set_new(pub, "rules", rules);
	json_object_del(json_object_get(pub, "orderer"), "groups");
	json_array_foreach(json_object_get(pub, "approvals"), i, a) json_object_del(a, "groups");
	json_object_set_new(pub, "state", json_string(effective_state(op, now)));
	if (!strcmp(state_of(op), "pending") && now < int_of(op, "expires")) {
		char missing[300];
		bool met = false;
		if (op_quorum(op, &met, missing, sizeof(missing), NULL) == 0 && !met)
			json_object_set_new(pub, "needs", json_string(missing));
	}
	return pub;
}

/* ---- audit ------------------------------------------------------------- */

/* Appends one audit record: event, actor, operation id and extra members
 * (stolen).  extra is what the caller's json_pack made: NULL is its failure,
 * and a record without its members is never written. */
static int audit(p11g_txn *t, const char *event, const struct p11g_ident *actor, uint64_t id,
                 json_t *extra, p11g_err *err)
{
	_cleanup_json_ json_t *rec = extra;
	if (!rec || json_object_set_new(rec, "event", json_string(event)) < 0 ||
	    (actor && json_object_set_new(rec, "actor", actor_json(actor)) < 0) ||
	    (id && json_object_set_new(rec, "op", json_integer((json_int_t)id)) < 0))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return p11g_txn_audit_append(t, rec, NULL, err);
}

static const struct p11g_ident *daemon_actor(struct p11g_ops *o, struct p11g_ident *buf)
{
	memset(buf, 0, sizeof(*buf));
	buf->uid = o->daemon_uid;
	buf->gid = getgid();
	buf->pid = getpid();
	snprintf(buf->user, sizeof(buf->user), "approvald");
	return buf;
}

static json_t *op_keys_uris(const json_t *op)
{
	json_t *uris = json_array(), *k;
	size_t i;
	json_array_foreach(json_object_get(op, "keys"), i, k)
	    json_array_append(uris, json_object_get(k, "uri"));
	return uris;
}

/* ---- transaction plumbing ----------------------------------------------- */

struct txn_ctx {
	struct p11g_ops *o;
	const struct p11g_ident *caller;
	const json_t *args;
	uint64_t id;
	const char *reason;
	const struct p11g_use_args *use;
	json_t *result;   /* replaced on every run of the body */
	uint64_t changed; /* id to notify after commit */
	/* use: a refusal is committed (its audit record) and then reported */
	bool refused;
	p11g_err refusal;
	uint64_t refusal_op;
	bool refusal_noted, refusal_counted; /* refusals.h's verdict, taken once per request */
};

static void ctx_result(struct txn_ctx *c, json_t *result)
{
	json_decref(c->result);
	c->result = result;
}

static int load_op(p11g_txn *t, uint64_t id, json_t **ret, p11g_err *err)
{
	int r = p11g_txn_op_get(t, id, ret, err);
	if (r == -ENOENT)
		return p11g_err_set(err, P11G_E_NOT_FOUND, "no operation %" PRIu64, id);
	return r < 0 ? -1 : 0;
}

static int finish(struct txn_ctx *c, int r, json_t **ret, p11g_err *err)
{
	if (r != 0) {
		ctx_result(c, NULL);
		return -1;
	}
	if (c->changed)
		notify(c->o, c->changed);
	*ret = c->result;
	return 0;
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

/*
 * payloads[i] of a request: the base64 of one cosign simple-signing payload,
 * {"critical": {"identity": {"docker-reference"}, "image":
 * {"docker-manifest-digest"}, "type": "cosign container image signature"},
 * "optional": null or annotations}, with nothing else in it.  The image
 * approvers see: {reference, digest, payload_digest: sha256 of the bytes,
 * annotations?}.
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
	if (!json_is_string(dig) || !manifest_digest_valid(json_string_value(dig)))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payloads[%zu]: docker-manifest-digest must be sha256:<64 "
		                    "lowercase hex digits>",
		                    i);
	if (!annotations_valid(opt))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "payloads[%zu]: optional must be null or an object of plain "
		                    "strings",
		                    i);
	if (!EVP_Digest(buf, (size_t)n, md, NULL, EVP_sha256(), NULL))
		return p11g_err_set(err, P11G_E_INTERNAL, "sha256 failed");
	p11g_hex_encode(md, sizeof(md), hex);
	snprintf(pdigest, sizeof(pdigest), "sha256:%s", hex);
	*ret = json_pack("{s:O, s:O, s:s}", "reference", ref, "digest", dig, "payload_digest",
	                 pdigest);
	if (*ret && json_object_size(opt) &&
	    json_object_set(*ret, "annotations", (json_t *)opt) < 0) {
		json_decref(*ret);
		*ret = NULL;
	}
	return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
}

/* Whether r signs images of ref (registry/repository): yes when it names no
 * registries. */
static bool registry_allowed(const struct p11g_rule *r, const char *ref)
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
				    "rule %s signs only image payloads approvald reads: give them "
				    "in \"payloads\" (ocisign sign --request does)",
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
		for (size_t j = 0; j < n_rules; j++)
			if (!registry_allowed(rules[j], ref))
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
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "digests[%zu]: %s is not the sha256 of a payload given",
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

/* ---- request ----------------------------------------------------------- */

struct count_ctx {
	uid_t uid;
	unsigned n;
};

static int count_pending(uint64_t id, const json_t *op, void *arg)
{
	struct count_ctx *x = arg;
	(void)id;
	if (!strcmp(state_of(op), "pending") &&
	    int_of(json_object_get(op, "orderer"), "uid") == (int64_t)x->uid)
		x->n++;
	return 0;
}

/* The parsed key URIs of one request. */
struct key_uris {
	P11KitUri *v[MAX_KEYS];
	size_t n;
};

static void key_uris_clear(struct key_uris *k)
{
	for (size_t i = 0; i < k->n; i++)
		p11_kit_uri_free(k->v[i]);
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

static int request_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	struct p11g_ops *o = c->o;
	const json_t *args = c->args, *keys = json_object_get(args, "keys"), *k;
	_cleanup_json_ json_t *op_keys = json_array(), *rules = json_object(),
	                      *digests = json_array();
	struct key_uris pats __attribute__((cleanup(key_uris_clear))) = {.n = 0};
	const struct p11g_rule *judged[MAX_KEYS];
	int64_t now = p11g_now();
	bool needs_digest = false, auto_all = true;
	size_t i;

	if (!json_is_array(keys) || json_array_size(keys) == 0 || json_array_size(keys) > MAX_KEYS)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "keys: give 1 to %d keys", MAX_KEYS);

	/* validity */
	const json_t *jvalid = json_object_get(args, "valid");
	int64_t valid = o->limits.default_validity;
	if (jvalid) {
		if (!json_is_integer(jvalid) || json_integer_value(jvalid) < 1 ||
		    json_integer_value(jvalid) > MAX_VALIDITY)
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "valid: a number of seconds from 1 to %lld",
			                    (long long)MAX_VALIDITY);
		valid = json_integer_value(jvalid);
	}

	json_array_foreach(keys, i, k)
	{
		const json_t *juri = json_object_get(k, "uri"), *juses = json_object_get(k, "uses");
		if (!json_is_object(k) || !json_is_string(juri) ||
		    strlen(json_string_value(juri)) > MAX_TEXT)
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "keys[%zu]: needs a \"uri\" string", i);
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
		pats.v[pats.n++] = pat;
		/* What is stored and shown: the pattern judged, without a query (pin-value). */
		_cleanup_free_ char *uri = p11g_keyuri_format(pat);
		if (!uri)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		const struct p11g_rule *rule = NULL;
		if (judge_key(o->policy, pat, uri, &rule, err) < 0)
			return -1;
		/* One count per key: two entries that could name one key would add up
		 * to a number nobody was shown, past the rule's max_uses. */
		for (size_t j = 0; j + 1 < pats.n; j++) {
			if (!p11g_keyuri_overlap(pats.v[j], pat))
				continue;
			const json_t *prev = json_object_get(json_array_get(op_keys, j), "uri");
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "key %s could name the same key as %s: "
			                    "name each key once, with all its uses",
			                    uri, json_string_value(prev));
		}
		if (!p11g_rule_may_order(rule, c->caller))
			return p11g_err_set(err, P11G_E_NOT_ORDERER,
			                    "%s (uid %u) may not order uses of %s (rule %s)",
			                    c->caller->user[0] ? c->caller->user : "this user",
			                    (unsigned)c->caller->uid, uri, rule->name);
		if (rule->max_uses && (uint64_t)uses > rule->max_uses)
			return p11g_err_set(
			    err, P11G_E_LIMIT, "%s: %lld uses asked, rule %s allows at most %llu",
			    uri, (long long)uses, rule->name, (unsigned long long)rule->max_uses);
		if (rule->max_validity && (uint64_t)valid > rule->max_validity) {
			if (jvalid)
				return p11g_err_set(
				    err, P11G_E_LIMIT,
				    "validity of %llds asked, rule %s allows at most %llus",
				    (long long)valid, rule->name,
				    (unsigned long long)rule->max_validity);
			valid = (int64_t)rule->max_validity; /* the default shrinks to fit */
		}
		judged[i] = rule;
		needs_digest |= rule->bind_digest;
		auto_all &= p11g_rule_auto_approves(rule, c->caller);
		if (!json_object_get(rules, rule->name))
			json_object_set_new(rules, rule->name, p11g_rule_to_json(rule));
		json_array_append_new(op_keys,
		                      json_pack("{s:s, s:s, s:I, s:i}", "uri", uri, "rule",
		                                rule->name, "uses", (json_int_t)uses, "used", 0));
	}

	/* texts */
	const json_t *jdesc = json_object_get(args, "description"),
	             *jctx = json_object_get(args, "context");
	if ((jdesc && (!json_is_string(jdesc) || strlen(json_string_value(jdesc)) > MAX_TEXT)) ||
	    (jctx && (!json_is_string(jctx) || strlen(json_string_value(jctx)) > MAX_CONTEXT)))
		return p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "description (at most %d bytes) and context (at most %d) are strings", MAX_TEXT,
		    MAX_CONTEXT);

	/* pinned digests */
	const json_t *jdig = json_object_get(args, "digests"), *d;
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
		json_array_append_new(digests, json_string(norm));
	}
	/* OCI: the images, from their payloads */
	_cleanup_json_ json_t *images = NULL;
	if (request_images(args, judged, json_array_size(keys), digests, &images, err) < 0)
		return -1;
	if (needs_digest && json_array_size(digests) == 0)
		return p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "a rule of these keys binds digests: give the digests to be signed (--digest)");

	/* signer */
	char *signer = NULL;
	const json_t *jfor = json_object_get(args, "for");
	if (jfor) {
		struct p11g_principal p;
		if (!json_is_string(jfor) ||
		    p11g_principal_parse(json_string_value(jfor), &p, err) < 0)
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "for: expected user:NAME, group:NAME or uid:N");
		signer = p11g_principal_to_string(&p);
		p11g_principal_clear(&p);
	} else if (asprintf(&signer, "uid:%u", (unsigned)c->caller->uid) < 0) {
		signer = NULL;
	}
	_cleanup_free_ char *signer_s = signer;
	if (!signer_s)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");

	/* a quota per orderer: pending requests are a resource the client controls */
	struct count_ctx cc = {c->caller->uid, 0};
	if (p11g_txn_op_foreach(t, true, 0, count_pending, &cc, err) < 0)
		return -1;
	if (!auto_all && cc.n >= o->limits.max_pending_per_user)
		return p11g_err_set(
		    err, P11G_E_LIMIT,
		    "you have %u pending requests, the most allowed; withdraw or wait", cc.n);

	uint64_t id;
	if (p11g_txn_next_id(t, &id, err) < 0)
		return -1;
	json_t *orderer = p11g_ident_to_json(c->caller);
	json_object_set_new(orderer, "pid", json_integer(c->caller->pid));
	_cleanup_json_ json_t *op = json_pack(
	    "{s:I, s:s, s:o, s:s, s:I, s:I, s:s, s:s, s:O, s:O, s:O, s:[]}", "id", (json_int_t)id,
	    "state", auto_all ? "approved" : "pending", "orderer", orderer, "signer", signer_s,
	    "created", (json_int_t)now, "expires", (json_int_t)(now + valid), "description",
	    jdesc ? json_string_value(jdesc) : "", "context", jctx ? json_string_value(jctx) : "",
	    "digests", digests, "keys", op_keys, "rules", rules, "approvals");
	if (!op)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	const json_t *oci = json_object_get(args, "oci");
	if ((oci && json_object_set(op, "oci", (json_t *)oci) < 0) ||
	    (images && json_object_set(op, "images", images) < 0))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (p11g_txn_op_put(t, id, op, err) < 0)
		return -1;
	if (audit(t, "created", c->caller, id,
	          json_pack("{s:o, s:s, s:I, s:O, s:s, s:O*}", "keys", op_keys_uris(op), "signer",
	                    signer_s, "expires", (json_int_t)(now + valid), "digests", digests,
	                    "description", jdesc ? json_string_value(jdesc) : "", "images", images),
	          err) < 0)
		return -1;
	if (auto_all &&
	    audit(t, "approved", c->caller, id,
	          json_pack("{s:s, s:s}", "state", "approved", "by", "policy"), err) < 0)
		return -1;
	ctx_result(c, op_public(op));
	c->changed = id;
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
	struct txn_ctx c = {.o = o, .caller = caller, .args = args};
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
	int r = finish(&c, p11g_store_write(o->store, request_body, &c, err), ret_op, err);
	if (r == 0 && b) {
		b->n++;
		b->bytes += bytes;
	}
	return r;
}

/* ---- decisions ----------------------------------------------------------- */

/* The checks every decision on a pending operation shares. */
static int check_pending(const json_t *op, uint64_t id, int64_t now, p11g_err *err)
{
	const char *s = state_of(op);
	if (!strcmp(s, "expired") || (is_active(s) && now >= int_of(op, "expires")))
		return p11g_err_set(err, P11G_E_EXPIRED, "operation %" PRIu64 " has expired", id);
	if (strcmp(s, "pending"))
		return p11g_err_set(err, P11G_E_ALREADY_DECIDED,
		                    "operation %" PRIu64 " is already %s", id, s);
	return 0;
}

static int check_approver(struct p11g_ops *o, const json_t *op, const struct p11g_ident *caller,
                          uint64_t id, p11g_err *err)
{
	if (is_orderer(op, caller) || signer_matches(op, caller))
		return p11g_err_set(err, P11G_E_SELF_APPROVAL,
		                    "you ordered operation %" PRIu64
		                    " or will sign with it: someone else must decide on it",
		                    id);
	if (!op_any_rule(op, caller, PRED_MAY_APPROVE))
		return p11g_err_set(err, P11G_E_NOT_APPROVER,
		                    "%s (uid %u) is not an approver for operation %" PRIu64,
		                    caller->user[0] ? caller->user : "this user",
		                    (unsigned)caller->uid, id);
	(void)o;
	return 0;
}

static int approve_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	_cleanup_json_ json_t *op = NULL;
	int64_t now = p11g_now();
	bool met = false;
	char missing[300];

	if (load_op(t, c->id, &op, err) < 0)
		return -1;
	if (check_approver(c->o, op, c->caller, c->id, err) < 0 ||
	    check_pending(op, c->id, now, err) < 0)
		return -1;
	if (has_approved(op, c->caller->uid))
		return p11g_err_set(
		    err, P11G_E_ALREADY_APPROVED,
		    "you already approved operation %" PRIu64 "; each person counts once", c->id);
	json_t *a = p11g_ident_to_json(c->caller);
	json_object_set_new(a, "time", json_integer(now));
	json_array_append_new(json_object_get(op, "approvals"), a);
	if (op_quorum(op, &met, missing, sizeof(missing), err) < 0)
		return -1;
	if (met)
		json_object_set_new(op, "state", json_string("approved"));
	if (p11g_txn_op_put(t, c->id, op, err) < 0 ||
	    audit(t, "approved", c->caller, c->id,
	          json_pack("{s:s}", "state", met ? "approved" : "pending"), err) < 0)
		return -1;
	ctx_result(c, op_public(op));
	c->changed = c->id;
	return 0;
}

int p11g_ops_approve(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                     json_t **ret_op, p11g_err *err)
{
	struct txn_ctx c = {.o = o, .caller = caller, .id = id};
	return finish(&c, p11g_store_write(o->store, approve_body, &c, err), ret_op, err);
}

static int reject_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	_cleanup_json_ json_t *op = NULL;
	int64_t now = p11g_now();

	if (load_op(t, c->id, &op, err) < 0)
		return -1;
	if (check_approver(c->o, op, c->caller, c->id, err) < 0 ||
	    check_pending(op, c->id, now, err) < 0)
		return -1;
	json_t *rej = actor_json(c->caller);
	json_object_set_new(rej, "time", json_integer(now));
	json_object_set_new(rej, "reason", json_string(c->reason));
	json_object_set_new(op, "rejection", rej);
	json_object_set_new(op, "state", json_string("rejected"));
	if (p11g_txn_op_put(t, c->id, op, err) < 0 ||
	    audit(t, "rejected", c->caller, c->id, json_pack("{s:s}", "reason", c->reason), err) <
	        0)
		return -1;
	ctx_result(c, op_public(op));
	c->changed = c->id;
	return 0;
}

int p11g_ops_reject(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                    const char *reason, json_t **ret_op, p11g_err *err)
{
	struct txn_ctx c = {.o = o, .caller = caller, .id = id, .reason = reason};
	return finish(&c, p11g_store_write(o->store, reject_body, &c, err), ret_op, err);
}

static int64_t op_uses_made(const json_t *op)
{
	int64_t n = 0;
	size_t i;
	json_t *k;
	json_array_foreach(json_object_get(op, "keys"), i, k) n += int_of(k, "used");
	return n;
}

static int withdraw_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	_cleanup_json_ json_t *op = NULL;
	int64_t now = p11g_now();
	bool met = false;
	char missing[300];

	if (load_op(t, c->id, &op, err) < 0)
		return -1;
	json_t *apv = json_object_get(op, "approvals"), *a;
	size_t i, at = (size_t)-1;
	json_array_foreach(apv, i, a) if (int_of(a, "uid") == (int64_t)c->caller->uid) at = i;
	if (at == (size_t)-1)
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "you have no approval on operation %" PRIu64 " to withdraw",
		                    c->id);
	if (op_uses_made(op) > 0)
		return p11g_err_set(err, P11G_E_ALREADY_USED,
		                    "operation %" PRIu64
		                    " has been used: an approval cannot be withdrawn after a use "
		                    "(revoke it instead)",
		                    c->id);
	const char *s = effective_state(op, now);
	if (!is_active(s))
		return p11g_err_set(err, P11G_E_ALREADY_DECIDED,
		                    "operation %" PRIu64 " is already %s", c->id, s);
	json_array_remove(apv, at);
	if (op_quorum(op, &met, missing, sizeof(missing), err) < 0)
		return -1;
	json_object_set_new(op, "state", json_string(met ? "approved" : "pending"));
	if (p11g_txn_op_put(t, c->id, op, err) < 0 ||
	    audit(t, "withdrawn", c->caller, c->id,
	          json_pack("{s:s}", "state", met ? "approved" : "pending"), err) < 0)
		return -1;
	ctx_result(c, op_public(op));
	c->changed = c->id;
	return 0;
}

int p11g_ops_withdraw(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                      json_t **ret_op, p11g_err *err)
{
	struct txn_ctx c = {.o = o, .caller = caller, .id = id};
	return finish(&c, p11g_store_write(o->store, withdraw_body, &c, err), ret_op, err);
}

static int revoke_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	_cleanup_json_ json_t *op = NULL;
	int64_t now = p11g_now();

	if (load_op(t, c->id, &op, err) < 0)
		return -1;
	if (!is_orderer(op, c->caller) && !op_any_rule(op, c->caller, PRED_IS_ADMIN))
		return p11g_err_set(
		    err, P11G_E_FORBIDDEN,
		    "only the orderer or an admin of its keys may revoke operation %" PRIu64,
		    c->id);
	const char *s = effective_state(op, now);
	if (!is_active(s))
		return p11g_err_set(err, P11G_E_ALREADY_DECIDED,
		                    "operation %" PRIu64 " is already %s", c->id, s);
	json_t *rev = actor_json(c->caller);
	json_object_set_new(rev, "time", json_integer(now));
	json_object_set_new(rev, "reason", json_string(c->reason ? c->reason : ""));
	json_object_set_new(op, "revocation", rev);
	json_object_set_new(op, "state", json_string("revoked"));
	if (p11g_txn_op_put(t, c->id, op, err) < 0 ||
	    audit(t, "revoked", c->caller, c->id,
	          json_pack("{s:s}", "reason", c->reason ? c->reason : ""), err) < 0)
		return -1;
	ctx_result(c, op_public(op));
	c->changed = c->id;
	return 0;
}

int p11g_ops_revoke(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                    const char *reason, json_t **ret_op, p11g_err *err)
{
	struct txn_ctx c = {.o = o, .caller = caller, .id = id, .reason = reason};
	return finish(&c, p11g_store_write(o->store, revoke_body, &c, err), ret_op, err);
}

/* ---- use --------------------------------------------------------------- */

static bool uri_matches(const char *uri, const struct p11g_keyid *k)
{
	P11KitUri *u = p11_kit_uri_new();
	bool m = u &&
	         p11_kit_uri_parse(uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, u) == P11_KIT_URI_OK &&
	         p11g_keyid_matches(k, u);
	if (u)
		p11_kit_uri_free(u);
	return m;
}

/* Refusal reasons, most telling first: the one a person can act on. */
enum refusal {
	REF_NONE,
	REF_OTHER_RULE, /* its entry for the key was judged under another rule */
	REF_NOT_SIGNER,
	REF_REVOKED,
	REF_REJECTED,
	REF_EXPIRED,
	REF_EXHAUSTED,
	REF_PENDING,
	REF_RAW,
	REF_MECHANISM,
	REF_DIGEST,
	REF_IMAGE, /* a rule with registries, and no payload of one of its images with the digest */
	REF_DAMAGED, /* its rule snapshot cannot be read back */
};

struct use_scan {
	struct p11g_ops *o;
	const struct p11g_use_args *a;
	const struct p11g_ident *caller;
	const struct p11g_mech_info *mech;
	const struct p11g_rule *rule; /* the policy's rule for the key, now */
	int64_t now;
	/* best candidate */
	uint64_t best_id;
	int64_t best_expires;
	size_t best_key;
	json_t *best_op; /* as read in this transaction (read only, the store may share it) */
	/* best refusal */
	enum refusal why;
	uint64_t why_id;
	char why_rule[65]; /* for REF_OTHER_RULE: the rule the operation's entry was judged under */
	p11g_err damaged;  /* why, for REF_DAMAGED (op_rule fills it) */
	bool signer_seen;  /* the caller signs for an operation of the key */
};

static void scan_done(struct use_scan *s)
{
	json_decref(s->best_op);
}

static void note(struct use_scan *s, enum refusal r, uint64_t id)
{
	if (r > s->why) {
		s->why = r;
		s->why_id = id;
	}
}

/* An operation whose entry for the key was judged under another rule, or
 * under an older version of the key's rule that did not cover the key. */
static void note_other_rule(struct use_scan *s, uint64_t id, const char *rule)
{
	if (s->why < REF_OTHER_RULE) {
		note(s, REF_OTHER_RULE, id);
		snprintf(s->why_rule, sizeof(s->why_rule), "%s", rule ? rule : "");
	}
}

/*
 * The key entry of op this use may spend: its URI names the key and it was
 * judged under rule, the one that governs the key now (the first with uses
 * left, if several).  -1 when none; then *ret_other is the rule of an entry
 * whose URI names the key under another rule, or NULL.
 */
static ssize_t op_key_index(const json_t *op, const struct p11g_keyid *k, const char *rule,
                            const char **ret_other)
{
	ssize_t found = -1;
	size_t i;
	json_t *e;

	*ret_other = NULL;
	json_array_foreach(json_object_get(op, "keys"), i, e)
	{
		const char *r = json_string_value(json_object_get(e, "rule"));
		if (!uri_matches(json_string_value(json_object_get(e, "uri")), k))
			continue;
		if (!r || strcmp(r, rule)) {
			*ret_other = r;
			continue;
		}
		if (int_of(e, "used") < int_of(e, "uses"))
			return (ssize_t)i;
		if (found < 0)
			found = (ssize_t)i;
	}
	return found;
}

/* A rule with registries signs only the payloads approvald read for the
 * operation (its images), of images in a registry the rule names. */
static bool image_signs(const json_t *op, const struct p11g_rule *r, const char *digest)
{
	size_t i;
	json_t *img;
	if (r->n_registries == 0)
		return true;
	json_array_foreach(json_object_get(op, "images"), i, img)
	{
		const char *pd = json_string_value(json_object_get(img, "payload_digest"));
		const char *ref = json_string_value(json_object_get(img, "reference"));
		if (digest && pd && ref && !strcmp(pd, digest) && registry_allowed(r, ref))
			return true;
	}
	return false;
}

static int scan_visit(uint64_t id, const json_t *op, void *arg)
{
	struct use_scan *s = arg;
	const char *state = state_of(op);

	if (s->a->operation && id != s->a->operation)
		return 0;
	const char *other;
	ssize_t ki = op_key_index(op, &s->a->key, s->rule->name, &other);
	if (ki < 0) {
		if (other)
			note_other_rule(s, id, other);
		return 0;
	}
	if (!signer_matches(op, s->caller)) {
		note(s, REF_NOT_SIGNER, id);
		return 0;
	}
	s->signer_seen = true;
	if (!strcmp(state, "revoked")) {
		note(s, REF_REVOKED, id);
		return 0;
	}
	if (!strcmp(state, "rejected")) {
		note(s, REF_REJECTED, id);
		return 0;
	}
	if (!strcmp(state, "expired") || (is_active(state) && s->now >= int_of(op, "expires"))) {
		note(s, REF_EXPIRED, id);
		return 0;
	}
	json_t *key = json_array_get(json_object_get(op, "keys"), (size_t)ki);
	if (!strcmp(state, "exhausted") || int_of(key, "used") >= int_of(key, "uses")) {
		note(s, REF_EXHAUSTED, id);
		return 0;
	}
	if (!strcmp(state, "pending")) {
		note(s, REF_PENDING, id);
		return 0;
	}
	if (strcmp(state, "approved"))
		return 0;
	const struct p11g_rule *rule =
	    op_rule(s->o, op, json_string_value(json_object_get(key, "rule")), &s->damaged);
	if (!rule) {
		/* Never used, and never silently: the admin must hear of it even
		 * when another operation answers this use.  The highest refusal:
		 * the last such operation is the one named, with its reason. */
		p11g_error("operation %" PRIu64 " cannot be used: %s", id, s->damaged.msg);
		s->why = REF_DAMAGED;
		s->why_id = id;
		return 0;
	}
	/* The rule as it was approved must cover the key too: its keys may have
	 * grown since, and approvers judged the operation by those it had. */
	if (!p11g_rule_covers(rule, &s->a->key)) {
		note_other_rule(s, id, rule->name);
		return 0;
	}
	if ((s->mech->family == P11G_MECH_RAW || s->a->raw) && !rule->allow_raw) {
		note(s, REF_RAW, id);
		return 0;
	}
	if (!p11g_rule_allows_mechanism(rule, s->a->mechanism)) {
		note(s, REF_MECHANISM, id);
		return 0;
	}
	const json_t *digests = json_object_get(op, "digests");
	if (json_array_size(digests) > 0 || rule->bind_digest) {
		bool found = false;
		size_t i;
		json_t *d;
		json_array_foreach(digests, i, d) found |=
		    s->a->digest && !strcmp(json_string_value(d), s->a->digest);
		if (!found) {
			note(s, REF_DIGEST, id);
			return 0;
		}
	}
	/* The rule as approved and the rule now: either may name registries. */
	if (!image_signs(op, rule, s->a->digest) || !image_signs(op, s->rule, s->a->digest)) {
		note(s, REF_IMAGE, id);
		return 0;
	}
	/* Spend the operation that ends soonest first. */
	int64_t exp = int_of(op, "expires");
	if (!s->best_id || exp < s->best_expires) {
		s->best_id = id;
		s->best_expires = exp;
		s->best_key = (size_t)ki;
		json_decref(s->best_op);
		s->best_op = json_incref((json_t *)op); /* kept unchanged: it may be shared */
	}
	return 0;
}

static const char *refusal_code(enum refusal r)
{
	switch (r) {
	case REF_OTHER_RULE:
		return P11G_E_NO_OPERATION;
	case REF_NOT_SIGNER:
		return P11G_E_NOT_SIGNER;
	case REF_REVOKED:
		return P11G_E_REVOKED;
	case REF_REJECTED:
		return P11G_E_REJECTED;
	case REF_EXPIRED:
		return P11G_E_EXPIRED;
	case REF_EXHAUSTED:
		return P11G_E_EXHAUSTED;
	case REF_PENDING:
		return P11G_E_PENDING;
	case REF_RAW:
		return P11G_E_RAW;
	case REF_MECHANISM:
		return P11G_E_MECHANISM;
	case REF_DIGEST:
		return P11G_E_DIGEST_MISMATCH;
	case REF_IMAGE:
		return P11G_E_REGISTRY;
	case REF_DAMAGED:
		return P11G_E_INTERNAL;
	case REF_NONE:
		break;
	}
	return P11G_E_NO_OPERATION;
}

static void refusal_message(struct use_scan *s, const char *uri, p11g_err *err)
{
	uint64_t id = s->why_id;
	const char *code = refusal_code(s->why);
	switch (s->why) {
	case REF_OTHER_RULE:
		if (!strcmp(s->why_rule, s->rule->name))
			p11g_err_set(
			    err, code,
			    "operation %" PRIu64 " was approved under an earlier version of "
			    "rule %s, which did not cover %s; request one: approvald request "
			    "--key '%s'",
			    id, s->why_rule, uri, uri);
		else
			p11g_err_set(err, code,
			             "operation %" PRIu64
			             " was approved under rule %s, but rule %s "
			             "governs %s; request one: approvald request --key '%s'",
			             id, s->why_rule, s->rule->name, uri, uri);
		break;
	case REF_NOT_SIGNER:
		p11g_err_set(err, code, "operation %" PRIu64 " for %s names another signer", id,
		             uri);
		break;
	case REF_REVOKED:
		p11g_err_set(err, code,
		             "operation %" PRIu64 " for %s was revoked; request a new one", id,
		             uri);
		break;
	case REF_REJECTED:
		p11g_err_set(err, code, "operation %" PRIu64 " for %s was rejected", id, uri);
		break;
	case REF_EXPIRED:
		p11g_err_set(err, code,
		             "operation %" PRIu64 " for %s has expired; request a new one", id,
		             uri);
		break;
	case REF_EXHAUSTED:
		p11g_err_set(err, code,
		             "operation %" PRIu64 " has no uses of %s left; request a new one", id,
		             uri);
		break;
	case REF_PENDING:
		p11g_err_set(err, code,
		             "operation %" PRIu64
		             " for %s is waiting for approval (approvald show %" PRIu64 ")",
		             id, uri, id);
		break;
	case REF_RAW:
		p11g_err_set(err, code, "raw use of %s is not allowed by its rule", uri);
		break;
	case REF_MECHANISM:
		p11g_err_set(err, code, "mechanism %s is not allowed for %s by its rule",
		             s->mech->name, uri);
		break;
	case REF_DIGEST:
		p11g_err_set(err, code, "digest %s is not one operation %" PRIu64 " pinned for %s",
		             s->a->digest ? s->a->digest : "(none)", id, uri);
		break;
	case REF_IMAGE:
		p11g_err_set(err, code,
		             "operation %" PRIu64 " holds no payload with digest %s of an image in "
		             "a registry the rule of %s names (such a rule signs only payloads "
		             "approvald read: ocisign sign --request)",
		             id, s->a->digest ? s->a->digest : "(none)", uri);
		break;
	case REF_DAMAGED:
		p11g_err_set(err, code,
		             "operation %" PRIu64
		             " for %s cannot be used: %s (see approvald's log)",
		             id, uri, s->damaged.msg);
		break;
	case REF_NONE:
		p11g_err_set(
		    err, code,
		    "no approved operation for %s; request one: approvald request --key '%s'", uri,
		    uri);
		break;
	}
}

/* The ended operations worth a look when nothing usable was found: the newest. */
static int scan_recent(p11g_txn *t, struct use_scan *s, p11g_err *err)
{
	uint64_t last = 0;
	if (p11g_txn_last_id(t, &last, err) < 0)
		return -1;
	return p11g_txn_op_foreach(t, false, last > RECENT_ENDED ? last - RECENT_ENDED : 0,
	                           scan_visit, s, err);
}

/*
 * Whether the caller has a part in the key's rule: it may order, approve or administer, or
 * it signs for one of the key's operations (s->signer_seen, from the walk).  Root and
 * approvald's own uid always do.  Refusals of callers without one are written in bounded
 * number (refusals.h), and cost no walk of ended operations.
 */
static bool has_role(const struct p11g_ops *o, const struct p11g_rule *rule,
                     const struct p11g_ident *caller, bool signer_seen)
{
	return caller->uid == 0 || caller->uid == o->daemon_uid || signer_seen ||
	       (rule && (p11g_rule_may_order(rule, caller) || p11g_rule_may_approve(rule, caller) ||
	                 p11g_rule_is_admin(rule, caller)));
}

/* Records a refusal in the same transaction that found it, or counts it into the record of
 * its kind that the sweep writes when its minute is over (refusals.h). */
static int refuse(p11g_txn *t, struct txn_ctx *c, json_t *what, bool role, p11g_err *err)
{
	struct p11g_ops *o = c->o;
	const char *key = json_string_value(json_object_get(what, "key"));

	if (!o->refusals)
		o->refusals = p11g_refusals_new();
	/* Noted once per request: the store may run this body again (a map that grew), and the
	 * second run must write what the first decided, not count the refusal twice. */
	if (!c->refusal_noted && o->refusals && key) {
		c->refusal_counted =
		    p11g_refusals_note(o->refusals, c->caller->uid, c->caller->gid, key,
		                       c->refusal.code, role, p11g_now()) == P11G_REFUSAL_COUNTED;
		c->refusal_noted = true;
	}
	if (c->refusal_counted) {
		c->refused = true;
		return 0;
	}
	json_t *rec = json_deep_copy(what);
	if (rec && (json_object_set_new(rec, "reason", json_string(c->refusal.code)) < 0 ||
	            json_object_set_new(rec, "message", json_string(c->refusal.msg)) < 0)) {
		json_decref(rec);
		rec = NULL;
	}
	if (audit(t, "use_refused", c->caller, c->refusal_op, rec, err) < 0)
		return -1;
	c->refused = true;
	return 0;
}

static bool implicit_allowed(const struct p11g_rule *rule, const struct use_scan *s)
{
	const struct p11g_use_args *a = s->a;
	/* A pending operation for the key holds its uses until it is decided. */
	return !s->best_id && s->why != REF_PENDING && p11g_rule_may_order(rule, s->caller) &&
	       p11g_rule_auto_approves(rule, s->caller) && !rule->bind_digest &&
	       rule->n_registries == 0 &&
	       ((s->mech->family != P11G_MECH_RAW && !a->raw) || rule->allow_raw) &&
	       p11g_rule_allows_mechanism(rule, a->mechanism);
}

/* A rule that needs no approvals: a one-use operation created, approved and
 * consumed at once, every step audited. */
static int use_implicit(p11g_txn *t, struct txn_ctx *c, const struct p11g_rule *rule,
                        const char *uri, json_t *what, p11g_err *err)
{
	uint64_t id;
	int64_t now = p11g_now();
	char signer[32];

	if (p11g_txn_next_id(t, &id, err) < 0)
		return -1;
	snprintf(signer, sizeof(signer), "uid:%u", (unsigned)c->caller->uid);
	json_t *rules = json_object();
	json_object_set_new(rules, rule->name, p11g_rule_to_json(rule));
	_cleanup_json_ json_t *op = json_pack(
	    "{s:I, s:s, s:o, s:s, s:I, s:I, s:s, s:s, s:[], s:[{s:s, s:s, s:i, s:i}], s:o, s:[], "
	    "s:b}",
	    "id", (json_int_t)id, "state", "exhausted", "orderer", p11g_ident_to_json(c->caller),
	    "signer", signer, "created", (json_int_t)now, "expires", (json_int_t)now, "description",
	    "implicit single use", "context", "", "digests", "keys", "uri", uri, "rule", rule->name,
	    "uses", 1, "used", 1, "rules", rules, "approvals", "implicit", 1);
	if (!op)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	json_t *granted = json_deep_copy(what);
	json_object_set_new(granted, "implicit", json_true());
	if (p11g_txn_op_put(t, id, op, err) < 0 ||
	    audit(t, "created", c->caller, id,
	          json_pack("{s:[s], s:s, s:b}", "keys", uri, "signer", signer, "implicit", 1),
	          err) < 0 ||
	    audit(t, "approved", c->caller, id,
	          json_pack("{s:s, s:s}", "state", "approved", "by", "policy"), err) < 0 ||
	    audit(t, "use_granted", c->caller, id, granted, err) < 0)
		return -1;
	ctx_result(c, json_pack("{s:I, s:i, s:b}", "operation", (json_int_t)id, "remaining", 0,
	                        "implicit", 1));
	return 0;
}

static int use_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	struct p11g_ops *o = c->o;
	const struct p11g_use_args *a = c->use;
	_cleanup_free_ char *uri = p11g_keyid_to_uri(&a->key);
	struct use_scan s __attribute__((cleanup(scan_done))) = {
	    .o = o, .a = a, .caller = c->caller, .now = p11g_now()};

	c->refused = false;
	c->refusal_op = 0;
	if (!uri)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	s.mech = p11g_mech_by_type(a->mechanism);
	const struct p11g_rule *rule = p11g_policy_match(o->policy, &a->key);
	if (!rule && o->policy->default_allow) {
		ctx_result(c, json_pack("{s:b}", "guarded", 0));
		return 0;
	}
	_cleanup_json_ json_t *what =
	    json_pack("{s:s, s:s, s:s}", "key", uri, "mechanism", s.mech ? s.mech->name : "unknown",
	              "digest", a->digest ? a->digest : "");
	/* Which key object signed: two keys under one name never leave the same record. */
	if (!what ||
	    (a->key.fingerprint[0] &&
	     json_object_set_new(what, "key_fingerprint", json_string(a->key.fingerprint)) < 0))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (!rule) {
		p11g_err_set(&c->refusal, P11G_E_DENIED_DEFAULT,
		             "no policy rule covers %s and the default is deny", uri);
		return refuse(t, c, what, has_role(o, NULL, c->caller, false), err);
	}
	s.rule = rule;
	if (!s.mech) {
		p11g_err_set(&c->refusal, P11G_E_MECHANISM,
		             "mechanism 0x%lx is not a signing mechanism p11gate knows",
		             (unsigned long)a->mechanism);
		return refuse(t, c, what, has_role(o, rule, c->caller, false), err);
	}

	/* The current rule's word on raw use stands whatever older operations allowed. */
	if ((s.mech->family == P11G_MECH_RAW || a->raw) && !rule->allow_raw) {
		p11g_err_set(&c->refusal, P11G_E_RAW,
		             "raw use of %s (%s) is not allowed by rule %s", uri, s.mech->name,
		             rule->name);
		return refuse(t, c, what, has_role(o, rule, c->caller, false), err);
	}
	if (p11g_txn_op_foreach(t, true, 0, scan_visit, &s, err) < 0)
		return -1;
	if (!s.best_id && p11g_rule_auto_approves(rule, c->caller) &&
	    !p11g_rule_allows_mechanism(rule, a->mechanism))
		note(&s, REF_MECHANISM, 0);
	if (implicit_allowed(rule, &s))
		return use_implicit(t, c, rule, uri, what, err);
	bool role = has_role(o, rule, c->caller, s.signer_seen);
	/* The ended operations explain a refusal to those who had a part in them; walking
	 * them for anyone else would let any uid make every refusal cost a thousand reads, and
	 * so would a uid with a role past its allowance of refusals written one by one. */
	if (!s.best_id && s.why <= REF_NOT_SIGNER && role &&
	    (!o->refusals || p11g_refusals_allowance_left(o->refusals, c->caller->uid, s.now)) &&
	    scan_recent(t, &s, err) < 0)
		return -1;
	if (!s.best_id) {
		refusal_message(&s, uri, &c->refusal);
		c->refusal_op = s.why_id;
		return refuse(t, c, what, role, err);
	}

	/* What was read may be the store's shared copy: the spent operation is a
	 * new object that shares what the use does not change. */
	_cleanup_json_ json_t *op = json_copy(s.best_op);
	json_t *keys = json_copy(json_object_get(s.best_op, "keys")), *k;
	/* Both _set_new calls take their value even when they fail. */
	if (json_object_set_new(op, "keys", keys) < 0 ||
	    json_array_set_new(keys, s.best_key, json_copy(json_array_get(keys, s.best_key))) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	json_t *key = json_array_get(keys, s.best_key);
	int64_t used = int_of(key, "used") + 1, uses = int_of(key, "uses"), left_total = 0;
	size_t i;
	/* A use that is not counted must not be granted. */
	if (json_object_set_new(key, "used", json_integer(used)) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	json_array_foreach(keys, i, k) left_total += int_of(k, "uses") - int_of(k, "used");
	if (left_total == 0 && json_object_set_new(op, "state", json_string("exhausted")) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (p11g_txn_op_put_shared(t, s.best_id, op, err) < 0 ||
	    audit(t, "use_granted", c->caller, s.best_id, json_incref(what), err) < 0)
		return -1;
	ctx_result(c, json_pack("{s:I, s:I}", "operation", (json_int_t)s.best_id, "remaining",
	                        (json_int_t)(uses - used)));
	if (left_total == 0)
		c->changed = s.best_id;
	return 0;
}

int p11g_ops_use(struct p11g_ops *o, const struct p11g_ident *caller,
                 const struct p11g_use_args *args, json_t **ret_result, p11g_err *err)
{
	struct txn_ctx c = {.o = o, .caller = caller, .use = args};
	int r = p11g_store_write(o->store, use_body, &c, err);
	if (r == 0 && c.refused) {
		*err = c.refusal;
		r = -1;
	}
	return finish(&c, r, ret_result, err);
}

json_t *p11g_ops_key_info(struct p11g_ops *o, const struct p11g_keyid *key)
{
	const struct p11g_rule *rule = p11g_policy_match(o->policy, key);
	if (!rule)
		return json_pack("{s:b, s:b, s:b}", "guarded", !o->policy->default_allow,
		                 "allow_raw", 0, "default", 1);
	json_t *mechs = json_array();
	for (size_t i = 0; i < rule->n_mechanisms; i++) {
		const struct p11g_mech_info *m = p11g_mech_by_type(rule->mechanisms[i]);
		if (m)
			json_array_append_new(mechs, json_string(m->name));
	}
	return json_pack("{s:b, s:s, s:b, s:b, s:o}", "guarded", 1, "rule", rule->name, "allow_raw",
	                 rule->allow_raw, "bind_digest", rule->bind_digest, "mechanisms", mechs);
}

/* ---- read-only views ------------------------------------------------------ */

struct read_ctx {
	struct p11g_ops *o;
	const struct p11g_ident *caller;
	uint64_t id;
	const struct p11g_list_args *list;
	json_t *out;
	unsigned n;
	size_t bytes; /* encoded size so far: a reply must fit in one frame */
	bool more;
	uint64_t since;
	unsigned limit;
};

static int show_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct read_ctx *c = arg;
	_cleanup_json_ json_t *op = NULL;
	if (load_op(t, c->id, &op, err) < 0)
		return -1;
	if (!p11g_ops_visible(c->o, c->caller, op))
		return p11g_err_set(err, P11G_E_NOT_FOUND, "no operation %" PRIu64, c->id);
	c->out = op_public(op);
	return 0;
}

int p11g_ops_show(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id, json_t **ret_op,
                  p11g_err *err)
{
	struct read_ctx c = {.o = o, .caller = caller, .id = id};
	if (p11g_store_read(o->store, show_body, &c, err) != 0) {
		json_decref(c.out);
		return -1;
	}
	*ret_op = c.out;
	return 0;
}

static int list_visit(uint64_t id, const json_t *op, void *arg)
{
	struct read_ctx *c = arg;
	const struct p11g_list_args *a = c->list;
	int64_t now = p11g_now();
	(void)id;

	if (a->all) {
		if (!p11g_ops_visible(c->o, c->caller, op))
			return 0;
		if (a->state && strcmp(a->state, effective_state(op, now)))
			return 0;
	} else {
		/* What waits for the caller's decision. */
		if (strcmp(effective_state(op, now), a->state ? a->state : "pending"))
			return 0;
		if (!a->state || !strcmp(a->state, "pending")) {
			if (is_orderer(op, c->caller) || signer_matches(op, c->caller) ||
			    has_approved(op, c->caller->uid) ||
			    !op_any_rule(op, c->caller, PRED_MAY_APPROVE))
				return 0;
		} else if (!p11g_ops_visible(c->o, c->caller, op)) {
			return 0;
		}
	}
	json_t *pub = op_public(op);
	size_t sz = json_dumpb(pub, NULL, 0, JSON_COMPACT);
	if (c->n == c->list->limit || (c->n && c->bytes + sz > REPLY_BUDGET)) {
		json_decref(pub);
		c->more = true;
		return 1;
	}
	json_array_append_new(c->out, pub);
	c->bytes += sz + 1;
	c->n++;
	return 0;
}

static int list_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct read_ctx *c = arg;
	const struct p11g_list_args *a = c->list;
	/* Only pending and approved operations live in the index; the rest need a full walk. */
	bool active_only = (!a->all && (!a->state || !strcmp(a->state, "pending"))) ||
	                   (a->state && is_active(a->state));
	return p11g_txn_op_foreach(t, active_only, a->after, list_visit, c, err) < 0 ? -1 : 0;
}

int p11g_ops_list(struct p11g_ops *o, const struct p11g_ident *caller,
                  const struct p11g_list_args *args, json_t **ret_result, p11g_err *err)
{
	struct read_ctx c = {.o = o, .caller = caller, .list = args, .out = json_array()};
	if (p11g_store_read(o->store, list_body, &c, err) != 0) {
		json_decref(c.out);
		return -1;
	}
	*ret_result = json_pack("{s:o, s:b}", "operations", c.out, "more", c.more);
	return 0;
}

struct status_ctx {
	struct p11g_ops *o;
	const struct p11g_ident *caller;
	unsigned pending, approved, for_you;
	uint64_t total;
};

static int status_visit(uint64_t id, const json_t *op, void *arg)
{
	struct status_ctx *c = arg;
	const char *s = effective_state(op, p11g_now());
	(void)id;
	if (!strcmp(s, "pending")) {
		c->pending++;
		if (!is_orderer(op, c->caller) && !signer_matches(op, c->caller) &&
		    !has_approved(op, c->caller->uid) &&
		    op_any_rule(op, c->caller, PRED_MAY_APPROVE))
			c->for_you++;
	} else if (!strcmp(s, "approved")) {
		c->approved++;
	}
	return 0;
}

static int status_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct status_ctx *c = arg;
	if (p11g_txn_last_id(t, &c->total, err) < 0)
		return -1;
	return p11g_txn_op_foreach(t, true, 0, status_visit, arg, err) < 0 ? -1 : 0;
}

int p11g_ops_status(struct p11g_ops *o, const struct p11g_ident *caller, json_t **ret_result,
                    p11g_err *err)
{
	struct status_ctx c = {.o = o, .caller = caller};
	uint64_t map = 0, used = 0;
	if (p11g_store_read(o->store, status_body, &c, err) != 0)
		return -1;
	p11g_store_stat(o->store, &map, &used);
	*ret_result = json_pack(
	    "{s:i, s:i, s:i, s:I, s:{s:i, s:i, s:s, s:s, s:I}, s:{s:I, s:I}}", "pending", c.pending,
	    "approved", c.approved, "pending_for_you", c.for_you, "total", (json_int_t)c.total,
	    "policy", "rules", (int)o->policy->n_rules, "files", (int)o->policy->n_files, "digest",
	    o->policy->digest, "default", o->policy->default_allow ? "allow" : "deny", "loaded",
	    (json_int_t)o->policy_loaded, "store", "map_size", (json_int_t)map, "used",
	    (json_int_t)used);
	return 0;
}

static bool may_read_audit(struct p11g_ops *o, const struct p11g_ident *caller)
{
	if (caller->uid == 0 || caller->uid == o->daemon_uid)
		return true;
	for (size_t i = 0; i < o->policy->n_rules; i++)
		if (p11g_rule_is_admin(&o->policy->rules[i], caller) ||
		    p11g_rule_may_approve(&o->policy->rules[i], caller))
			return true;
	return false;
}

static int audit_visit(uint64_t seq, json_t *rec, void *arg)
{
	struct read_ctx *c = arg;
	(void)seq;
	size_t sz = json_dumpb(rec, NULL, 0, JSON_COMPACT);
	if (c->n == c->limit || (c->n && c->bytes + sz > REPLY_BUDGET)) {
		c->more = true;
		return 1;
	}
	json_array_append(c->out, rec);
	c->bytes += sz + 1;
	c->n++;
	return 0;
}

static int audit_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct read_ctx *c = arg;
	return p11g_txn_audit_foreach(t, c->since, audit_visit, c, err) < 0 ? -1 : 0;
}

int p11g_ops_audit(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t since,
                   unsigned limit, json_t **ret_result, p11g_err *err)
{
	if (!may_read_audit(o, caller))
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "the audit log is for root, approvers and admins");
	struct read_ctx c = {
	    .o = o, .caller = caller, .since = since, .limit = limit, .out = json_array()};
	if (p11g_store_read(o->store, audit_body, &c, err) != 0) {
		json_decref(c.out);
		return -1;
	}
	*ret_result = json_pack("{s:o, s:b}", "records", c.out, "more", c.more);
	return 0;
}

struct verify_ctx {
	uint64_t count;
};

static int verify_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct verify_ctx *v = arg;
	return p11g_txn_audit_verify(t, &v->count, err);
}

int p11g_ops_verify(struct p11g_ops *o, const struct p11g_ident *caller, json_t **ret_result,
                    p11g_err *err)
{
	struct verify_ctx v = {0};
	if (!may_read_audit(o, caller))
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "the audit log is for root, approvers and admins");
	if (p11g_store_read(o->store, verify_body, &v, err) != 0)
		return -1;
	*ret_result = json_pack("{s:I, s:b}", "records", (json_int_t)v.count, "ok", 1);
	return 0;
}

/* ---- housekeeping --------------------------------------------------------- */

struct expire_ctx {
	struct p11g_ops *o;
	uint64_t ids[256];
	size_t n;
};

static int expire_visit(uint64_t id, const json_t *op, void *arg)
{
	struct expire_ctx *c = arg;
	if (p11g_now() >= int_of(op, "expires") && c->n < P11G_ARRAY_SIZE(c->ids))
		c->ids[c->n++] = id;
	return c->n == P11G_ARRAY_SIZE(c->ids) ? 1 : 0;
}

static int expire_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct expire_ctx *c = arg;
	struct p11g_ident me;
	c->n = 0;
	if (p11g_txn_op_foreach(t, true, 0, expire_visit, c, err) < 0)
		return -1;
	for (size_t i = 0; i < c->n; i++) {
		_cleanup_json_ json_t *op = NULL;
		if (load_op(t, c->ids[i], &op, err) < 0)
			return -1;
		const char *was = state_of(op);
		json_t *extra = json_pack("{s:s}", "was", was);
		json_object_set_new(op, "state", json_string("expired"));
		if (p11g_txn_op_put(t, c->ids[i], op, err) < 0 ||
		    audit(t, "expired", daemon_actor(c->o, &me), c->ids[i], extra, err) < 0)
			return -1;
	}
	return 0;
}

int p11g_ops_expire_due(struct p11g_ops *o, p11g_err *err)
{
	struct expire_ctx c = {.o = o};
	if (p11g_store_write(o->store, expire_body, &c, err) != 0)
		return -1;
	for (size_t i = 0; i < c.n; i++)
		notify(o, c.ids[i]);
	if (p11g_ops_flush_refusals(o, false, err) < 0)
		return -1;
	return (int)c.n;
}

struct flush_ctx {
	p11g_txn *t;
	p11g_err *err;
};

/* One aggregate record: the refusals counted after the first of their kind was written. */
static int flush_one(void *arg, const struct p11g_refusal_agg *a)
{
	struct flush_ctx *c = arg;
	struct p11g_ident who = {0};
	bool overflow = a->uid == (uid_t)-1;
	int r;

	if (!overflow && p11g_ident_resolve(a->uid, a->gid, 0, &who) < 0)
		return p11g_err_set(c->err, P11G_E_INTERNAL, "out of memory");
	json_t *rec = json_pack("{s:s, s:s, s:I, s:I, s:I, s:b}", "key", a->key, "reason",
	                        a->reason, "count", (json_int_t)a->count, "first",
	                        (json_int_t)a->first, "last", (json_int_t)a->last, "aggregated", 1);
	if (rec && overflow &&
	    json_object_set_new(rec, "uids", json_string("many (the table of refusals was full)")) <
	        0) {
		json_decref(rec);
		rec = NULL;
	}
	r = rec ? audit(c->t, "use_refused", overflow ? NULL : &who, 0, rec, c->err)
	        : p11g_err_set(c->err, P11G_E_INTERNAL, "out of memory");
	p11g_ident_clear(&who);
	return r;
}

struct flush_all_ctx {
	struct p11g_ops *o;
	bool all;
	int64_t now;
};

/* Writes what is due without changing the table: the store may run a body twice. */
static int flush_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct flush_all_ctx *c = arg;
	struct flush_ctx f = {t, err};
	return p11g_refusals_each_due(c->o->refusals, c->now, c->all, flush_one, &f);
}

int p11g_ops_flush_refusals(struct p11g_ops *o, bool all, p11g_err *err)
{
	struct flush_all_ctx c = {o, all, p11g_now()};
	if (!o->refusals || !p11g_refusals_due(o->refusals, c.now, all))
		return 0;
	if (p11g_store_write(o->store, flush_body, &c, err) != 0)
		return -1; /* kept for the next sweep */
	p11g_refusals_forget_due(o->refusals, c.now, all);
	return 0;
}

struct policy_ctx {
	struct p11g_ops *o;
	const char *path;
};

static int policy_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct policy_ctx *c = arg;
	struct p11g_ident me;
	return audit(t, "policy_loaded", daemon_actor(c->o, &me), 0,
	             json_pack("{s:s, s:s, s:i, s:i, s:s}", "path", c->path, "digest",
	                       c->o->policy->digest, "rules", (int)c->o->policy->n_rules, "files",
	                       (int)c->o->policy->n_files, "default",
	                       c->o->policy->default_allow ? "allow" : "deny"),
	             err);
}

int p11g_ops_policy_loaded(struct p11g_ops *o, const char *path, p11g_err *err)
{
	struct policy_ctx c = {o, path};
	o->policy_loaded = p11g_now();
	return p11g_store_write(o->store, policy_body, &c, err) != 0 ? -1 : 0;
}
