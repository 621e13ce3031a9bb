/* An operation as a struct: decoded once from its stored JSON, checked, and encoded in one
 * place. */
#ifndef P11GATE_OP_H
#define P11GATE_OP_H

#include <jansson.h>

#include "p11gate/common.h"
#include "policy/policy.h"

enum p11g_op_state {
	P11G_OP_PENDING,
	P11G_OP_APPROVED,
	P11G_OP_EXHAUSTED,
	P11G_OP_REJECTED,
	P11G_OP_REVOKED,
	P11G_OP_EXPIRED,
};

/* "pending", ...; and back (-1 for a name that is none). */
const char *p11g_op_state_name(enum p11g_op_state s);
int p11g_op_state_parse(const char *name, enum p11g_op_state *ret);

/* One key of an operation: the URI pattern judged under rule, its count and what was spent. */
struct p11g_op_key {
	char *uri;
	char *rule;
	int64_t uses, used;
};

/* An approval: who (uid, user, groups at the time) and when. */
struct p11g_op_approval {
	struct p11g_ident who;
	int64_t time;
};

/* Who ended an operation by rejecting or revoking it: uid, user, pid, when and why. */
struct p11g_op_end {
	bool present;
	struct p11g_ident who; /* uid, user and pid; no groups */
	int64_t time;
	char *reason;
};

/*
 * The JSON members (rules, images, oci, extra) are shared by copies (p11g_op_copy) and by the
 * store's cache of decoded operations: they are replaced, never changed in place.
 */
struct p11g_op {
	uint64_t id;
	enum p11g_op_state state;
	struct p11g_ident orderer; /* uid, user, groups; pid when orderer_pid */
	bool orderer_pid;
	char *signer; /* a principal: uid:N, user:NAME, group:NAME */
	int64_t created, expires;
	char *description, *context;
	char **digests; /* pinned, normalised ALG:HEX */
	size_t n_digests;
	struct p11g_op_key *keys;
	size_t n_keys;
	struct p11g_op_approval *approvals;
	size_t n_approvals;
	json_t *rules;  /* {rule name: snapshot} as p11g_rule_to_json wrote them (owned) */
	json_t *images; /* what approvers saw of the OCI payloads; NULL when none (owned) */
	json_t *oci;    /* the requester's word on the image; NULL when none (owned) */
	/* the pipeline that asked, from its verified ID token (issue 19): {"issuer": NAME,
	 * "iss", "subject", "jti", "claims": {the claims approvers are shown, matched or
	 * judged by}};
	 * NULL when the request carried none (owned) */
	json_t *identity;
	/* what the requester calls it (issue 19): a short title, {KEY: VALUE} metadata, and names
	 * of the pinned digests (by index; "" for none); NULL when not given (owned) */
	char *name;
	json_t *meta, *payload_names;
	struct p11g_op_end rejection, revocation;
	bool implicit; /* created, approved and used at once under a rule needing no approvals */
	uint64_t audit_seq; /* the audit record of its last change (which holds p11g_op_audited
	                     * of it); 0 for an operation last changed before such records */
	uint64_t terms_seq; /* the audit record holding its terms whole (p11g_op_audited) */
	json_t *extra;      /* members this version does not know, kept as they were (owned) */
};

/* Decodes a stored operation.  0, or -1 with err internal naming the first member that is
 * missing or of the wrong type (the record is damaged), or out of memory. */
int p11g_op_decode(const json_t *j, struct p11g_op *ret, p11g_err *err);
/* The stored form; NULL when memory ran out. */
json_t *p11g_op_encode(const struct p11g_op *op);
void p11g_op_clear(struct p11g_op *op);
/* A copy of src that owns its strings and lists (and shares its JSON members).  0, or
 * -ENOMEM with nothing allocated. */
int p11g_op_copy(const struct p11g_op *src, struct p11g_op *ret);

/*
 * What the audit log keeps of an operation after each change (the record's "after").  Its
 * terms, which never change after creation (p11g_op_terms: orderer, signer, window, each key's
 * URI, rule and uses granted, a SHA-256 of the pinned digests), are written whole by the record
 * that creates it (or records it at start; terms_seq 0) and by their hash ("terms") with
 * terms_seq, that record's number, in every later one; each holds the state, the uses made per
 * key ("used") and the approvers' uids.  What decides a use or a decision is here; a stored
 * operation that differs from its last record was changed behind approvald.  NULL when memory
 * ran out.
 */
json_t *p11g_op_audited(const struct p11g_op *op, uint64_t terms_seq);
json_t *p11g_op_terms(const struct p11g_op *op);
/* The member names of the terms, NULL-terminated; the last ones (from
 * p11g_op_term_optional) are there only when the operation has them ("identity", "labels":
 * its name, metadata and payload names). */
extern const char *const p11g_op_term_names[];
extern const size_t p11g_op_term_optional;
/* SHA-256 (hex) of the terms members of obj (a full "after" or p11g_op_terms), compact with
 * sorted keys.  -1 when one is missing or memory ran out. */
int p11g_op_terms_hash(const json_t *obj, char hex[65]);
/* The first member where the audited forms a and b differ, named as "keys[0].uses" and with
 * both values as text in sa and sb (truncated to n bytes each); false when they agree. */
bool p11g_op_audited_diff(const json_t *a, const json_t *b, char *what, size_t what_n, char *sa,
                          char *sb, size_t n);

/* Total uses spent over all keys. */
int64_t p11g_op_uses_made(const struct p11g_op *op);
/* The state a person should see at now: an active operation past its window is expired even
 * before the sweep records it. */
enum p11g_op_state p11g_op_effective_state(const struct p11g_op *op, int64_t now);
/* pending or approved: what the store's active index holds. */
bool p11g_op_state_active(enum p11g_op_state s);
/* Sets the orderer to who (uid, user, groups and pid, copied).  0 or -ENOMEM. */
int p11g_op_set_orderer(struct p11g_op *op, const struct p11g_ident *who);
/* The approval of uid, or -1. */
ssize_t p11g_op_approval_of(const struct p11g_op *op, uid_t uid);
/* Adds who's approval at time (who's groups copied).  0 or -ENOMEM. */
int p11g_op_approve(struct p11g_op *op, const struct p11g_ident *who, int64_t time);
/* Removes approval i (from p11g_op_approval_of). */
void p11g_op_unapprove(struct p11g_op *op, size_t i);
/* Ends op in state by who at time, for reason (copied): the rejection or revocation.  0 or
 * -ENOMEM. */
int p11g_op_end(struct p11g_op *op, enum p11g_op_state state, const struct p11g_ident *who,
                int64_t time, const char *reason);

#endif
