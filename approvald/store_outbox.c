/* The outbox (issue 21): notifications waiting for delivery, one entry per delivery, written in
 * the transaction of the event they tell of, so that an event committed is an event told. */
#include "approvald/store.h"

#include "approvald/store_lmdb.h"
#include "p11gate/errors.h"

#ifndef _cleanup_json_
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))
#endif

#define NEXT_ID "outbox_next" /* meta: the next delivery id */

static int no_outbox(p11g_txn *t, p11g_err *err)
{
	return p11g_err_set(err, P11G_E_STORE, "store in %s has no outbox (an older store)",
	                    t->s->dir);
}

/* The due index's key of an entry: its "next" (seconds, big-endian; negative as 0), its id. */
static void due_key(const json_t *entry, uint64_t id, unsigned char k[16])
{
	json_int_t next = json_integer_value(json_object_get(entry, "next"));
	be64_put(next > 0 ? (uint64_t)next : 0, k);
	be64_put(id, k + 8);
}

static int due_del(p11g_txn *t, const json_t *old, uint64_t id, p11g_err *err)
{
	unsigned char kb[16];
	due_key(old, id, kb);
	MDB_val k = {.mv_size = 16, .mv_data = kb};
	int rc = mdb_del(t->txn, t->s->outbox_due, &k, NULL);
	if (rc && rc != MDB_NOTFOUND)
		return p11g_store_txn_fail(t, err, rc, "cannot update the outbox's index");
	return 0;
}

int p11g_txn_outbox_put(p11g_txn *t, uint64_t id, const json_t *entry, p11g_err *err)
{
	unsigned char kb[8], dk[16];
	if (p11g_store_txn_usable(t, true, err) < 0)
		return -1;
	if (t->s->no_outbox)
		return no_outbox(t, err);
	_cleanup_json_ json_t *old = NULL;
	int r = p11g_txn_outbox_get(t, id, &old, err);
	if (r < 0 && r != -ENOENT)
		return -1;
	if (old && due_del(t, old, id, err) < 0)
		return -1;
	_cleanup_free_ char *text = json_dumps(entry, JSON_COMPACT);
	if (!text)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	be64_put(id, kb);
	MDB_val k = {.mv_size = 8, .mv_data = kb}, v = {.mv_size = strlen(text), .mv_data = text};
	int rc = mdb_put(t->txn, t->s->outbox, &k, &v, 0);
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot write notification %llu",
		                           (unsigned long long)id);
	due_key(entry, id, dk);
	MDB_val dkey = {.mv_size = 16, .mv_data = dk}, empty = {.mv_size = 0, .mv_data = ""};
	if ((rc = mdb_put(t->txn, t->s->outbox_due, &dkey, &empty, 0)) != 0)
		return p11g_store_txn_fail(t, err, rc, "cannot update the outbox's index");
	return 0;
}

int p11g_txn_outbox_add(p11g_txn *t, const json_t *entry, uint64_t *ret_id, p11g_err *err)
{
	int64_t next = 1;
	int r = p11g_txn_meta_get_int(t, NEXT_ID, &next, err);
	if (r < 0 && r != -ENOENT)
		return -1;
	if (next < 1)
		return p11g_err_set(err, P11G_E_STORE, "store in %s: meta %s is not positive",
		                    t->s->dir, NEXT_ID);
	if (p11g_txn_outbox_put(t, (uint64_t)next, entry, err) < 0 ||
	    p11g_txn_meta_put_int(t, NEXT_ID, next + 1, err) < 0)
		return -1;
	if (ret_id)
		*ret_id = (uint64_t)next;
	return 0;
}

int p11g_txn_outbox_get(p11g_txn *t, uint64_t id, json_t **ret, p11g_err *err)
{
	unsigned char kb[8];
	MDB_val k = {.mv_size = 8, .mv_data = kb}, v;
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	if (t->s->no_outbox)
		return -ENOENT;
	be64_put(id, kb);
	int rc = mdb_get(t->txn, t->s->outbox, &k, &v);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot read notification %llu",
		                           (unsigned long long)id);
	if (!(*ret = json_from(&v, 0)) || !json_is_object(*ret)) {
		json_decref(*ret);
		*ret = NULL;
		return p11g_err_set(err, P11G_E_STORE, "store in %s: notification %llu is not JSON",
		                    t->s->dir, (unsigned long long)id);
	}
	return 0;
}

int p11g_txn_outbox_del(p11g_txn *t, uint64_t id, p11g_err *err)
{
	unsigned char kb[8];
	MDB_val k = {.mv_size = 8, .mv_data = kb};
	if (p11g_store_txn_usable(t, true, err) < 0)
		return -1;
	if (t->s->no_outbox)
		return no_outbox(t, err);
	_cleanup_json_ json_t *old = NULL;
	int r = p11g_txn_outbox_get(t, id, &old, err);
	if (r == -ENOENT)
		return 0;
	if (r < 0 || due_del(t, old, id, err) < 0)
		return -1;
	be64_put(id, kb);
	int rc = mdb_del(t->txn, t->s->outbox, &k, NULL);
	if (rc && rc != MDB_NOTFOUND)
		return p11g_store_txn_fail(t, err, rc, "cannot delete notification %llu",
		                           (unsigned long long)id);
	return 0;
}

int p11g_txn_outbox_foreach(p11g_txn *t, uint64_t after, p11g_outbox_visit_fn fn, void *arg,
                            p11g_err *err)
{
	MDB_cursor *cur = NULL;
	unsigned char kb[8];
	MDB_val k = {.mv_size = 8, .mv_data = kb}, v;
	int r = 0;
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	if (t->s->no_outbox || after == UINT64_MAX)
		return 0;
	int rc = mdb_cursor_open(t->txn, t->s->outbox, &cur);
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot walk the outbox");
	be64_put(after + 1, kb);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 8) {
			r = p11g_err_set(err, P11G_E_STORE, "store in %s: outbox key of %zu bytes",
			                 t->s->dir, k.mv_size);
			break;
		}
		_cleanup_json_ json_t *e = json_from(&v, 0);
		if (!json_is_object(e)) {
			r = p11g_err_set(err, P11G_E_STORE,
			                 "store in %s: notification %llu is not JSON", t->s->dir,
			                 (unsigned long long)be64_get(k.mv_data));
			break;
		}
		if ((r = fn(be64_get(k.mv_data), e, arg)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (r > 0)
		return 0;
	if (r < 0)
		return r;
	if (rc && rc != MDB_NOTFOUND)
		return p11g_store_txn_fail(t, err, rc, "cannot walk the outbox");
	return 0;
}

int p11g_txn_outbox_foreach_due(p11g_txn *t, int64_t now, p11g_outbox_visit_fn fn, void *arg,
                                p11g_err *err)
{
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	int r = 0, rc;
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	if (t->s->no_outbox)
		return 0;
	if ((rc = mdb_cursor_open(t->txn, t->s->outbox_due, &cur)) != 0)
		return p11g_store_txn_fail(t, err, rc, "cannot walk the outbox's index");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 16) {
			r = p11g_err_set(err, P11G_E_STORE,
			                 "store in %s: outbox index key of %zu bytes", t->s->dir,
			                 k.mv_size);
			break;
		}
		uint64_t next = be64_get(k.mv_data), id = be64_get((unsigned char *)k.mv_data + 8);
		if (now < 0 || next > (uint64_t)now)
			break;
		_cleanup_json_ json_t *e = NULL;
		r = p11g_txn_outbox_get(t, id, &e, err);
		if (r == -ENOENT) {
			r = 0; /* an index entry left behind: nothing to deliver */
			continue;
		}
		if (r < 0 || (r = fn(id, e, arg)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (r > 0)
		return 0;
	if (r < 0)
		return r;
	if (rc && rc != MDB_NOTFOUND)
		return p11g_store_txn_fail(t, err, rc, "cannot walk the outbox's index");
	return 0;
}

int p11g_txn_outbox_stat(p11g_txn *t, uint64_t *ret_count, uint64_t *ret_first, p11g_err *err)
{
	MDB_stat st;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	*ret_count = *ret_first = 0;
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	if (t->s->no_outbox)
		return 0;
	int rc = mdb_stat(t->txn, t->s->outbox, &st);
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot count the outbox");
	*ret_count = st.ms_entries;
	if ((rc = mdb_cursor_open(t->txn, t->s->outbox, &cur)) != 0)
		return p11g_store_txn_fail(t, err, rc, "cannot walk the outbox");
	rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	if (rc == 0 && k.mv_size == 8)
		*ret_first = be64_get(k.mv_data);
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND)
		return p11g_store_txn_fail(t, err, rc, "cannot walk the outbox");
	return 0;
}
