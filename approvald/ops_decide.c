/* Decisions on an operation: approve, reject, withdraw an approval, revoke. */
#include "approvald/audit_state.h"
#include "approvald/authz.h"
#include "approvald/op.h"
#include "approvald/ops_internal.h"

#include <inttypes.h>
#include <string.h>
#include <strings.h>

#include "p11gate/wire.h"

/* The checks every decision on a pending operation shares. */
static int check_pending(const struct p11g_op *op, int64_t now, p11g_err *err)
{
	if (p11g_op_effective_state(op, now) == P11G_OP_EXPIRED)
		return p11g_err_set(err, P11G_E_EXPIRED, "operation %" PRIu64 " has expired",
		                    op->id);
	if (op->state != P11G_OP_PENDING)
		return p11g_err_set(err, P11G_E_ALREADY_DECIDED,
		                    "operation %" PRIu64 " is already %s", op->id,
		                    p11g_op_state_name(op->state));
	return 0;
}

/* Revocation and withdrawal apply to an operation still active as of now. */
static int check_active(const struct p11g_op *op, int64_t now, p11g_err *err)
{
	enum p11g_op_state s = p11g_op_effective_state(op, now);
	if (!p11g_op_state_active(s))
		return p11g_err_set(err, P11G_E_ALREADY_DECIDED,
		                    "operation %" PRIu64 " is already %s", op->id,
		                    p11g_op_state_name(s));
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
static int decided(p11g_txn *t, struct txn_ctx *c, struct p11g_op *op, const char *event,
                   json_t *extra, p11g_err *err)
{
	if (ops_audit_op(t, event, c->caller, op, extra, err) < 0)
		return -1;
	json_t *pub = ops_public(op);
	if (!pub)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	ops_ctx_result(c, pub);
	c->changed = c->id;
	return 0;
}

/* After its approvals changed: the state the quorum now gives op, stored and audited. */
static int settle(p11g_txn *t, struct txn_ctx *c, struct p11g_op *op, const char *event,
                  p11g_err *err)
{
	char missing[300];
	bool met = false;

	if (ops_quorum(op, &met, missing, sizeof(missing), err) < 0)
		return -1;
	op->state = met ? P11G_OP_APPROVED : P11G_OP_PENDING;
	return decided(t, c, op, event, json_pack("{s:s}", "state", p11g_op_state_name(op->state)),
	               err);
}

/* A rule with "actor_claim": the person the pipeline's token names as its actor (who pushed)
 * may not approve it.  Names are compared without case, as CI systems compare logins; an
 * operation under such a rule that does not name its actor is refused to everyone.  This holds
 * as far as approvers' account names are the CI system's logins (README). */
static int check_actor(const struct p11g_op *op, const struct p11g_ident *caller, p11g_err *err)
{
	const char *rule;
	const json_t *snap;
	const json_t *claims = json_object_get(op->identity, "claims");
	json_object_foreach((json_t *)op->rules, rule, snap)
	{
		const char *name = json_string_value(json_object_get(snap, "actor_claim"));
		if (!name)
			continue;
		const char *actor = json_string_value(json_object_get(claims, name));
		if (!actor || !*actor)
			return p11g_err_set(err, P11G_E_FORBIDDEN,
			                    "operation %" PRIu64 " does not name its actor (claim "
			                    "\"%s\" of rule %s): nobody may approve it",
			                    op->id, name, rule);
		/* the account name, and its user part where the name service qualifies names
		 * (SSSD's alice@corp.example): the same person either way */
		size_t local = strcspn(caller->user, "@");
		if (!strcasecmp(actor, caller->user) ||
		    (local && strlen(actor) == local && !strncasecmp(actor, caller->user, local)))
			return p11g_err_set(
			    err, P11G_E_SELF_APPROVAL,
			    "the pipeline's token names you as its actor (claim \"%s\" "
			    "of rule %s): someone else must approve operation %" PRIu64,
			    name, rule, op->id);
	}
	return 0;
}

static int approve_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	_cleanup_op_ struct p11g_op op = {0};
	int64_t now = p11g_now();

	/* an approval counts with those before it: they must be what the log says */
	if (ops_load_op(t, c->id, &op, err) < 0 || ops_check_audited(t, &op, err) < 0)
		return -1;
	if (p11g_authz_check_approver(&op, c->caller, c->id, err) < 0 ||
	    check_pending(&op, now, err) < 0 || check_actor(&op, c->caller, err) < 0)
		return -1;
	if (p11g_op_approval_of(&op, c->caller->uid) >= 0)
		return p11g_err_set(
		    err, P11G_E_ALREADY_APPROVED,
		    "you already approved operation %" PRIu64 "; each person counts once", c->id);
	if (p11g_op_approve(&op, c->caller, now) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return settle(t, c, &op, "approved", err);
}

int p11g_ops_approve(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                     json_t **ret_op, p11g_err *err)
{
	return decide(o, caller, id, NULL, approve_body, ret_op, err);
}

/* How a decision ends an operation for good: who may, and from which states. */
struct ending {
	enum p11g_op_state state; /* the state it ends in, also the audit event */
	int (*may)(const struct p11g_op *op, const struct p11g_ident *caller, uint64_t id,
	           p11g_err *err);
	int (*from)(const struct p11g_op *op, int64_t now, p11g_err *err);
};

static const struct ending rejection = {P11G_OP_REJECTED, p11g_authz_check_approver, check_pending};
static const struct ending revocation = {P11G_OP_REVOKED, p11g_authz_check_revoker, check_active};

static int end_body(p11g_txn *t, struct txn_ctx *c, const struct ending *e, p11g_err *err)
{
	_cleanup_op_ struct p11g_op op = {0};
	int64_t now = p11g_now();
	const char *reason = c->reason ? c->reason : "";

	if (ops_load_op(t, c->id, &op, err) < 0)
		return -1;
	if (e->may(&op, c->caller, c->id, err) < 0 || e->from(&op, now, err) < 0)
		return -1;
	if (p11g_op_end(&op, e->state, c->caller, now, reason) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return decided(t, c, &op, p11g_op_state_name(e->state),
	               json_pack("{s:s}", "reason", reason), err);
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

static int withdraw_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	_cleanup_op_ struct p11g_op op = {0};

	if (ops_load_op(t, c->id, &op, err) < 0 || ops_check_audited(t, &op, err) < 0)
		return -1;
	ssize_t at = p11g_op_approval_of(&op, c->caller->uid);
	if (at < 0)
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "you have no approval on operation %" PRIu64 " to withdraw",
		                    c->id);
	/* A use already made was judged with this approval counted. */
	if (p11g_op_uses_made(&op) > 0)
		return p11g_err_set(err, P11G_E_ALREADY_USED,
		                    "operation %" PRIu64
		                    " has been used: an approval cannot be withdrawn after a use "
		                    "(revoke it instead)",
		                    c->id);
	if (check_active(&op, p11g_now(), err) < 0)
		return -1;
	p11g_op_unapprove(&op, (size_t)at);
	return settle(t, c, &op, "withdrawn", err);
}

int p11g_ops_withdraw(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                      json_t **ret_op, p11g_err *err)
{
	return decide(o, caller, id, NULL, withdraw_body, ret_op, err);
}
