/* The store's LMDB side, shared by store.c (environment, transactions, meta, audit table),
 * store_ops.c (operations, their cache and their indexes) and store_outbox.c (notifications
 * waiting).  Nothing else includes it. */
#ifndef P11GATE_STORE_LMDB_H
#define P11GATE_STORE_LMDB_H

#include <lmdb.h>

#include "approvald/op.h"
#include "approvald/store_internal.h"

#define OP_CACHE 256 /* decoded operations kept, by id modulo this */

struct p11g_store {
	MDB_env *env;
	MDB_dbi meta, ops, active, audit;
	/* The indexes of active operations (store_ops.c): by the keys they could name, by the end
	 * of their window, and (pending ones) by orderer.  indexed: false for a store of schema 1
	 * opened read-only (they are built when it is first opened for writing). */
	MDB_dbi by_key, by_expiry, pending_by;
	bool indexed;
	/* Notifications waiting for delivery (store_outbox.c), by delivery id; no_outbox: an
	 * older store opened read-only, which has none. */
	MDB_dbi outbox, outbox_due; /* and its entries by (next try, id): those due found at once */
	bool no_outbox;
	char *dir;
	unsigned int env_flags;
	uint64_t max_map;
	unsigned int reads; /* open read snapshots: the map must not move under them */
	/* A read-only store's last read transaction, reset (it holds no snapshot) and renewed
	 * for the next read; the first is begun at open.  Beginning a transaction takes LMDB's
	 * reader-table mutex, which every process's readers share (MDB_NOTLS): approvald's loop
	 * among them.  A renewal keeps its slot and takes no lock, so a reader at SCHED_IDLE
	 * (approvald-read, the verify walk: idle once the store is open) takes that mutex again
	 * only when a renewal is refused (the writer grew the map) or for a read within a
	 * read. */
	MDB_txn *kept_read;
	bool writing;
	bool read_only;
	/* Group commit (p11g_store_batch_begin): writes go into nested
	 * transactions of `batch`, which one commit makes durable at the end. */
	bool batching;
	MDB_txn *batch;
	int batch_failed;   /* an intermediate commit failed: the batch reports it */
	p11g_err batch_err; /* and why */
	/* Decoded operations as last read or written, each with the exact bytes it was decoded
	 * from or encoded to: a read whose bytes are the same takes the decoded one (see
	 * op_view).  Whatever the transactions did (nested ones aborted, a batch undone), the
	 * bytes in the store decide. */
	struct op_cached {
		uint64_t id;
		char *text;
		size_t len;
		struct p11g_op *op; /* never changed once here */
	} op_cache[OP_CACHE];
	/* The audit record this process last wrote for each operation it changed (an open
	 * addressing table by id; at most RECENT_MAX): a use refuses an operation put back to
	 * an earlier record of itself behind approvald (store_ops.c, p11g_txn_op_recent). */
	struct op_recent {
		uint64_t id, seq; /* id 0: free */
	} * recent;
	size_t n_recent, cap_recent;
	/* The chain head approvald knows it wrote: read at open, then what each commit left
	 * (trusted); what the open batch's committed nested transactions left (batch_head).  An
	 * append that finds another head in the store refuses (p11g_store_audit_expect). */
	struct p11g_audit_head trusted, batch_head;
	/* The audit chain head as last read or written, by its exact bytes. */
	char head_text[128];
	size_t head_len; /* 0: none kept */
	struct p11g_audit_head head;
};

struct p11g_txn {
	p11g_store *s;
	MDB_txn *txn;
	bool write;
	/* The first LMDB error: LMDB refuses to commit after it, and the write
	 * loop must see MDB_MAP_FULL even when the body turned it into -1. */
	int failed;
	/* the head this transaction's appends left (present: it appended) */
	struct p11g_audit_head wrote;
};

static inline void p11g_txn_abortp(MDB_txn **txn)
{
	if (*txn)
		mdb_txn_abort(*txn);
}
static inline void p11g_cursor_closep(MDB_cursor **c)
{
	if (*c)
		mdb_cursor_close(*c);
}
#define _cleanup_txn_    __attribute__((cleanup(p11g_txn_abortp)))
#define _cleanup_cursor_ __attribute__((cleanup(p11g_cursor_closep)))
#define _cleanup_json_   __attribute__((cleanup(json_decrefp)))

/* Big-endian keys sort in numeric order under LMDB's default memcmp. */
static inline void be64_put(uint64_t v, unsigned char b[8])
{
	for (int i = 7; i >= 0; i--) {
		b[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

static inline uint64_t be64_get(const unsigned char b[8])
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

static inline json_t *json_from(const MDB_val *v, size_t flags)
{
	json_error_t jerr;
	return json_loadb(v->mv_data, v->mv_size, flags, &jerr);
}

/* The transaction's first LMDB error rc as a store_error sentence; -1. */
__attribute__((format(printf, 4, 5))) int p11g_store_txn_fail(p11g_txn *t, p11g_err *err, int rc,
                                                              const char *fmt, ...);
/* 0 when t may be used (and written, when write); -1 with err otherwise. */
int p11g_store_txn_usable(p11g_txn *t, bool write, p11g_err *err);

/* store_ops.c: empties the cache of decoded operations (at close). */
void p11g_store_ops_free(p11g_store *s);
/* store_ops.c: files every active operation in the index tables (a store of schema 1). */
int p11g_store_index_build(p11g_txn *t, p11g_err *err);

#endif
