/* What audit.c needs from store.c (the chain head and the raw audit table) without seeing LMDB. */
#ifndef P11GATE_STORE_INTERNAL_H
#define P11GATE_STORE_INTERNAL_H

#include "approvald/store.h"

/* The chain head kept in the meta table next to (not inside) the records, so
 * that deleting the newest records is visible. */
struct p11g_audit_head {
	bool present;                            /* false: meta holds no head (empty log) */
	uint64_t seq;                            /* last record; 0 when absent */
	unsigned char hash[P11G_AUDIT_HASH_LEN]; /* its hash; zeros when absent */
};

/* Errors: -1 with err store_error (LMDB), or audit_broken when the head in
 * meta cannot be read. */
int p11g_store_audit_head(p11g_txn *t, struct p11g_audit_head *ret, p11g_err *err);

/* Whether head (read in t) is the one approvald wrote last: 0, or -1 with err audit_broken
 * (logged) when the store's chain was changed behind it. */
int p11g_store_audit_expect(p11g_txn *t, const struct p11g_audit_head *head, p11g_err *err);

/* Stores len bytes of record text under seq, which must not exist yet, and
 * moves the head to (seq, hash) in the same transaction.  Errors: -1 with err
 * store_error (LMDB, map full: the write is retried), or audit_broken when a
 * record seq already exists (the head was moved back behind its records). */
int p11g_store_audit_put(p11g_txn *t, uint64_t seq, const char *text, size_t len,
                         const unsigned char hash[P11G_AUDIT_HASH_LEN], p11g_err *err);

/* obj, the compact text of a JSON object with at least one member, with
 * "name":value added last (value already JSON text); malloc'd, NULL when obj
 * is not such a text or memory ran out. */
char *p11g_json_text_add(const char *obj, const char *name, const char *value);

/* A raw record: text is not NUL-terminated and is valid only for the call.
 * Returns 0 to go on, 1 to stop, a negative value to abort (err set by it). */
typedef int (*p11g_store_raw_fn)(uint64_t seq, const char *text, size_t len, void *arg,
                                 p11g_err *err);

/* Visits the audit table in key order from the first key above since.  The
 * visitor's negative value is returned as is.  Errors: -1 with err
 * store_error (LMDB) or audit_broken (a key that is not 8 bytes). */
int p11g_store_audit_scan(p11g_txn *t, uint64_t since, p11g_store_raw_fn fn, void *arg,
                          p11g_err *err);

#endif
