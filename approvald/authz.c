/* The four-eyes rules: who may see, order, approve, revoke an operation and read the audit. */
#include "approvald/authz.h"

#include <inttypes.h>

#include "p11gate/wire.h"

static void rule_freep(struct p11g_rule **r)
{
	p11g_rule_free(*r);
}

enum rule_pred { PRED_MAY_APPROVE, PRED_IS_ADMIN };

/* Whether pred holds for id under one of the rule snapshots op was ordered under: a policy
 * changed since does not widen or narrow who decides on it. */
static bool op_any_rule(const struct p11g_op *op, const struct p11g_ident *id, enum rule_pred pred)
{
	const char *name;
	json_t *snap;
	json_object_foreach(op->rules, name, snap)
	{
		__attribute__((cleanup(rule_freep))) struct p11g_rule *rule = NULL;
		if (p11g_rule_from_json(snap, &rule, NULL) < 0)
			continue;
		if (pred == PRED_MAY_APPROVE && p11g_rule_may_approve(rule, id))
			return true;
		if (pred == PRED_IS_ADMIN && p11g_rule_is_admin(rule, id))
			return true;
	}
	return false;
}

bool p11g_authz_is_orderer(const struct p11g_op *op, const struct p11g_ident *id)
{
	return op->orderer.uid == id->uid;
}

bool p11g_authz_is_signer(const char *signer, const struct p11g_ident *id)
{
	struct p11g_principal p;
	if (!signer || p11g_principal_parse(signer, &p, NULL) < 0)
		return false;
	bool m = p11g_principal_matches(&p, id);
	p11g_principal_clear(&p);
	return m;
}

bool p11g_authz_is_approver(const struct p11g_op *op, const struct p11g_ident *id)
{
	return op_any_rule(op, id, PRED_MAY_APPROVE);
}

bool p11g_authz_is_admin(const struct p11g_op *op, const struct p11g_ident *id)
{
	return op_any_rule(op, id, PRED_IS_ADMIN);
}

bool p11g_authz_has_approved(const struct p11g_op *op, uid_t uid)
{
	return p11g_op_approval_of(op, uid) >= 0;
}

bool p11g_authz_may_see(uid_t daemon_uid, const struct p11g_ident *caller, const struct p11g_op *op)
{
	return caller->uid == 0 || caller->uid == daemon_uid || p11g_authz_is_orderer(op, caller) ||
	       p11g_authz_is_signer(op->signer, caller) || p11g_authz_is_approver(op, caller) ||
	       p11g_authz_is_admin(op, caller);
}

bool p11g_authz_awaits(const struct p11g_op *op, const struct p11g_ident *caller)
{
	return !p11g_authz_is_orderer(op, caller) && !p11g_authz_is_signer(op->signer, caller) &&
	       !p11g_authz_has_approved(op, caller->uid) && p11g_authz_is_approver(op, caller);
}

int p11g_authz_check_orderer(const struct p11g_rule *rule, const struct p11g_ident *caller,
                             const char *uri, p11g_err *err)
{
	if (p11g_rule_may_order(rule, caller))
		return 0;
	return p11g_err_set(
	    err, P11G_E_NOT_ORDERER, "%s (uid %u) may not order uses of %s (rule %s)",
	    caller->user[0] ? caller->user : "this user", (unsigned)caller->uid, uri, rule->name);
}

/* The orderer never counts as an approver, nor does the signer: either would let one person
 * order and use a key alone. */
int p11g_authz_check_approver(const struct p11g_op *op, const struct p11g_ident *caller,
                              uint64_t id, p11g_err *err)
{
	if (p11g_authz_is_orderer(op, caller) || p11g_authz_is_signer(op->signer, caller))
		return p11g_err_set(err, P11G_E_SELF_APPROVAL,
		                    "you ordered operation %" PRIu64
		                    " or will sign with it: someone else must decide on it",
		                    id);
	if (!p11g_authz_is_approver(op, caller))
		return p11g_err_set(err, P11G_E_NOT_APPROVER,
		                    "%s (uid %u) is not an approver for operation %" PRIu64,
		                    caller->user[0] ? caller->user : "this user",
		                    (unsigned)caller->uid, id);
	return 0;
}

int p11g_authz_check_revoker(const struct p11g_op *op, const struct p11g_ident *caller, uint64_t id,
                             p11g_err *err)
{
	if (p11g_authz_is_orderer(op, caller) || p11g_authz_is_admin(op, caller))
		return 0;
	return p11g_err_set(
	    err, P11G_E_FORBIDDEN,
	    "only the orderer or an admin of its keys may revoke operation %" PRIu64, id);
}

bool p11g_authz_may_read_audit(const struct p11g_policy *policy, uid_t daemon_uid,
                               const struct p11g_ident *caller)
{
	if (caller->uid == 0 || caller->uid == daemon_uid)
		return true;
	for (size_t i = 0; i < policy->n_rules; i++)
		if (p11g_rule_is_admin(&policy->rules[i], caller) ||
		    p11g_rule_may_approve(&policy->rules[i], caller))
			return true;
	return false;
}

bool p11g_authz_has_role(uid_t daemon_uid, const struct p11g_rule *rule,
                         const struct p11g_ident *caller, bool signer_seen)
{
	return caller->uid == 0 || caller->uid == daemon_uid || signer_seen ||
	       (rule && (p11g_rule_may_order(rule, caller) || p11g_rule_may_approve(rule, caller) ||
	                 p11g_rule_is_admin(rule, caller)));
}
