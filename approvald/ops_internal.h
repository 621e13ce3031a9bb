/* What the files of the operation model (ops*.c, authz.c) share and nobody else calls. */
#ifndef P11GATE_OPS_INTERNAL_H
#define P11GATE_OPS_INTERNAL_H

#include "approvald/op.h"
#include "approvald/ops.h"

#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

void ops_rule_freep(struct p11g_rule **r);
#define _cleanup_rule_ __attribute__((cleanup(ops_rule_freep)))

#define _cleanup_op_ __attribute__((cleanup(p11g_op_clear)))

/* The meta entries of the ID tokens requests were filed with: P11G_JTI_PREFIX + sha256(the token's
 * iss, NUL, jti) in hex, its value the token's exp. */
#define P11G_JTI_PREFIX "jti:"

json_t *ops_actor_json(const struct p11g_ident *id);
/* approvald itself as the actor of what it does on its own (expiry, policy loads). */
const struct p11g_ident *ops_daemon_actor(const struct p11g_ops *o, struct p11g_ident *buf);
void ops_notify(struct p11g_ops *o, uint64_t id);

/* The rule snapshot op keeps for its rule name, parsed; borrowed from o's cache (ops.c). */
const struct p11g_rule *ops_rule(struct p11g_ops *o, const struct p11g_op *op, const char *name,
                                 p11g_err *err);
/* Whether every rule of op is satisfied by its approvals; missing gets a sentence for the
 * first that is not.  -1 with err when a snapshot cannot be read back. */
int ops_quorum(const struct p11g_op *op, bool *ret_met, char *missing, size_t missing_size,
               p11g_err *err);
/* The form clients see: no rule snapshots or group lists, state as of now, and what a
 * pending operation still needs.  NULL when memory ran out. */
json_t *ops_public(const struct p11g_op *op);

/* Appends one audit record: event, actor, operation id and extra members (stolen).  extra is
 * what the caller built: NULL is its failure, and a record without its members is never
 * written.  -1 with err. */
int ops_audit(p11g_txn *t, const char *event, const struct p11g_ident *actor, uint64_t id,
              json_t *extra, p11g_err *err);

/* Records a change of op: the audit record (as ops_audit, with the operation's audited state
 * after the change as "after"), then op itself, which names that record (audit_seq).  Every
 * change of an operation goes through here.  -1 with err. */
int ops_audit_op(p11g_txn *t, const char *event, const struct p11g_ident *actor, struct p11g_op *op,
                 json_t *extra, p11g_err *err);

/* Whether r signs images of ref (registry/repository): yes when it names no registries. */
bool ops_registry_allowed(const struct p11g_rule *r, const char *ref);
/* An operation's payload that binds the key to a name (a certificate request, an OpenPGP user
 * ID certification) rather than signing an image: a rule's registries do not limit it, and
 * auto_approve never approves it. */
bool ops_image_binds_identity(const json_t *img);

/* One verb's state across the runs of its transaction body. */
struct txn_ctx {
	struct p11g_ops *o;
	const struct p11g_ident *caller;
	const void *args; /* the verb's parsed arguments (struct request for request) */
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
	int refusal_told; /* notify.h's verdict on telling it, taken once per request */
};

void ops_ctx_result(struct txn_ctx *c, json_t *result);
/* The operation id, decoded (the caller clears it), or -1 with err not_found / store_error. */
int ops_load_op(p11g_txn *t, uint64_t id, struct p11g_op *ret, p11g_err *err);
/* After the transaction: its result to *ret and waiters woken, or -1 when r says it failed. */
int ops_finish(struct txn_ctx *c, int r, json_t **ret, p11g_err *err);

#endif
