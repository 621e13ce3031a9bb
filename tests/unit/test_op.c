/* The operation model: its transitions, quorum and counts through the verbs, on a real store,
 * and the authorization predicates (authz.h) on their own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "approvald/authz.h"
#include "approvald/jbuild.h"
#include "approvald/op.h"
#include "approvald/ops.h"
#include "approvald/ops_internal.h"
#include "p11gate/wire.h"

/* Identities are uid principals only: no user or group database is consulted. */
#define ORDERER  1001
#define APPROVER 2001
#define SECOND   2002
#define THIRD    2003
#define ADMIN    3001
#define SIGNER   4001
#define STRANGER 5001
#define DAEMON   999

static const char policy_text[] =
    "{\"default\": \"deny\", \"rules\": ["
    " {\"name\": \"prod\", \"keys\": [\"pkcs11:token=prod\"],"
    "  \"orderers\": [\"uid:1001\"],"
    "  \"approvers\": [\"uid:1001\", \"uid:2001\", \"uid:2002\", \"uid:2003\", \"uid:4001\"],"
    "  \"approvals\": 2, \"admins\": [\"uid:3001\"], \"max_uses\": 10},"
    " {\"name\": \"dev\", \"keys\": [\"pkcs11:token=dev\"], \"orderers\": [\"uid:1001\"],"
    "  \"approvals\": 0}]}";

struct fx {
	char root[64];
	struct p11g_ops o;
};

static struct p11g_ident who(uid_t uid)
{
	struct p11g_ident id = {.uid = uid, .gid = uid, .pid = 1};
	snprintf(id.user, sizeof(id.user), "u%u", (unsigned)uid);
	return id;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	p11g_err err = {0};
	char dir[128];

	if (!f)
		return -1;
	snprintf(f->root, sizeof(f->root), "/tmp/p11g-op-XXXXXX");
	if (!mkdtemp(f->root))
		return -1;
	snprintf(dir, sizeof(dir), "%s/state", f->root);
	struct p11g_store_options so = {.durability = P11G_DURABLE_PROCESS};
	if (p11g_store_open(dir, &so, &f->o.store, &err) < 0) {
		fprintf(stderr, "store: %s\n", err.msg);
		return -1;
	}
	if (p11g_policy_parse("test", policy_text, strlen(policy_text), &f->o.policy, &err) < 0) {
		fprintf(stderr, "policy: %s\n", err.msg);
		return -1;
	}
	f->o.daemon_uid = DAEMON;
	f->o.limits =
	    (struct p11g_ops_limits){.max_pending_per_user = 100, .default_validity = 3600};
	*state = f;
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st, (void)type, (void)ftw;
	remove(path);
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	p11g_ops_clear(&f->o);
	p11g_store_close(f->o.store);
	p11g_policy_free(f->o.policy);
	nftw(f->root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* ---- helpers --------------------------------------------------------------- */

/* A request by uid for the keys of args (JSON text); its id. */
static uint64_t request(struct fx *f, uid_t uid, const char *args)
{
	struct p11g_ident id = who(uid);
	json_error_t je;
	json_t *a = json_loads(args, 0, &je), *op = NULL;
	p11g_err err = {0};
	assert_non_null(a);
	if (p11g_ops_request(&f->o, &id, a, &op, &err) < 0)
		fail_msg("request %s: %s (%s)", args, err.msg, err.code);
	uint64_t n = (uint64_t)json_integer_value(json_object_get(op, "id"));
	json_decref(op);
	json_decref(a);
	return n;
}

/* The error code of a request that must fail. */
static const char *request_fails(struct fx *f, uid_t uid, const char *args)
{
	struct p11g_ident id = who(uid);
	json_t *a = json_loads(args, 0, NULL), *op = NULL;
	static p11g_err err;
	assert_non_null(a);
	memset(&err, 0, sizeof(err));
	assert_int_equal(p11g_ops_request(&f->o, &id, a, &op, &err), -1);
	assert_null(op);
	json_decref(a);
	return err.code;
}

enum verb { APPROVE, REJECT, WITHDRAW, REVOKE };

/* Runs a decision; NULL when it succeeded, else its error code. */
static const char *decide(struct fx *f, enum verb v, uid_t uid, uint64_t op_id)
{
	struct p11g_ident id = who(uid);
	static p11g_err err;
	json_t *op = NULL;
	int r = -1;
	memset(&err, 0, sizeof(err));
	switch (v) {
	case APPROVE:
		r = p11g_ops_approve(&f->o, &id, op_id, &op, &err);
		break;
	case REJECT:
		r = p11g_ops_reject(&f->o, &id, op_id, "no", &op, &err);
		break;
	case WITHDRAW:
		r = p11g_ops_withdraw(&f->o, &id, op_id, &op, &err);
		break;
	case REVOKE:
		r = p11g_ops_revoke(&f->o, &id, op_id, NULL, &op, &err);
		break;
	}
	if (r == 0) {
		assert_non_null(op);
		json_decref(op);
		return NULL;
	}
	assert_null(op);
	assert_non_null(err.code);
	return err.code;
}

#define assert_ok(x)           assert_null(x)
#define assert_code(x, code)   assert_string_equal((x) ? (x) : "(success)", code)
#define assert_state(f, id, s) assert_string_equal(state_of(f, id), s)

/* The state show reports (as of now), for root. */
static const char *state_of(struct fx *f, uint64_t op_id)
{
	static char buf[32];
	struct p11g_ident root = who(0);
	json_t *op = NULL;
	p11g_err err = {0};
	if (p11g_ops_show(&f->o, &root, op_id, &op, &err) < 0)
		fail_msg("show %llu: %s", (unsigned long long)op_id, err.msg);
	snprintf(buf, sizeof(buf), "%s", json_string_value(json_object_get(op, "state")));
	json_decref(op);
	return buf;
}

/* One signature with key token/label by uid: the uses left, or -1 with *ret_code. */
static long long use(struct fx *f, uid_t uid, const char *token, const char *label,
                     const char **ret_code)
{
	static p11g_err err;
	struct p11g_ident id = who(uid);
	struct p11g_use_args a = {.mechanism = CKM_SHA256_RSA_PKCS};
	json_t *res = NULL;
	snprintf(a.key.token_label, sizeof(a.key.token_label), "%s", token);
	snprintf(a.key.label, sizeof(a.key.label), "%s", label);
	a.key.key_type = CKK_RSA;
	memset(&err, 0, sizeof(err));
	if (p11g_ops_use(&f->o, &id, &a, &res, &err) < 0) {
		assert_null(res);
		*ret_code = err.code;
		return -1;
	}
	*ret_code = NULL;
	long long left = json_integer_value(json_object_get(res, "remaining"));
	json_decref(res);
	return left;
}

static void assert_use_refused(struct fx *f, uid_t uid, const char *label, const char *code)
{
	const char *got = NULL;
	assert_int_equal(use(f, uid, "prod", label, &got), -1);
	assert_string_equal(got, code);
}

struct get {
	uint64_t id;
	struct p11g_op op;
};

static int get_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct get *g = arg;
	return p11g_txn_op_get(t, g->id, &g->op, err) < 0 ? -1 : 0;
}

/* The operation as stored (snapshots and all): the store's one encoding of what it read. */
static json_t *stored(struct fx *f, uint64_t id)
{
	struct get g = {.id = id};
	p11g_err err = {0};
	assert_int_equal(p11g_store_read(f->o.store, get_body, &g, &err), 0);
	json_t *j = p11g_op_encode(&g.op);
	assert_non_null(j);
	p11g_op_clear(&g.op);
	return j;
}

/* Moves an operation's window into the past, as if its validity had run out. */
static int age_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct p11g_op op;
	if (p11g_txn_op_get(t, *(uint64_t *)arg, &op, err) < 0)
		return -1;
	op.expires = p11g_now() - 1;
	/* recorded as approvald records a change, so that its audit record agrees */
	int r = ops_audit_op(t, "recorded", NULL, &op, json_object(), err);
	p11g_op_clear(&op);
	return r;
}

static void age(struct fx *f, uint64_t id)
{
	p11g_err err = {0};
	assert_int_equal(p11g_store_write(f->o.store, age_body, &id, &err), 0);
}

/* The stored operation records who ended it, and why. */
static void assert_ended_by(struct fx *f, uint64_t id, const char *member, uid_t uid,
                            const char *reason)
{
	json_t *op = stored(f, id);
	json_t *by = json_object_get(op, member);
	assert_int_equal(json_integer_value(json_object_get(by, "uid")), uid);
	assert_string_equal(json_string_value(json_object_get(by, "reason")), reason);
	json_decref(op);
}

#define FW_TWO "{\"keys\": [{\"uri\": \"pkcs11:token=prod;object=fw\", \"uses\": 2}]}"
#define FW_ONE "{\"keys\": [{\"uri\": \"pkcs11:token=prod;object=fw\"}]}"

/* ---- transitions ----------------------------------------------------------- */

/* pending -> approved at the quorum -> exhausted at the last use; nothing moves it back. */
static void test_pending_approved_exhausted(void **state)
{
	struct fx *f = *state;
	const char *code;
	uint64_t id = request(f, ORDERER, FW_TWO);

	assert_state(f, id, "pending");
	assert_use_refused(f, ORDERER, "fw", P11G_E_PENDING);
	assert_ok(decide(f, APPROVE, APPROVER, id));
	assert_state(f, id, "pending"); /* one of two */
	assert_use_refused(f, ORDERER, "fw", P11G_E_PENDING);
	assert_ok(decide(f, APPROVE, SECOND, id));
	assert_state(f, id, "approved");

	assert_int_equal(use(f, ORDERER, "prod", "fw", &code), 1);
	assert_state(f, id, "approved");
	assert_int_equal(use(f, ORDERER, "prod", "fw", &code), 0);
	assert_state(f, id, "exhausted");
	assert_use_refused(f, ORDERER, "fw", P11G_E_EXHAUSTED);
	assert_code(decide(f, APPROVE, THIRD, id), P11G_E_ALREADY_DECIDED);
	assert_code(decide(f, REVOKE, ORDERER, id), P11G_E_ALREADY_DECIDED);
	assert_code(decide(f, REJECT, THIRD, id), P11G_E_ALREADY_DECIDED);
}

/* Each person counts once, and the orderer and the signer never count. */
static void test_quorum_counts_people(void **state)
{
	struct fx *f = *state;
	uint64_t id = request(f, ORDERER,
	                      "{\"for\": \"uid:4001\", \"keys\": [{\"uri\": "
	                      "\"pkcs11:token=prod;object=fw\"}]}");

	assert_code(decide(f, APPROVE, ORDERER, id), P11G_E_SELF_APPROVAL);
	assert_code(decide(f, APPROVE, SIGNER, id), P11G_E_SELF_APPROVAL);
	assert_code(decide(f, APPROVE, STRANGER, id), P11G_E_NOT_APPROVER);
	assert_code(decide(f, APPROVE, ADMIN, id), P11G_E_NOT_APPROVER);
	assert_ok(decide(f, APPROVE, APPROVER, id));
	assert_code(decide(f, APPROVE, APPROVER, id), P11G_E_ALREADY_APPROVED);
	assert_state(f, id, "pending");
	assert_ok(decide(f, APPROVE, SECOND, id));
	assert_state(f, id, "approved");
	/* approved for uid:4001: the orderer may not use it */
	assert_use_refused(f, ORDERER, "fw", P11G_E_NOT_SIGNER);
	const char *code;
	assert_int_equal(use(f, SIGNER, "prod", "fw", &code), 0);
}

static void test_reject(void **state)
{
	struct fx *f = *state;
	uint64_t id = request(f, ORDERER, FW_ONE);

	assert_code(decide(f, REJECT, ORDERER, id), P11G_E_SELF_APPROVAL);
	assert_code(decide(f, REJECT, STRANGER, id), P11G_E_NOT_APPROVER);
	assert_ok(decide(f, APPROVE, APPROVER, id));
	assert_ok(decide(f, REJECT, SECOND, id));
	assert_state(f, id, "rejected");
	assert_code(decide(f, APPROVE, THIRD, id), P11G_E_ALREADY_DECIDED);
	assert_code(decide(f, REJECT, THIRD, id), P11G_E_ALREADY_DECIDED);
	assert_code(decide(f, REVOKE, ORDERER, id), P11G_E_ALREADY_DECIDED);
	assert_use_refused(f, ORDERER, "fw", P11G_E_REJECTED);

	assert_ended_by(f, id, "rejection", SECOND, "no");

	/* an approved operation is not rejected afterwards */
	id = request(f, ORDERER, FW_ONE);
	assert_ok(decide(f, APPROVE, APPROVER, id));
	assert_ok(decide(f, APPROVE, SECOND, id));
	assert_code(decide(f, REJECT, THIRD, id), P11G_E_ALREADY_DECIDED);
	assert_state(f, id, "approved");
}

/* A withdrawn approval takes the operation back to pending, until its first use. */
static void test_withdraw(void **state)
{
	struct fx *f = *state;
	const char *code;
	uint64_t id = request(f, ORDERER, FW_TWO);

	assert_ok(decide(f, APPROVE, APPROVER, id));
	assert_code(decide(f, WITHDRAW, SECOND, id), P11G_E_FORBIDDEN);
	assert_code(decide(f, WITHDRAW, ORDERER, id), P11G_E_FORBIDDEN);
	assert_ok(decide(f, APPROVE, SECOND, id));
	assert_state(f, id, "approved");
	assert_ok(decide(f, WITHDRAW, SECOND, id));
	assert_state(f, id, "pending");
	assert_use_refused(f, ORDERER, "fw", P11G_E_PENDING);
	assert_ok(decide(f, APPROVE, THIRD, id));
	assert_state(f, id, "approved");
	assert_int_equal(use(f, ORDERER, "prod", "fw", &code), 1);
	assert_code(decide(f, WITHDRAW, THIRD, id), P11G_E_ALREADY_USED);
	assert_state(f, id, "approved");
}

/* An approver whose group name approvald could not read back from the record (over 255
 * bytes, as LDAP can give) is refused, and the operation stays decidable: stored, the
 * approval made the record undecodable, so nobody could revoke or reject it while the use
 * path still spent it. */
static void test_unreadable_approval_is_refused(void **state)
{
	struct fx *f = *state;
	uint64_t id = request(f, ORDERER, FW_TWO);
	struct p11g_ident odd = who(APPROVER);
	char name[300], *groups[1] = {name};
	p11g_err err = {0};
	json_t *op = NULL;

	memset(name, 'g', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	odd.groups = groups;
	odd.n_groups = 1;
	assert_int_equal(p11g_ops_approve(&f->o, &odd, id, &op, &err), -1);
	assert_null(op);
	assert_string_equal(err.code, P11G_E_INTERNAL);
	assert_non_null(strstr(err.msg, "cannot read back"));
	assert_state(f, id, "pending");
	assert_ok(decide(f, APPROVE, APPROVER, id));
	assert_ok(decide(f, APPROVE, SECOND, id));
	assert_state(f, id, "approved");
	assert_ok(decide(f, REVOKE, ADMIN, id));
	assert_state(f, id, "revoked");

	/* nor is such an orderer's request stored */
	json_t *a = json_loads(FW_ONE, 0, NULL);
	struct p11g_ident orderer = who(ORDERER);
	orderer.groups = groups;
	orderer.n_groups = 1;
	memset(&err, 0, sizeof(err));
	assert_int_equal(p11g_ops_request(&f->o, &orderer, a, &op, &err), -1);
	assert_null(op);
	assert_string_equal(err.code, P11G_E_INTERNAL);
	json_decref(a);
}

/* The orderer or an admin ends an active operation; approvers do not. */
static void test_revoke(void **state)
{
	struct fx *f = *state;
	uint64_t id = request(f, ORDERER, FW_TWO);

	assert_ok(decide(f, APPROVE, APPROVER, id));
	assert_ok(decide(f, APPROVE, SECOND, id));
	assert_code(decide(f, REVOKE, APPROVER, id), P11G_E_FORBIDDEN);
	assert_code(decide(f, REVOKE, STRANGER, id), P11G_E_FORBIDDEN);
	assert_ok(decide(f, REVOKE, ADMIN, id));
	assert_state(f, id, "revoked");
	assert_code(decide(f, REVOKE, ORDERER, id), P11G_E_ALREADY_DECIDED);
	assert_code(decide(f, WITHDRAW, APPROVER, id), P11G_E_ALREADY_DECIDED);
	assert_use_refused(f, ORDERER, "fw", P11G_E_REVOKED);

	assert_ended_by(f, id, "revocation", ADMIN, "");

	/* the orderer may revoke its own pending request */
	id = request(f, ORDERER, FW_ONE);
	assert_ok(decide(f, REVOKE, ORDERER, id));
	assert_state(f, id, "revoked");
}

/* An active operation past its window is expired to everyone at once, and the sweep records
 * it. */
static void test_expiry(void **state)
{
	struct fx *f = *state;
	p11g_err err = {0};
	uint64_t pending = request(f, ORDERER, FW_ONE), approved = request(f, ORDERER, FW_ONE);
	uint64_t rejected = request(f, ORDERER, FW_ONE);

	assert_ok(decide(f, APPROVE, APPROVER, approved));
	assert_ok(decide(f, APPROVE, SECOND, approved));
	assert_ok(decide(f, REJECT, APPROVER, rejected));
	age(f, pending);
	age(f, approved);
	age(f, rejected);
	assert_state(f, pending, "expired");
	assert_state(f, approved, "expired");
	assert_state(f, rejected, "rejected");
	assert_code(decide(f, APPROVE, THIRD, pending), P11G_E_EXPIRED);
	assert_code(decide(f, REJECT, THIRD, pending), P11G_E_EXPIRED);
	assert_code(decide(f, REVOKE, ORDERER, approved), P11G_E_ALREADY_DECIDED);
	assert_use_refused(f, ORDERER, "fw", P11G_E_EXPIRED);

	assert_int_equal(p11g_ops_expire_due(&f->o, &err), 2);
	json_t *op = stored(f, approved);
	assert_string_equal(json_string_value(json_object_get(op, "state")), "expired");
	json_decref(op);
	assert_int_equal(p11g_ops_expire_due(&f->o, &err), 0);
}

/* Each key keeps its own count; the operation is exhausted when every key is. */
static void test_counts_per_key(void **state)
{
	struct fx *f = *state;
	const char *code;
	uint64_t id = request(f, ORDERER,
	                      "{\"keys\": [{\"uri\": \"pkcs11:token=prod;object=a\"},"
	                      " {\"uri\": \"pkcs11:token=prod;object=b\", \"uses\": 2}]}");

	assert_ok(decide(f, APPROVE, APPROVER, id));
	assert_ok(decide(f, APPROVE, SECOND, id));
	assert_use_refused(f, ORDERER, "c", P11G_E_NO_OPERATION);
	assert_int_equal(use(f, ORDERER, "prod", "a", &code), 0);
	assert_state(f, id, "approved");
	assert_use_refused(f, ORDERER, "a", P11G_E_EXHAUSTED);
	assert_int_equal(use(f, ORDERER, "prod", "b", &code), 1);
	assert_int_equal(use(f, ORDERER, "prod", "b", &code), 0);
	assert_state(f, id, "exhausted");

	json_t *op = stored(f, id), *k;
	size_t i;
	json_array_foreach(json_object_get(op, "keys"), i, k)
	{
		assert_int_equal(json_integer_value(json_object_get(k, "used")),
		                 json_integer_value(json_object_get(k, "uses")));
	}
	json_decref(op);
}

/* What a request may ask: one entry per key, the rule's ceilings, its orderers only. */
static void test_request_checks(void **state)
{
	struct fx *f = *state;

	assert_string_equal(request_fails(f, ORDERER,
	                                  "{\"keys\": [{\"uri\": \"pkcs11:token=prod;object=a\"},"
	                                  " {\"uri\": \"pkcs11:token=prod\"}]}"),
	                    P11G_E_BAD_REQUEST);
	assert_string_equal(
	    request_fails(f, ORDERER,
	                  "{\"keys\": [{\"uri\": \"pkcs11:token=prod;object=a\", \"uses\": 11}]}"),
	    P11G_E_LIMIT);
	assert_string_equal(request_fails(f, STRANGER, FW_ONE), P11G_E_NOT_ORDERER);
	assert_string_equal(
	    request_fails(f, ORDERER, "{\"keys\": [{\"uri\": \"pkcs11:token=x\"}]}"),
	    P11G_E_NO_RULE);
	assert_string_equal(request_fails(f, ORDERER, "{\"keys\": []}"), P11G_E_BAD_REQUEST);
	/* a rule that needs no approvals approves on creation */
	uint64_t id = request(f, ORDERER, "{\"keys\": [{\"uri\": \"pkcs11:token=dev\"}]}");
	assert_state(f, id, "approved");
}

/* Under a rule needing no approvals, its orderer signs without an operation: a one-use
 * operation, already exhausted. */
static void test_implicit_use(void **state)
{
	struct fx *f = *state;
	const char *code;

	assert_int_equal(use(f, ORDERER, "dev", "k", &code), 0);
	assert_state(f, 1, "exhausted");
	assert_int_equal(use(f, STRANGER, "dev", "k", &code), -1);
	assert_string_equal(code, P11G_E_NO_OPERATION);
	assert_int_equal(use(f, STRANGER, "other", "k", &code), -1);
	assert_string_equal(code, P11G_E_DENIED_DEFAULT);
}

/* A stored operation whose rule snapshot cannot be read back is never used, nor approved. */
static int damage_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct p11g_op op;
	if (p11g_txn_op_get(t, *(uint64_t *)arg, &op, err) < 0)
		return -1;
	/* replaced, never changed in place (op.h) */
	json_t *rules = json_deep_copy(op.rules);
	assert_int_equal(json_object_set_new(rules, "prod", json_string("garbage")), 0);
	json_decref(op.rules);
	op.rules = rules;
	int r = ops_audit_op(t, "recorded", NULL, &op, json_object(), err);
	p11g_op_clear(&op);
	return r;
}

static void test_damaged_operation(void **state)
{
	struct fx *f = *state;
	p11g_err err = {0};
	uint64_t id = request(f, ORDERER, FW_ONE);

	assert_ok(decide(f, APPROVE, APPROVER, id));
	assert_ok(decide(f, APPROVE, SECOND, id));
	assert_int_equal(p11g_store_write(f->o.store, damage_body, &id, &err), 0);
	assert_use_refused(f, ORDERER, "fw", P11G_E_INTERNAL);
	uint64_t other = request(f, ORDERER, FW_ONE);
	assert_int_equal(p11g_store_write(f->o.store, damage_body, &other, &err), 0);
	/* its approvers cannot be read back either: nobody may approve it */
	assert_code(decide(f, APPROVE, APPROVER, other), P11G_E_NOT_APPROVER);
}

/* ---- encoding --------------------------------------------------------------- */

/* What decode reads, encode writes back member for member. */
static void assert_round_trip(const json_t *j)
{
	struct p11g_op op;
	p11g_err err = {0};
	if (p11g_op_decode(j, &op, &err) < 0)
		fail_msg("decode: %s", err.msg);
	json_t *again = p11g_op_encode(&op);
	assert_non_null(again);
	if (!json_equal((json_t *)j, again)) {
		char *a = json_dumps(j, JSON_SORT_KEYS), *b = json_dumps(again, JSON_SORT_KEYS);
		fail_msg("round trip changed the record:\n%s\n%s", a, b);
	}
	json_decref(again);
	p11g_op_clear(&op);
}

static void test_round_trips(void **state)
{
	struct fx *f = *state;
	const char *code;
	uint64_t ids[4];

	ids[0] = request(f, ORDERER,
	                 "{\"for\": \"uid:4001\", \"description\": \"d\", \"context\": \"c\","
	                 " \"digests\": [\"sha256:"
	                 "0000000000000000000000000000000000000000000000000000000000000000\"],"
	                 " \"keys\": [{\"uri\": \"pkcs11:token=prod;object=fw\", \"uses\": 3}]}");
	assert_ok(decide(f, APPROVE, APPROVER, ids[0]));
	ids[1] = request(f, ORDERER, FW_ONE);
	assert_ok(decide(f, REJECT, APPROVER, ids[1]));
	ids[2] = request(f, ORDERER, FW_ONE);
	assert_ok(decide(f, REVOKE, ORDERER, ids[2]));
	assert_int_equal(use(f, ORDERER, "dev", "k", &code), 0); /* implicit */
	ids[3] = ids[2] + 1;
	for (size_t i = 0; i < 4; i++) {
		json_t *j = stored(f, ids[i]);
		assert_round_trip(j);
		/* a member a later version added is kept */
		json_object_set_new(j, "future", json_pack("{s:i}", "x", 1));
		assert_round_trip(j);
		json_decref(j);
	}
}

/* A stored record that is not what approvald writes is refused, naming what is wrong. */
static void test_decode_refuses_damage(void **state)
{
	struct fx *f = *state;
	uint64_t id = request(f, ORDERER, FW_TWO);
	assert_ok(decide(f, REJECT, APPROVER, id));
	json_t *good = stored(f, id);
	static const char *const breakages[] = {
	    "{\"state\": \"bogus\"}",
	    "{\"state\": null}",
	    "{\"id\": \"1\"}",
	    "{\"orderer\": {\"uid\": 1}}",
	    "{\"orderer\": {\"uid\": 1, \"user\": \"u\", \"groups\": [], \"pid\": \"x\"}}",
	    "{\"signer\": 4}",
	    "{\"expires\": 1.5}",
	    "{\"keys\": []}",
	    "{\"keys\": [{\"uri\": \"pkcs11:token=prod\", \"rule\": \"prod\", \"uses\": 1, "
	    "\"used\": 2}]}",
	    "{\"keys\": [{\"uri\": \"pkcs11:token=prod\", \"rule\": \"prod\", \"uses\": 1}]}",
	    "{\"approvals\": {}}",
	    "{\"approvals\": [{\"uid\": 2001, \"user\": \"u\", \"groups\": []}]}",
	    "{\"digests\": [1]}",
	    "{\"rules\": []}",
	    "{\"images\": {}}",
	    "{\"rejection\": {\"uid\": 2001, \"user\": \"u\", \"pid\": 1, \"time\": 1}}",
	    "{\"implicit\": 1}",
	    "{\"description\": null}",
	};

	for (size_t i = 0; i < sizeof(breakages) / sizeof(breakages[0]); i++) {
		json_t *bad = json_deep_copy(good), *patch = json_loads(breakages[i], 0, NULL);
		struct p11g_op op;
		p11g_err err = {0};
		assert_non_null(patch);
		const char *name;
		json_t *v;
		json_object_foreach(patch, name, v)
		{
			if (json_is_null(v))
				json_object_del(bad, name);
			else
				json_object_set(bad, name, v);
		}
		if (p11g_op_decode(bad, &op, &err) == 0)
			fail_msg("decoded a record with %s", breakages[i]);
		assert_string_equal(err.code, P11G_E_INTERNAL);
		assert_non_null(strstr(err.msg, "damaged"));
		json_decref(patch);
		json_decref(bad);
	}
	json_t *arr = json_array();
	struct p11g_op op;
	assert_int_equal(p11g_op_decode(arr, &op, NULL), -1);
	json_decref(arr);
	json_decref(good);
}

/* After one failed step the builder adds nothing more, and its one check reports it: a record
 * is whole or not written. */
static void test_builder_failure_sticks(void **state)
{
	struct p11g_jb b = {0};
	p11g_err err = {0};
	json_t *rec = p11g_jb_new(&b, json_object());
	(void)state;

	p11g_jb_set_str(&b, rec, "event", "created");
	assert_int_equal(p11g_jb_check(&b, &err), 0);
	p11g_jb_set(&b, rec, "key", NULL); /* a constructor that failed */
	p11g_jb_set_int(&b, rec, "op", 7);
	p11g_jb_append(&b, json_object_get(rec, "event"), json_string("x"));
	assert_int_equal(p11g_jb_check(&b, &err), -1);
	assert_string_equal(err.code, P11G_E_INTERNAL);
	assert_int_equal(json_object_size(rec), 1);
	json_decref(rec);

	struct p11g_jb c = {0};
	assert_null(p11g_jb_new(&c, NULL));
	p11g_jb_set_str(&c, NULL, "a", "b");
	assert_int_equal(p11g_jb_check(&c, NULL), -1);
}

/* ---- the predicates ------------------------------------------------------------ */

/* An operation of rule prod ordered by ORDERER for SIGNER, approved by APPROVER. */
static void sample_op(struct fx *f, struct p11g_op *ret)
{
	const struct p11g_rule *r = p11g_policy_rule(f->o.policy, "prod");
	assert_non_null(r);
	json_t *op =
	    json_pack("{s:i, s:s, s:{s:i, s:s, s:[]}, s:s, s:i, s:i, s:s, s:s, s:[], "
	              "s:[{s:s, s:s, s:i, s:i}], s:[{s:i, s:s, s:[], s:i}], s:{s:o}}",
	              "id", 1, "state", "pending", "orderer", "uid", ORDERER, "user", "u1001",
	              "groups", "signer", "uid:4001", "created", 1, "expires", 2, "description", "",
	              "context", "", "digests", "keys", "uri", "pkcs11:token=prod", "rule", "prod",
	              "uses", 1, "used", 0, "approvals", "uid", APPROVER, "user", "u2001", "groups",
	              "time", 1, "rules", "prod", p11g_rule_to_json(r));
	p11g_err err = {0};
	assert_non_null(op);
	if (p11g_op_decode(op, ret, &err) < 0)
		fail_msg("sample: %s", err.msg);
	json_decref(op);
}

static void test_who_may_see(void **state)
{
	struct fx *f = *state;
	struct p11g_op sample, *op = &sample;
	sample_op(f, op);
	static const uid_t yes[] = {0, DAEMON, ORDERER, SIGNER, APPROVER, THIRD, ADMIN};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		struct p11g_ident id = who(yes[i]);
		assert_true(p11g_authz_may_see(DAEMON, &id, op));
	}
	struct p11g_ident s = who(STRANGER);
	assert_false(p11g_authz_may_see(DAEMON, &s, op));
	assert_false(p11g_authz_may_see(DAEMON + 1, &(struct p11g_ident){.uid = DAEMON}, op));
	p11g_op_clear(op);
}

static void test_who_decides(void **state)
{
	struct fx *f = *state;
	struct p11g_op sample, *op = &sample;
	sample_op(f, op);
	p11g_err err = {0};
	struct p11g_ident orderer = who(ORDERER), signer = who(SIGNER), approver = who(APPROVER),
	                  third = who(THIRD), admin = who(ADMIN), stranger = who(STRANGER);

	assert_int_equal(p11g_authz_check_approver(op, &third, 1, &err), 0);
	assert_int_equal(p11g_authz_check_approver(op, &orderer, 1, &err), -1);
	assert_string_equal(err.code, P11G_E_SELF_APPROVAL);
	assert_int_equal(p11g_authz_check_approver(op, &signer, 1, &err), -1);
	assert_string_equal(err.code, P11G_E_SELF_APPROVAL);
	assert_int_equal(p11g_authz_check_approver(op, &admin, 1, &err), -1);
	assert_string_equal(err.code, P11G_E_NOT_APPROVER);
	assert_int_equal(p11g_authz_check_approver(op, &stranger, 1, &err), -1);
	assert_string_equal(err.code, P11G_E_NOT_APPROVER);

	/* what waits for whom: an approver who has not approved and has no other part */
	assert_true(p11g_authz_awaits(op, &third));
	assert_false(p11g_authz_awaits(op, &approver));
	assert_false(p11g_authz_awaits(op, &orderer));
	assert_false(p11g_authz_awaits(op, &signer));
	assert_false(p11g_authz_awaits(op, &admin));
	assert_true(p11g_authz_has_approved(op, APPROVER));
	assert_false(p11g_authz_has_approved(op, THIRD));

	assert_int_equal(p11g_authz_check_revoker(op, &orderer, 1, &err), 0);
	assert_int_equal(p11g_authz_check_revoker(op, &admin, 1, &err), 0);
	assert_int_equal(p11g_authz_check_revoker(op, &approver, 1, &err), -1);
	assert_string_equal(err.code, P11G_E_FORBIDDEN);
	assert_int_equal(p11g_authz_check_revoker(op, &signer, 1, &err), -1);
	p11g_op_clear(op);
}

static void test_who_orders_and_reads(void **state)
{
	struct fx *f = *state;
	const struct p11g_rule *prod = p11g_policy_rule(f->o.policy, "prod");
	p11g_err err = {0};
	struct p11g_ident orderer = who(ORDERER), approver = who(APPROVER), admin = who(ADMIN),
	                  signer = who(SIGNER), stranger = who(STRANGER), root = who(0),
	                  daemon = who(DAEMON);

	assert_int_equal(p11g_authz_check_orderer(prod, &orderer, "pkcs11:token=prod", &err), 0);
	assert_int_equal(p11g_authz_check_orderer(prod, &approver, "pkcs11:token=prod", &err), -1);
	assert_string_equal(err.code, P11G_E_NOT_ORDERER);

	assert_true(p11g_authz_may_read_audit(f->o.policy, DAEMON, &root));
	assert_true(p11g_authz_may_read_audit(f->o.policy, DAEMON, &daemon));
	assert_true(p11g_authz_may_read_audit(f->o.policy, DAEMON, &approver));
	assert_true(p11g_authz_may_read_audit(f->o.policy, DAEMON, &admin));
	assert_false(p11g_authz_may_read_audit(f->o.policy, DAEMON, &stranger));

	assert_true(p11g_authz_has_role(DAEMON, prod, &orderer, false));
	assert_true(p11g_authz_has_role(DAEMON, prod, &admin, false));
	assert_true(p11g_authz_has_role(DAEMON, prod, &stranger, true));
	assert_false(p11g_authz_has_role(DAEMON, prod, &stranger, false));
	assert_false(p11g_authz_has_role(DAEMON, NULL, &signer, false));
	assert_true(p11g_authz_has_role(DAEMON, NULL, &root, false));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_pending_approved_exhausted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quorum_counts_people, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reject, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unreadable_approval_is_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_withdraw, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_revoke, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_counts_per_key, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_request_checks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_implicit_use, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_operation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_round_trips, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_decode_refuses_damage, setup, teardown),
	    cmocka_unit_test(test_builder_failure_sticks),
	    cmocka_unit_test_setup_teardown(test_who_may_see, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_who_decides, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_who_orders_and_reads, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
