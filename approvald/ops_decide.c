/* Decisions on an operation: approve, reject, withdraw an approval, revoke. */
#include "approvald/authz.h"
#include "approvald/jbuild.h"
#include "approvald/ops_internal.h"

#include <inttypes.h>

#include "p11gate/wire.h"

/* The checks every decision on a pending operation shares. */
static int check_pending(const json_t *op, uint64_t id, int64_t now, p11g_err *err)
{
	const char *s = ops_state_of(op);
	if (!strcmp(s, "expired") || (ops_is_active(s) && now >= ops_int_of(op, "expires")))
		return p11g_err_set(err, P11G_E_EXPIRED, "operation %" PRIu64 " has expired", id);
	if (strcmp(s, "pending"))
		return p11g_err_set(err, P11G_E_ALREADY_DECIDED,
		                    "operation %" PRIu64 " is already %s", id, s);
	return 0;
}

/* Revocation and withdrawal apply to an operation still active as of now. */
static int check_active(const json_t *op, uint64_t id, int64_t now, p11g_err *err)
{
	const char *s = ops_effective_state(op, now);
	if (!ops_is_active(s))
		return p11g_err_set(err, P11G_E_ALREADY_DECIDED,
		                    "operation %" PRIu64 " is already %s", id, s);
	return 0;
}

/* Runs body in one write transaction for caller's decision on id. */
static int decide(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                  const char *reason, p11g_txn_fn body, json_t **ret_op, p11g_err *err)
{
	struct txn_ctx c = {.o = o, .caller = caller, .id = id, .reason = reason};
	return ops_finish(&c, p11g_store_write(o->store, body, &c, err), ret_op, err);
}

/* The decided operation, stored and audited with its state, is the verb's result. */
static int decided(p11g_txn *t, struct txn_ctx *c, const json_t *op, const char *event,
                   json_t *extra, p11g_err *err)
{
	if (p11g_txn_op_put(t, c->id, op, err) < 0) {
		json_decref(extra);
		return -1;
	}
	if (ops_audit(t, event, c->caller, c->id, extra, err) < 0)
		return -1;
	json_t *pub = ops_public(op);
	if (!pub)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	ops_ctx_result(c, pub);
	c->changed = c->id;
	return 0;
}

/* After its approvals changed: the state the quorum now gives op, stored and audited. */
static int settle(p11g_txn *t, struct txn_ctx *c, json_t *op, const char *event, p11g_err *err)
{
	struct p11g_jb b = {0};
	char missing[300];
	bool met = false;

	if (ops_quorum(op, &met, missing, sizeof(missing), err) < 0)
		return -1;
	const char *state = met ? "approved" : "pending";
	p11g_jb_set_str(&b, op, "state", state);
	if (p11g_jb_check(&b, err) < 0)
		return -1;
	return decided(t, c, op, event, json_pack("{s:s}", "state", state), err);
}

static int approve_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	_cleanup_json_ json_t *op = NULL;
	int64_t now = p11g_now();

	if (ops_load_op(t, c->id, &op, err) < 0)
		return -1;
	if (p11g_authz_check_approver(op, c->caller, c->id, err) < 0 ||
	    check_pending(op, c->id, now, err) < 0)
		return -1;
	if (p11g_authz_has_approved(op, c->caller->uid))
		return p11g_err_set(
		    err, P11G_E_ALREADY_APPROVED,
		    "you already approved operation %" PRIu64 "; each person counts once", c->id);
	struct p11g_jb b = {0};
	json_t *a = p11g_jb_new(&b, p11g_ident_to_json(c->caller));
	p11g_jb_set_int(&b, a, "time", now);
	p11g_jb_append(&b, json_object_get(op, "approvals"), a);
	if (p11g_jb_check(&b, err) < 0)
		return -1;
	return settle(t, c, op, "approved", err);
}

int p11g_ops_approve(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                     json_t **ret_op, p11g_err *err)
{
	return decide(o, caller, id, NULL, approve_body, ret_op, err);
}

/* How a decision ends an operation for good: who may, from which states, and the member
 * that records who ended it, when and why. */
struct ending {
	const char *state;  /* the state it ends in, also the audit event */
	const char *member; /* {uid, user, pid, time, reason} */
	int (*may)(const json_t *op, const struct p11g_ident *caller, uint64_t id, p11g_err *err);
	int (*from)(const json_t *op, uint64_t id, int64_t now, p11g_err *err);
};

static const struct ending rejection = {"rejected", "rejection", p11g_authz_check_approver,
                                        check_pending};
static const struct ending revocation = {"revoked", "revocation", p11g_authz_check_revoker,
                                         check_active};

static int end_body(p11g_txn *t, struct txn_ctx *c, const struct ending *e, p11g_err *err)
{
	_cleanup_json_ json_t *op = NULL;
	int64_t now = p11g_now();
	const char *reason = c->reason ? c->reason : "";

	if (ops_load_op(t, c->id, &op, err) < 0)
		return -1;
	if (e->may(op, c->caller, c->id, err) < 0 || e->from(op, c->id, now, err) < 0)
		return -1;
	struct p11g_jb b = {0};
	json_t *by = p11g_jb_new(&b, ops_actor_json(c->caller));
	p11g_jb_set_int(&b, by, "time", now);
	p11g_jb_set_str(&b, by, "reason", reason);
	p11g_jb_set(&b, op, e->member, by);
	p11g_jb_set_str(&b, op, "state", e->state);
	if (p11g_jb_check(&b, err) < 0)
		return -1;
	return decided(t, c, op, e->state, json_pack("{s:s}", "reason", reason), err);
}

static int reject_body(p11g_txn *t, void *arg, p11g_err *err)
{
	return end_body(t, arg, &rejection, err);
}

int p11g_ops_reject(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                    const char *reason, json_t **ret_op, p11g_err *err)
{
	return decide(o, caller, id, reason, reject_body, ret_op, err);
}

static int revoke_body(p11g_txn *t, void *arg, p11g_err *err)
{
	return end_body(t, arg, &revocation, err);
}

int p11g_ops_revoke(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                    const char *reason, json_t **ret_op, p11g_err *err)
{
	return decide(o, caller, id, reason, revoke_body, ret_op, err);
}

static int64_t op_uses_made(const json_t *op)
{
	int64_t n = 0;
	size_t i;
	json_t *k;
	json_array_foreach(json_object_get(op, "keys"), i, k) n += ops_int_of(k, "used");
	return n;
}

static int withdraw_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	_cleanup_json_ json_t *op = NULL;

	if (ops_load_op(t, c->id, &op, err) < 0)
		return -1;
	json_t *apv = json_object_get(op, "approvals"), *a;
	size_t i, at = (size_t)-1;
	json_array_foreach(apv, i, a) if (ops_int_of(a, "uid") == (int64_t)c->caller->uid) at = i;
	if (at == (size_t)-1)
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "you have no approval on operation %" PRIu64 " to withdraw",
		                    c->id);
	/* A use already made was judged with this approval counted. */
	if (op_uses_made(op) > 0)
		return p11g_err_set(err, P11G_E_ALREADY_USED,
		                    "operation %" PRIu64
		                    " has been used: an approval cannot be withdrawn after a use "
		                    "(revoke it instead)",
		                    c->id);
	if (check_active(op, c->id, p11g_now(), err) < 0)
		return -1;
	json_array_remove(apv, at);
	return settle(t, c, op, "withdrawn", err);
}

int p11g_ops_withdraw(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                      json_t **ret_op, p11g_err *err)
{
	return decide(o, caller, id, NULL, withdraw_body, ret_op, err);
}
