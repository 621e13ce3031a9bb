/* Operation lifecycle: request, approve, reject, withdraw, revoke, use, expire — the rules of four
 * eyes. */
#ifndef P11GATE_OPS_H
#define P11GATE_OPS_H

#include <jansson.h>

#include "approvald/store.h"
#include "p11gate/common.h"
#include "p11gate/keyid.h"
#include "policy/policy.h"

/* Ceilings on what one client may ask for; all configurable. */
struct p11g_ops_limits {
	unsigned max_pending_per_user; /* pending operations one orderer may have open; 100 */
	int64_t default_validity;      /* seconds when a request gives none; 3600 */
	/* Requests one uid may file in a minute, and their bytes (root and approvald's own uid
	 * aside): a request revoked at once still stays in the store and the audit. 0: none. */
	unsigned max_requests_per_minute;    /* 120 */
	size_t max_request_bytes_per_minute; /* 4 MiB */
};

struct p11g_request_budget; /* ops.c */

struct p11g_ops {
	p11g_store *store;
	struct p11g_policy *policy; /* current policy (owned) */
	int64_t policy_loaded;      /* when it was loaded (seconds) */
	uid_t daemon_uid;           /* may see everything, like root */
	struct p11g_ops_limits limits;
	/* Called with an operation id after its state changed (wakes waiters). */
	void (*changed)(void *arg, uint64_t id);
	void *changed_arg;
	/* Rule snapshots parsed by recent uses (see op_rule); p11g_ops_clear frees them. */
	struct p11g_rule_cache *rule_cache;
	/* Refused uses counted for their aggregate records (refusals.h); created at the first. */
	struct p11g_refusals *refusals;
	/* Requests filed per uid in the current minute (limits.max_requests_per_minute). */
	struct p11g_request_budget *budget;
	/* audit --verify's walks (verify_job.h) */
	struct p11g_verify_job *verify;
	/* the process that reads listing pages (read_worker.h) */
	struct p11g_read_worker *reader;
	/* Run first in the children forked to read (listing pages, verify walks): wipes what
	 * approvald holds that they must not (the PIN).  NULL: nothing held. */
	void (*forget_secrets)(void);
	int64_t jti_pruned; /* when the sweep last pruned the used tokens' jti */
	/* the key sets of issuers with a jwks_url (the daemon's: they outlive policy loads) */
	struct p11g_jwks_sources *jwks;
	/* audit_key = pkcs11:...: the key that signs approvald's checkpoints and nothing else.
	 * A key it names is guarded whatever the policy says, every use of it refused, and no
	 * request may name it (a PKCS#11 client of the same token would forge checkpoints).
	 * p11g_ops_clear frees it. */
	P11KitUri *audit_key;
	int64_t audit_key_logged_us; /* refusals logged at most once a second */
	/* notifications (notify.h): the outbox's state here; NULL until the first */
	struct p11g_notify *notify;
};

/* Makes o's events notifications (notify.h): approvald's daemon, once. */
void p11g_ops_notify_enable(struct p11g_ops *o);
void p11g_ops_notify_disable(struct p11g_ops *o);

/* Frees what the verbs below keep between calls (not store or policy).  Refusals counted and
 * not yet written are lost: p11g_ops_flush_refusals first. */
void p11g_ops_clear(struct p11g_ops *o);

/* Writes the aggregate records of refused uses (refusals.h) whose minute is over, or all of
 * them (at shutdown).  0, or -1 with err when the store refused the write. */
int p11g_ops_flush_refusals(struct p11g_ops *o, bool all, p11g_err *err);

/*
 * Each verb below runs in one write transaction: the state change and its
 * audit record commit together (durably) or not at all.  Results are new
 * references; on error -1 with err set (codes from wire.h).
 */

/* Request arguments as on the wire (see wire.h "request"); already
 * type-checked by the caller except the semantic checks done here. */
int p11g_ops_request(struct p11g_ops *o, const struct p11g_ident *caller, const json_t *args,
                     json_t **ret_op, p11g_err *err);
int p11g_ops_approve(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                     json_t **ret_op, p11g_err *err);
int p11g_ops_reject(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                    const char *reason, json_t **ret_op, p11g_err *err);
int p11g_ops_withdraw(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                      json_t **ret_op, p11g_err *err);
int p11g_ops_revoke(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id,
                    const char *reason, json_t **ret_op, p11g_err *err);

struct p11g_use_args {
	struct p11g_keyid key;
	CK_MECHANISM_TYPE mechanism;
	const char *digest; /* "sha256:<hex>" or NULL when the module could not compute one */
	bool raw;           /* CKM_RSA_PKCS input that is not a DigestInfo */
	uint64_t operation; /* 0: choose */
};

/* Consumes one use durably, or refuses (and audits the refusal). Result:
 * {"operation": id, "remaining": n} or {"guarded": false} for a key no rule
 * guards under "default": "allow". */
int p11g_ops_use(struct p11g_ops *o, const struct p11g_ident *caller,
                 const struct p11g_use_args *args, json_t **ret_result, p11g_err *err);

/* The module's question: is this key guarded, and how. */
json_t *p11g_ops_key_info(struct p11g_ops *o, const struct p11g_keyid *key);

/* Read-only views.  show/wait return the public form of an operation. */
int p11g_ops_show(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id, json_t **ret_op,
                  p11g_err *err);
struct p11g_list_args {
	bool all;
	const char *state; /* NULL: any */
	uint64_t after;    /* 0, or a previous page's "next" */
	unsigned limit;    /* operations in a page, at most */
	bool desc;         /* newest first: after is then the id the walk goes on below */
};
/* One page: {"operations": [op...], "more": bool, "next"?: id}.  A call reads a bounded number
 * of stored operations whatever it finds (ops_view.c's LIST_SCAN_MAX), so a page may end with
 * fewer than limit operations, or none; while more is true, "next" is the id to pass as after
 * to go on (the last operation read), and only a page without more ends the listing. */
int p11g_ops_list(struct p11g_ops *o, const struct p11g_ident *caller,
                  const struct p11g_list_args *args, json_t **ret_result, p11g_err *err);
int p11g_ops_status(struct p11g_ops *o, const struct p11g_ident *caller, json_t **ret_result,
                    p11g_err *err);
int p11g_ops_audit(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t since,
                   unsigned limit, json_t **ret_result, p11g_err *err);
/* The same page for a caller whose right to read the audit was checked before. */
int p11g_ops_audit_page(struct p11g_ops *o, uint64_t since, unsigned limit, json_t **ret_result,
                        p11g_err *err);

/* Marks operations whose window closed as expired (audited).  Returns the
 * number expired, or -1. */
int p11g_ops_expire_due(struct p11g_ops *o, p11g_err *err);

/* Records a policy load in the audit log (actor: the daemon). */
int p11g_ops_policy_loaded(struct p11g_ops *o, const char *path, p11g_err *err);

/* "ALG:HEX" with a known hash and the right length, lower-cased into out
 * (at least 140 bytes); false for anything else. */
bool p11g_digest_normalise(const char *s, char *out, size_t outsz);

#endif
