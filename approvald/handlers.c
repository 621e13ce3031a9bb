/* The verb table: checks each request's arguments strictly, then hands them to ops. */
#include <inttypes.h>

#include "approvald/authz.h"
#include "approvald/checkpoint.h"
#include "approvald/daemon.h"
#include "approvald/notify.h"
#include "approvald/textsafe.h"
#include "approvald/read_worker.h"
#include "approvald/verify_job.h"
#include "p11gate/mech.h"
#include "p11gate/wire.h"

#define LIST_LIMIT_DEFAULT  100
#define LIST_LIMIT_MAX      1000
#define AUDIT_LIMIT_DEFAULT 1000
#define AUDIT_LIMIT_MAX     5000
#define WAIT_MAX            86400
#define VERIFY_WAIT_MAX     3600 /* a walk of a few million records takes a minute */
#define READ_WAIT_MAX       30   /* a listing page takes milliseconds */

#ifndef _cleanup_json_
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))
#endif
#define REASON_MAX 1024

/* Every member of req is one of the verb's names (or v/verb). */
static int check_members(const json_t *req, const char *const *allowed, p11g_err *err)
{
	const char *name;
	json_t *val;
	json_object_foreach((json_t *)req, name, val)
	{
		bool ok = !strcmp(name, "v") || !strcmp(name, "verb");
		for (size_t i = 0; !ok && allowed[i]; i++)
			ok = !strcmp(name, allowed[i]);
		if (!ok)
			return p11g_err_set(err, P11G_E_BAD_REQUEST, "unknown argument \"%s\"",
			                    name);
	}
	return 0;
}

/*
 * Text a person will read enters through the client verbs (description, context, key URIs,
 * reasons, ...): no string of such a request, member names included, may hold a character
 * textsafe.h refuses, whatever member it is in, so that nothing stored or echoed back can
 * drive an approver's terminal.  The module's verbs (key, use) are not checked: the key
 * labels they carry come from the token, are never stored raw (audit records name keys by
 * percent-encoded URI) and are escaped on output instead.
 */
#define TEXT_PATH_MAX 200

static int text_refused(const char *path, bool name, uint32_t cp, p11g_err *err)
{
	if (cp & P11G_TEXT_NOT_UTF8)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "%s\"%s\" holds %s (0x%02X)",
		                    name ? "the member name " : "", path, p11g_text_kind(cp),
		                    (unsigned)(cp & 0xff));
	return p11g_err_set(err, P11G_E_BAD_REQUEST,
	                    "%s\"%s\" holds U+%04X, %s, which text for people may not hold",
	                    name ? "the member name " : "", path, (unsigned)cp, p11g_text_kind(cp));
}

/* Appends the escaped name (object member) or [index] to path, which holds len bytes. */
static size_t path_append(char *path, size_t len, const char *name, size_t name_len, size_t index)
{
	if (len >= TEXT_PATH_MAX - 1)
		return len;
	if (!name)
		snprintf(path + len, TEXT_PATH_MAX - len, "[%zu]", index);
	else {
		if (len)
			path[len++] = '.';
		p11g_text_escape(path + len, TEXT_PATH_MAX - len, name, name_len);
	}
	return strlen(path);
}

static int check_text_at(const json_t *j, char *path, size_t len, p11g_err *err)
{
	const char *name;
	size_t name_len, i;
	json_t *v;
	uint32_t cp;

	switch (json_typeof(j)) {
	case JSON_STRING:
		if (p11g_text_find(json_string_value(j), json_string_length(j), &cp) >= 0)
			return text_refused(path, false, cp, err);
		return 0;
	case JSON_OBJECT:
		json_object_keylen_foreach((json_t *)j, name, name_len, v)
		{
			size_t l = path_append(path, len, name, name_len, 0);
			if (p11g_text_find(name, name_len, &cp) >= 0)
				return text_refused(path, true, cp, err);
			if (check_text_at(v, path, l, err) < 0)
				return -1;
			path[len] = '\0';
		}
		return 0;
	case JSON_ARRAY:
		json_array_foreach(j, i, v)
		{
			size_t l = path_append(path, len, NULL, 0, i);
			if (check_text_at(v, path, l, err) < 0)
				return -1;
			path[len] = '\0';
		}
		return 0;
	default:
		return 0;
	}
}

/* Every string of req (a client verb's request) and every member name holds text a person
 * may see; a refused character is bad_request naming the member, escaped. */
static int check_text(const json_t *req, p11g_err *err)
{
	char path[TEXT_PATH_MAX] = "";
	return check_text_at(req, path, 0, err);
}

/* A client verb's request: its text fit for people (check_text) and its members known.  The
 * module's verbs (key, use) carry token labels and check their members alone. */
static int check_request(const json_t *req, const char *const *allowed, p11g_err *err)
{
	return check_text(req, err) < 0 || check_members(req, allowed, err) < 0 ? -1 : 0;
}

static int get_id(const json_t *req, const char *name, bool required, uint64_t *ret, p11g_err *err)
{
	const json_t *j = json_object_get(req, name);
	if (!j && !required) {
		*ret = 0;
		return 0;
	}
	if (!json_is_integer(j) || json_integer_value(j) < (required ? 1 : 0))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "\"%s\" must be a positive integer",
		                    name);
	*ret = (uint64_t)json_integer_value(j);
	return 0;
}

static int get_uint(const json_t *req, const char *name, unsigned dflt, unsigned max, unsigned *ret,
                    p11g_err *err)
{
	const json_t *j = json_object_get(req, name);
	if (!j) {
		*ret = dflt;
		return 0;
	}
	if (!json_is_integer(j) || json_integer_value(j) < 0 || json_integer_value(j) > max)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "\"%s\" must be an integer from 0 to %u", name, max);
	*ret = (unsigned)json_integer_value(j);
	return 0;
}

static int get_str(const json_t *req, const char *name, bool required, size_t max, const char **ret,
                   p11g_err *err)
{
	const json_t *j = json_object_get(req, name);
	if (!j && !required) {
		*ret = NULL;
		return 0;
	}
	if (!json_is_string(j) || json_string_length(j) > max ||
	    strlen(json_string_value(j)) != json_string_length(j))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "\"%s\" must be a string of at most %zu bytes", name, max);
	*ret = json_string_value(j);
	return 0;
}

static struct p11g_ops *ops_of(void *app)
{
	return &((struct p11g_daemon *)app)->ops;
}

static json_t *wrap_op(json_t *op)
{
	return json_pack("{s:o}", "operation", op);
}

static int h_request(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                     p11g_err *err, struct p11g_wait *wait)
{
	static const char *const allowed[] = {
	    "keys", "valid",    "description",   "context", "digests", "id_token", "for",
	    "oci",  "payloads", "payload_names", "name",    "meta",    NULL};
	json_t *op;
	(void)wait;
	if (check_request(req, allowed, err) < 0 ||
	    p11g_ops_request(ops_of(app), caller, req, &op, err) < 0)
		return -1;
	*ret = json_pack("{s:O, s:O, s:o}", "id", json_object_get(op, "id"), "state",
	                 json_object_get(op, "state"), "operation", op);
	return 0;
}

/*
 * The verbs that name one operation: show, approve, withdraw (id only), reject (id and a
 * reason), revoke (id, optional reason).  One argument check, one dispatch.
 */
enum id_verb { V_SHOW, V_APPROVE, V_WITHDRAW, V_REJECT, V_REVOKE };

static int id_verb(enum id_verb v, void *app, const struct p11g_ident *caller, const json_t *req,
                   json_t **ret, p11g_err *err)
{
	static const char *const id_only[] = {"id", NULL}, *const with_reason[] = {"id", "reason",
	                                                                           NULL};
	bool reason_ok = v == V_REJECT || v == V_REVOKE;
	struct p11g_ops *o = ops_of(app);
	const char *reason = NULL;
	uint64_t id;
	json_t *op;
	int r;

	if (check_request(req, reason_ok ? with_reason : id_only, err) < 0 ||
	    get_id(req, "id", true, &id, err) < 0 ||
	    (reason_ok && get_str(req, "reason", v == V_REJECT, REASON_MAX, &reason, err) < 0))
		return -1;
	if (v == V_REJECT && !reason[0])
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "a rejection needs a reason");
	switch (v) {
	case V_SHOW:
		r = p11g_ops_show(o, caller, id, &op, err);
		break;
	case V_APPROVE:
		r = p11g_ops_approve(o, caller, id, &op, err);
		break;
	case V_WITHDRAW:
		r = p11g_ops_withdraw(o, caller, id, &op, err);
		break;
	case V_REJECT:
		r = p11g_ops_reject(o, caller, id, reason, &op, err);
		break;
	default:
		r = p11g_ops_revoke(o, caller, id, reason, &op, err);
		break;
	}
	if (r < 0)
		return -1;
	*ret = wrap_op(op);
	return 0;
}

#define ID_VERB(name, v)                                                                           \
	static int h_##name(void *app, const struct p11g_ident *caller, const json_t *req,         \
	                    json_t **ret, p11g_err *err, struct p11g_wait *wait)                   \
	{                                                                                          \
		(void)wait;                                                                        \
		return id_verb(v, app, caller, req, ret, err);                                     \
	}
ID_VERB(show, V_SHOW)
ID_VERB(approve, V_APPROVE)
ID_VERB(withdraw, V_WITHDRAW)
ID_VERB(reject, V_REJECT)
ID_VERB(revoke, V_REVOKE)

static const char *const states[] = {"pending", "approved", "exhausted", "expired",
                                     "revoked", "rejected", NULL};

/* A listing page read by approvald's reading process (read_worker.h): first call (args set)
 * P11G_HANDLER_WAIT, or 0 when the page is to be read here; resumed, 0 with the reply frame in
 * wait->frame, or -1. */
static int read_elsewhere(void *app, const struct p11g_ident *caller, const char *verb,
                          json_t *args, struct p11g_wait *wait, p11g_err *err)
{
	struct p11g_read_job_args a = {.verb = verb, .args = args};
	uint64_t id = wait->resumed ? wait->op_id : 0;
	bool expired = wait->resumed && p11g_mono_us() >= wait->deadline_us;
	int r = p11g_read_job(ops_of(app), caller, &a, &id, expired, &wait->frame, &wait->frame_len,
	                      err);
	if (r <= 0)
		return r;
	if (!wait->resumed)
		wait->deadline_us = p11g_mono_us() + (int64_t)READ_WAIT_MAX * 1000000;
	wait->op_id = id;
	return P11G_HANDLER_WAIT;
}

static int h_list(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                  p11g_err *err, struct p11g_wait *wait)
{
	static const char *const allowed[] = {"all",   "state",        "limit",
	                                      "after", "newest_first", NULL};
	struct p11g_list_args a = {0};
	const json_t *all = json_object_get(req, "all"),
	             *desc = json_object_get(req, "newest_first");
	(void)wait;
	if (check_request(req, allowed, err) < 0 ||
	    get_str(req, "state", false, 16, &a.state, err) < 0 ||
	    get_uint(req, "limit", LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, &a.limit, err) < 0 ||
	    get_id(req, "after", false, &a.after, err) < 0)
		return -1;
	if (desc && !json_is_boolean(desc))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "\"newest_first\" must be true or false");
	a.desc = json_is_true(desc);
	if (all && !json_is_boolean(all))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "\"all\" must be true or false");
	a.all = json_is_true(all);
	if (a.state) {
		size_t i;
		for (i = 0; states[i] && strcmp(states[i], a.state); i++)
			;
		if (!states[i])
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "unknown state \"%s\" (pending, approved, exhausted, "
			                    "expired, revoked, rejected)",
			                    a.state);
	}
	if (a.limit == 0)
		a.limit = LIST_LIMIT_DEFAULT;
	if (!wait->resumed) {
		_cleanup_json_ json_t *args =
		    json_pack("{s:b, s:I, s:I, s:b}", "all", a.all, "after", (json_int_t)a.after,
		              "limit", (json_int_t)a.limit, "desc", a.desc);
		if (!args || (a.state && json_object_set_new(args, "state", json_string(a.state))))
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		int r = read_elsewhere(app, caller, "list", args, wait, err);
		if (r != 0)
			return r;
		return p11g_ops_list(ops_of(app), caller, &a, ret, err);
	}
	return read_elsewhere(app, caller, "list", NULL, wait, err);
}

static int h_status(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                    p11g_err *err, struct p11g_wait *wait)
{
	static const char *const allowed[] = {NULL};
	(void)wait;
	if (check_request(req, allowed, err) < 0)
		return -1;
	return p11g_ops_status(ops_of(app), caller, ret, err);
}

static int h_audit(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                   p11g_err *err, struct p11g_wait *wait)
{
	static const char *const allowed[] = {"since", "limit", NULL};
	uint64_t since;
	unsigned limit;
	if (wait->resumed)
		return read_elsewhere(app, caller, "audit", NULL, wait, err);
	if (check_request(req, allowed, err) < 0 || get_id(req, "since", false, &since, err) < 0 ||
	    get_uint(req, "limit", AUDIT_LIMIT_DEFAULT, AUDIT_LIMIT_MAX, &limit, err) < 0)
		return -1;
	limit = limit ? limit : AUDIT_LIMIT_DEFAULT;
	/* the right to read it is the policy's, which the reading process does not have */
	if (!p11g_authz_may_read_audit(ops_of(app)->policy, ops_of(app)->daemon_uid, caller))
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "the audit log is for root, approvers and admins");
	_cleanup_json_ json_t *args =
	    json_pack("{s:I, s:I}", "since", (json_int_t)since, "limit", (json_int_t)limit);
	if (!args)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	int r = read_elsewhere(app, caller, "audit", args, wait, err);
	if (r != 0)
		return r;
	return p11g_ops_audit(ops_of(app), caller, since, limit, ret, err);
}

static void pkey_freep(EVP_PKEY **k)
{
	EVP_PKEY_free(*k);
}

static int h_verify(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                    p11g_err *err, struct p11g_wait *wait)
{
	static const char *const allowed[] = {"full", "pubkey", NULL};
	const json_t *full = json_object_get(req, "full"), *pub = json_object_get(req, "pubkey");
	__attribute__((cleanup(pkey_freep))) EVP_PKEY *pubkey = NULL;
	if (check_request(req, allowed, err) < 0)
		return -1;
	if (full && !json_is_boolean(full))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "\"full\" must be true or false");
	if (pub && !json_is_string(pub))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "\"pubkey\" is not a public key (base64 DER)");
	/* the key matters when the walk starts: a resumed request has one under way; and only
	 * for those who may verify (nobody else makes approvald parse one) */
	if (pub && !wait->resumed &&
	    !p11g_authz_may_read_audit(ops_of(app)->policy, ops_of(app)->daemon_uid, caller))
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "the audit log is for root, approvers and admins");
	if (pub && !wait->resumed &&
	    !(pubkey = p11g_checkpoint_pubkey_b64(json_string_value(pub), err)))
		return -1;
	uint64_t id = wait->resumed ? wait->op_id : 0;
	bool expired = wait->resumed && p11g_mono_us() >= wait->deadline_us;
	int r = p11g_ops_verify(ops_of(app), caller, json_is_true(full), pubkey, &id, expired, ret,
	                        err);
	if (r != 1)
		return r;
	if (!wait->resumed)
		wait->deadline_us = p11g_mono_us() + (int64_t)VERIFY_WAIT_MAX * 1000000;
	wait->op_id = id;
	return P11G_HANDLER_WAIT;
}

static int h_key(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                 p11g_err *err, struct p11g_wait *wait)
{
	static const char *const allowed[] = {"key", NULL};
	struct p11g_keyid k;
	(void)caller;
	(void)wait;
	if (check_members(req, allowed, err) < 0 ||
	    p11g_keyid_from_json(json_object_get(req, "key"), &k, err) < 0)
		return -1;
	if (!(*ret = p11g_ops_key_info(ops_of(app), &k)))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return 0;
}

static int h_use(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                 p11g_err *err, struct p11g_wait *wait)
{
	static const char *const allowed[] = {"key", "mechanism", "digest",
	                                      "raw", "operation", NULL};
	struct p11g_use_args a = {0};
	const char *mech, *digest;
	char norm[160];
	const json_t *raw = json_object_get(req, "raw");
	(void)wait;
	if (check_members(req, allowed, err) < 0 ||
	    p11g_keyid_from_json(json_object_get(req, "key"), &a.key, err) < 0 ||
	    get_str(req, "mechanism", true, 64, &mech, err) < 0 ||
	    get_str(req, "digest", false, 150, &digest, err) < 0 ||
	    get_id(req, "operation", false, &a.operation, err) < 0)
		return -1;
	if (raw && !json_is_boolean(raw))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "\"raw\" must be true or false");
	a.raw = json_is_true(raw);
	const struct p11g_mech_info *m = p11g_mech_by_name(mech);
	if (!m)
		return p11g_err_set(err, P11G_E_MECHANISM,
		                    "mechanism %s is not a signing mechanism p11gate knows", mech);
	a.mechanism = m->type;
	if (digest) {
		if (!p11g_digest_normalise(digest, norm, sizeof(norm)))
			return p11g_err_set(
			    err, P11G_E_BAD_REQUEST,
			    "\"digest\" must be ALG:HEX such as sha256:<64 hex digits>");
		a.digest = norm;
	}
	return p11g_ops_use(ops_of(app), caller, &a, ret, err);
}

static int h_wait(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                  p11g_err *err, struct p11g_wait *wait)
{
	static const char *const allowed[] = {"id", "timeout", NULL};
	uint64_t id;
	unsigned timeout;
	json_t *op;
	if (check_request(req, allowed, err) < 0 || get_id(req, "id", true, &id, err) < 0 ||
	    get_uint(req, "timeout", 60, WAIT_MAX, &timeout, err) < 0 ||
	    p11g_ops_show(ops_of(app), caller, id, &op, err) < 0)
		return -1;
	if (!wait->resumed)
		wait->deadline_us = p11g_mono_us() + (int64_t)timeout * 1000000;
	if (!strcmp(json_string_value(json_object_get(op, "state")), "pending") &&
	    p11g_mono_us() < wait->deadline_us) {
		json_decref(op);
		wait->op_id = id;
		return P11G_HANDLER_WAIT;
	}
	*ret = wrap_op(op);
	return 0;
}

/* approvald-notify asks for deliveries due: answered at once when some are, else when one is
 * added (P11G_NOTIFY_WAKE) or a second has passed (backoffs end by the clock). */
static int h_notify_take(void *app, const struct p11g_ident *caller, const json_t *req,
                         json_t **ret, p11g_err *err, struct p11g_wait *wait)
{
	static const char *const allowed[] = {"max", NULL};
	unsigned max;
	(void)caller;
	if (check_members(req, allowed, err) < 0 ||
	    get_uint(req, "max", 16, P11G_NOTIFY_INFLIGHT_MAX, &max, err) < 0)
		return -1;
	if (!wait->resumed)
		wait->deadline_us = p11g_mono_us() + 1000000;
	int r = p11g_notify_take(ops_of(app), max ? max : 16, ret, err);
	if (r != 1)
		return r;
	if (p11g_mono_us() >= wait->deadline_us) {
		*ret = json_pack("{s:[]}", "deliveries");
		return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	wait->op_id = P11G_NOTIFY_WAKE;
	return P11G_HANDLER_WAIT;
}

static int h_notify_done(void *app, const struct p11g_ident *caller, const json_t *req,
                         json_t **ret, p11g_err *err, struct p11g_wait *wait)
{
	static const char *const allowed[] = {"results", NULL};
	(void)caller;
	(void)wait;
	if (check_members(req, allowed, err) < 0 ||
	    p11g_notify_done(ops_of(app), json_object_get(req, "results"), err) < 0)
		return -1;
	*ret = json_object();
	return 0;
}

static int h_notify_test(void *app, const struct p11g_ident *caller, const json_t *req,
                         json_t **ret, p11g_err *err, struct p11g_wait *wait)
{
	static const char *const allowed[] = {"notifier", NULL};
	const char *name;
	(void)wait;
	if (check_request(req, allowed, err) < 0 ||
	    get_str(req, "notifier", true, 64, &name, err) < 0)
		return -1;
	return p11g_notify_test(ops_of(app), caller, name, ret, err);
}

const struct p11g_handler p11g_handlers[] = {
    {"request", h_request},
    {"list", h_list, .reader = true, .heavy = true},
    {"show", h_show, .reader = true},
    {"approve", h_approve},
    {"reject", h_reject},
    {"withdraw", h_withdraw},
    {"revoke", h_revoke},
    {"status", h_status, .reader = true},
    {"audit", h_audit, .reader = true, .heavy = true},
    {"verify", h_verify},
    {"key", h_key},
    {"use", h_use},
    {"wait", h_wait},
    {"notify_test", h_notify_test},
    {"notify_take", h_notify_take, .reader = true, .internal = true},
    {"notify_done", h_notify_done, .internal = true},
};
const size_t p11g_n_handlers = P11G_ARRAY_SIZE(p11g_handlers);
