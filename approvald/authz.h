/* Who may see, order, approve, revoke and read the audit of an operation: the four-eyes rules
 * of README "Concepts" and "approvald" in one place. */
#ifndef P11GATE_AUTHZ_H
#define P11GATE_AUTHZ_H

#include <jansson.h>

#include "approvald/op.h"
#include "p11gate/common.h"
#include "policy/policy.h"

/* op is a decoded operation (its orderer, signer, approvals and rule snapshots).  daemon_uid
 * is approvald's own uid, which sees everything like root. */

/* The orderer created op (by uid). */
bool p11g_authz_is_orderer(const struct p11g_op *op, const struct p11g_ident *id);
/* id may use an operation once it is approved: its signer principal names id.  The use path
 * asks with the stored text, without decoding the operation. */
bool p11g_authz_is_signer(const char *signer, const struct p11g_ident *id);
/* id may approve under one of op's rules, as snapshotted when it was ordered. */
bool p11g_authz_is_approver(const struct p11g_op *op, const struct p11g_ident *id);
/* id administers one of op's rules. */
bool p11g_authz_is_admin(const struct p11g_op *op, const struct p11g_ident *id);
/* uid has an approval on op already (each person counts once). */
bool p11g_authz_has_approved(const struct p11g_op *op, uid_t uid);

/* Who may see an operation: its orderer, its signer, an approver or admin of its rules, root
 * and approvald. */
bool p11g_authz_may_see(uid_t daemon_uid, const struct p11g_ident *caller,
                        const struct p11g_op *op);
/* Whether op waits for caller's decision: caller may approve it, did not order it, will not
 * sign with it and has not approved it yet (its state is the caller's to check). */
bool p11g_authz_awaits(const struct p11g_op *op, const struct p11g_ident *caller);

/* Who may order uses of rule's keys.  0, or -1 with err not_orderer naming uri. */
int p11g_authz_check_orderer(const struct p11g_rule *rule, const struct p11g_ident *caller,
                             const char *uri, p11g_err *err);
/* Who may approve or reject operation id: an approver of one of its rules who neither ordered
 * it nor signs with it.  0, or -1 with err self_approval or not_approver. */
int p11g_authz_check_approver(const struct p11g_op *op, const struct p11g_ident *caller,
                              uint64_t id, p11g_err *err);
/* Who may revoke operation id: its orderer or an admin of one of its rules.  0, or -1 with err
 * forbidden. */
int p11g_authz_check_revoker(const struct p11g_op *op, const struct p11g_ident *caller, uint64_t id,
                             p11g_err *err);
/* Who may read the audit log: root, approvald, and anyone who approves for or administers a
 * rule of policy. */
bool p11g_authz_may_read_audit(const struct p11g_policy *policy, uid_t daemon_uid,
                               const struct p11g_ident *caller);
/* Whether caller has a part in rule (NULL: no rule covers the key): it may order, approve or
 * administer, or signs for one of the key's operations (signer_seen).  Root and approvald
 * always do.  Refusals of callers without one are written in bounded number (refusals.h). */
bool p11g_authz_has_role(uid_t daemon_uid, const struct p11g_rule *rule,
                         const struct p11g_ident *caller, bool signer_seen);

#endif
