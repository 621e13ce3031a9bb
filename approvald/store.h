/* The approvald store: operations and the hash-chained audit log in LMDB (the only user of lmdb.h).
 */
#ifndef P11GATE_STORE_H
#define P11GATE_STORE_H

#include <jansson.h>

#include "p11gate/common.h"

typedef struct p11g_store p11g_store;
typedef struct p11g_txn p11g_txn;

enum p11g_durability {
	P11G_DURABLE_FULL,    /* fsync on every commit: survives power loss (default) */
	P11G_DURABLE_PROCESS, /* MDB_NOSYNC: survives an approvald crash, not a power loss */
};

struct p11g_store_options {
	enum p11g_durability durability;
	uint64_t initial_map_size; /* bytes; 0: 16 MiB */
	uint64_t max_map_size;     /* bytes; 0: 64 GiB */
	bool read_only;            /* open an existing store without writing (offline audit) */
};

/*
 * Opens (creating if needed, mode 0700 dir / 0600 files) the store in dir.
 * Errors: -1 with err store_error naming the directory and the reason.
 */
int p11g_store_open(const char *dir, const struct p11g_store_options *opt, p11g_store **ret,
                    p11g_err *err);
void p11g_store_close(p11g_store *s);
/* Releases the reader slots of processes that died in a read transaction (a killed verify
 * walk's snapshot would otherwise keep the file growing). */
void p11g_store_reader_check(p11g_store *s);
/* The directory it was opened in. */
const char *p11g_store_dir(const p11g_store *s);

/*
 * A transaction body.  Returns 0 to commit, anything else to abort (and that
 * value is returned by p11g_store_write).  The body may run more than once:
 * when the map fills, the transaction is aborted, the map doubled (up to
 * max_map_size) and the body run again, so it must not keep effects outside
 * the transaction from an earlier run.
 */
typedef int (*p11g_txn_fn)(p11g_txn *txn, void *arg, p11g_err *err);

/* Runs fn in one write transaction and commits it durably (per the
 * durability option) before returning 0.  Errors: fn's non-zero value (err
 * as fn set it), or -1 with err store_error when the commit fails (disk
 * full, I/O error, map at its maximum): nothing of fn's was recorded. */
int p11g_store_write(p11g_store *s, p11g_txn_fn fn, void *arg, p11g_err *err);
/*
 * Group commit.  Between p11g_store_batch_begin and p11g_store_batch_end,
 * each p11g_store_write runs in a nested transaction of one batch
 * transaction (so a failing body still undoes only itself) and returns
 * without anything durable; p11g_store_batch_end commits the batch with one
 * sync and returns -1 (store_error) when that, or an intermediate commit
 * the map's growth forced, failed.  Callers must not let anything depend on
 * a batched write (a signature, a reply) before p11g_store_batch_end said 0.
 * Reads see the last commit, not the open batch.
 */
void p11g_store_batch_begin(p11g_store *s);
int p11g_store_batch_end(p11g_store *s, p11g_err *err);

/* Runs fn in a read-only snapshot. */
int p11g_store_read(p11g_store *s, p11g_txn_fn fn, void *arg, p11g_err *err);

/* Current map size and bytes in use, for status and benchmarks. */
void p11g_store_stat(p11g_store *s, uint64_t *ret_map_size, uint64_t *ret_used);

/* ---- operations: struct p11g_op (op.h) keyed by its 64-bit id ------------- */

struct p11g_op;

/* Allocates the next id (1, 2, ...), persistent across restarts. */
int p11g_txn_next_id(p11g_txn *t, uint64_t *ret_id, p11g_err *err);
/* The highest id allocated so far (0 when none), without allocating. */
int p11g_txn_last_id(p11g_txn *t, uint64_t *ret_id, p11g_err *err);
/* The operation stored under id, decoded, the caller's own (p11g_op_clear).  -ENOENT (err
 * untouched) when absent; -1 store_error when it cannot be read or does not decode (a damaged
 * record is never an absent one). */
int p11g_txn_op_get(p11g_txn *t, uint64_t id, struct p11g_op *ret, p11g_err *err);
/* Stores op under op->id in the one stored form (p11g_op_encode) and keeps the active index:
 * the op is in it while pending or approved.  The store keeps its own decoded copy for the
 * walks below; op stays the caller's. */
int p11g_txn_op_put(p11g_txn *t, const struct p11g_op *op, p11g_err *err);

/* Visits operations in ascending id order, starting after `after` (0: from
 * the first).  active_only: only pending/approved ones (through the index).
 * The visitor returns 0 to go on, 1 to stop, a negative value to abort (that
 * value is returned).  op is borrowed for the call and may be the store's
 * cached copy: read it, or p11g_op_copy it to keep or change it.  A record
 * that does not decode ends the walk with store_error. */
typedef int (*p11g_op_visit_fn)(const struct p11g_op *op, void *arg);
int p11g_txn_op_foreach(p11g_txn *t, bool active_only, uint64_t after, p11g_op_visit_fn fn,
                        void *arg, p11g_err *err);
/* The same newest first: ids below before (0: from the newest). */
int p11g_txn_op_foreach_desc(p11g_txn *t, bool active_only, uint64_t before, p11g_op_visit_fn fn,
                             void *arg, p11g_err *err);

/* The hot paths' walks, through indexes kept with every put (store_ops.c), so that their cost
 * does not grow with operations they do not concern.  Visitors as above; each visits active
 * operations only, once each, in ascending id order.
 * _key: those with a key entry filed under one of terms (p11gate/keyid.h: a key's three
 * terms find every operation whose key URIs could name it, and maybe a few more).
 * _due: those whose window ended at or before now. */
int p11g_txn_op_foreach_key(p11g_txn *t, const char *const *terms, size_t n_terms,
                            p11g_op_visit_fn fn, void *arg, p11g_err *err);
int p11g_txn_op_foreach_due(p11g_txn *t, int64_t now, p11g_op_visit_fn fn, void *arg,
                            p11g_err *err);
/* A number kept in the meta table under name (names the store itself uses are not for this):
 * 0, -ENOENT (err untouched) when absent, or -1 with err store_error. */
int p11g_txn_meta_get_int(p11g_txn *t, const char *name, int64_t *ret, p11g_err *err);
int p11g_txn_meta_put_int(p11g_txn *t, const char *name, int64_t value, p11g_err *err);
/* Visits the numbers named prefix... in name order: fn gets the name after the prefix; it
 * returns 0 to go on, 1 to stop, a negative value to abort with it. */
int p11g_txn_meta_foreach_int(p11g_txn *t, const char *prefix,
                              int (*fn)(const char *name, int64_t value, void *arg), void *arg,
                              p11g_err *err);
/* Deletes up to max of the numbers named prefix... whose value is below before: 0 with how
 * many went in *ret_n, or -1 with err store_error. */
int p11g_txn_meta_prune_int(p11g_txn *t, const char *prefix, int64_t before, size_t max,
                            size_t *ret_n, p11g_err *err);

/* Notifications waiting for delivery (issue 21): entries (JSON objects) by delivery id, written
 * in the transaction of the event they tell of.  _add gives the next id (never reused);
 * _foreach visits them in id order from after + 1 (the visitor returns 0 to go on, 1 to
 * stop, a negative value to abort with it); _get answers -ENOENT (err untouched) for none. */
int p11g_txn_outbox_add(p11g_txn *t, const json_t *entry, uint64_t *ret_id, p11g_err *err);
int p11g_txn_outbox_put(p11g_txn *t, uint64_t id, const json_t *entry, p11g_err *err);
int p11g_txn_outbox_get(p11g_txn *t, uint64_t id, json_t **ret, p11g_err *err);
int p11g_txn_outbox_del(p11g_txn *t, uint64_t id, p11g_err *err);
typedef int (*p11g_outbox_visit_fn)(uint64_t id, const json_t *entry, void *arg);
int p11g_txn_outbox_foreach(p11g_txn *t, uint64_t after, p11g_outbox_visit_fn fn, void *arg,
                            p11g_err *err);
/* The entries whose integer member "next" (seconds) is at or before now, soonest first,
 * through an index kept by _add, _put and _del: a walk costs what is due, not the outbox. */
int p11g_txn_outbox_foreach_due(p11g_txn *t, int64_t now, p11g_outbox_visit_fn fn, void *arg,
                                p11g_err *err);
/* How many entries, and the first (oldest) one's id (0: none). */
int p11g_txn_outbox_stat(p11g_txn *t, uint64_t *ret_count, uint64_t *ret_first, p11g_err *err);

/* The audit record this process last wrote for operation id (p11g_txn_op_put of an operation
 * with audit_seq, whether or not its transaction was then committed): 0, or -ENOENT when it
 * wrote none (or remembers no more). */
int p11g_txn_op_recent(p11g_txn *t, uint64_t id, uint64_t *ret_seq);
/* Visits the pending operations (through the index of pending ones by orderer), and says how
 * many operations are active (pending or approved) in all: the cost of status grows with
 * what is pending, not with what is approved. */
int p11g_txn_op_foreach_pending(p11g_txn *t, p11g_op_visit_fn fn, void *arg, size_t *ret_active,
                                p11g_err *err);
/* How many pending operations uid ordered. */
int p11g_txn_pending_count(p11g_txn *t, uid_t uid, size_t *ret, p11g_err *err);

/* ---- audit: append-only, hash-chained ----------------------------------- */

/*
 * Appends one record.  event is borrowed and must hold at least "event"
 * (string); the store adds "seq" (1, 2, ...), "time" (seconds, if absent),
 * "prev" (hex hash of the previous record, 64 zeros for the first) and
 * "hash" = sha256(prev || canonical JSON of the record without "hash"),
 * canonical meaning compact with sorted keys (json_dumps JSON_COMPACT |
 * JSON_SORT_KEYS).  The record is stored as that canonical text with
 * ,"hash":"..." added before its closing brace.  The chain head (last seq
 * and hash) is kept in the meta table so that deleting the newest records is
 * also detected.
 */
int p11g_txn_audit_append(p11g_txn *t, const json_t *event, uint64_t *ret_seq, p11g_err *err);

/* Visits records with seq > since in order; visitor as for operations. */
typedef int (*p11g_audit_visit_fn)(uint64_t seq, json_t *record, void *arg);
int p11g_txn_audit_foreach(p11g_txn *t, uint64_t since, p11g_audit_visit_fn fn, void *arg,
                           p11g_err *err);

/* The record seq, parsed (a new reference).  -ENOENT (err untouched) when there is none; -1
 * with err store_error or audit_broken (a record that is not a JSON object). */
int p11g_txn_audit_get(p11g_txn *t, uint64_t seq, json_t **ret, p11g_err *err);

#define P11G_AUDIT_HASH_LEN 32

/* The last record's number (0: none). */
int p11g_txn_audit_head_seq(p11g_txn *t, uint64_t *ret, p11g_err *err);

/* A place in the chain: record seq and its hash (seq 0: before the first record). */
struct p11g_audit_mark {
	uint64_t seq;
	unsigned char hash[P11G_AUDIT_HASH_LEN];
};

/*
 * Walks the chain after from (NULL: the whole chain) to the head.  0 with *ret_through (the
 * head's seq and hash) when intact; otherwise -1 with err audit_broken and a message naming
 * the first bad record: "record 17: hash mismatch (record altered)", "record 17: missing
 * (expected after 16)", "record 17: out of order (holds seq 18)", "record 17: prev does not
 * match record 16", "chain head: records after 41 deleted".  A walk from a mark first checks
 * that record from->seq still carries from->hash (an edit before it that re-hashed every
 * later record changes it).  visit (optional) sees each record once its links are checked;
 * its non-zero value stops the walk with err set by it (-1).
 */
typedef int (*p11g_audit_check_fn)(uint64_t seq, const json_t *record, void *arg, p11g_err *err);
int p11g_txn_audit_verify_from(p11g_txn *t, const struct p11g_audit_mark *from,
                               p11g_audit_check_fn visit, void *arg,
                               struct p11g_audit_mark *ret_through, p11g_err *err);
/* The same for the records after from up to upto (0, or the head or beyond: to the head, as
 * above); short of the head, the records must be there up to upto. */
int p11g_txn_audit_verify_range(p11g_txn *t, const struct p11g_audit_mark *from, uint64_t upto,
                                p11g_audit_check_fn visit, void *arg,
                                struct p11g_audit_mark *ret_through, p11g_err *err);
/* Record mark->seq still carries mark->hash: 0, or -1 with err audit_broken. */
int p11g_txn_audit_check_mark(p11g_txn *t, const struct p11g_audit_mark *mark, p11g_err *err);
/* The whole chain, no visitor: *ret_count records. */
int p11g_txn_audit_verify(p11g_txn *t, uint64_t *ret_count, p11g_err *err);

#endif
