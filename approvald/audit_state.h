/* Operations checked against the audit log's record of their state (audit_state.c). */
#ifndef P11GATE_AUDIT_STATE_H
#define P11GATE_AUDIT_STATE_H

#include <jansson.h>
#include <openssl/evp.h>

#include "approvald/ops.h"
#include "approvald/store.h"

/* Whether op (as read from the store, before a use spends it) agrees with the record its
 * audit_seq names: 0, or -1 with err audit_broken naming the first field that differs (the
 * store was changed behind approvald; logged). */
int ops_check_audited(p11g_txn *t, const struct p11g_op *op, p11g_err *err);

/* At start: every active operation without a record of its state (changed by a version
 * before such records) gets one ("recorded"), so that every use can be checked.  0 with
 * *ret_count, or -1 with err. */
int p11g_ops_record_states(struct p11g_ops *o, size_t *ret_count, p11g_err *err);

#define P11G_REPLAY_FINDINGS_MAX 20
#define P11G_REPLAY_IDS_MAX      (1u << 30)

/* audit --verify's replay: fed every verified record (p11g_replay_record as the chain walk's
 * visitor), then compared with every stored operation (p11g_replay_compare). */
struct p11g_replay {
	bool full;            /* the walk started at record 1 */
	uint64_t through;     /* the last record verified (set by the caller before compare) */
	struct replayed *ops; /* by operation id */
	size_t n_ops;
	uint64_t records;     /* records visited */
	uint64_t operations;  /* stored operations compared */
	uint64_t unrecorded;  /* ended operations last changed before state records */
	uint64_t changed;     /* operations changed since the walk began (their records are the
	                       * next walk's) */
	EVP_PKEY *pubkey;     /* the audit key's public half: checkpoints checked (borrowed) */
	uint64_t checkpoints; /* checkpoints whose signature verified */
	uint64_t covered;     /* the last record a verified checkpoint covers (0: none) */
	/* with pubkey: the hashes of the last P11G_CHECKPOINT_LAG_MAX records, by seq modulo */
	struct p11g_replay_hash *recent;
	uint64_t n_findings;
	json_t *findings; /* the first P11G_REPLAY_FINDINGS_MAX, as text */
};

void p11g_replay_init(struct p11g_replay *r, bool full);
void p11g_replay_clear(struct p11g_replay *r);
int p11g_replay_record(uint64_t seq, const json_t *rec, void *arg, p11g_err *err);
int p11g_replay_compare(p11g_store *s, struct p11g_replay *r, p11g_err *err);

/*
 * audit --verify: the chain after from (NULL or seq 0: all of it) up to the head as it begins,
 * read in many short transactions (approvald's writes meanwhile reuse the pages they free),
 * every record replayed, every
 * stored operation compared with its last record, and with pubkey every checkpoint's
 * signature and its place in the chain.  0 with a report {records (the last verified), from,
 * hash (of the last), operations, unrecorded, changed, ok; with pubkey: checkpoints, covered (the
 * last verified checkpoint's record: it and all before are covered), uncovered (records after it)},
 * or -1 with err audit_broken naming the first break of the chain, or the first findings of the
 * replay.
 * known (optional): a record a walk before ended at, which must still carry its hash.  With
 * pubkey, a log that no checkpoint of that key covers is broken too.
 */
int p11g_audit_check(p11g_store *s, const struct p11g_audit_mark *from,
                     const struct p11g_audit_mark *known, EVP_PKEY *pubkey, json_t **ret_report,
                     p11g_err *err);

#endif
