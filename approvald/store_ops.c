/* The store's operations: decoded once and cached by their bytes, written in their one
 * encoding, walked, and filed in the index tables the hot paths look them up by. */
#include "approvald/store_lmdb.h"

#include <inttypes.h>

#include "p11gate/keyid.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

static void op_freep(struct p11g_op **op)
{
	if (*op) {
		p11g_op_clear(*op);
		free(*op);
	}
}
#define _cleanup_opp_ __attribute__((cleanup(op_freep)))

/* Takes text and op, both or neither NULL. */
static void op_cached_set(struct op_cached *e, uint64_t id, char *text, size_t len,
                          struct p11g_op *op)
{
	free(e->text);
	op_freep(&e->op);
	*e = (struct op_cached){.id = id, .text = text, .len = len, .op = op};
}

static int index_update(p11g_txn *t, const struct p11g_op *old, const struct p11g_op *op,
                        p11g_err *err);

void p11g_store_ops_free(p11g_store *s)
{
	for (size_t i = 0; i < OP_CACHE; i++)
		op_cached_set(&s->op_cache[i], 0, NULL, 0, NULL);
	free(s->recent);
	s->recent = NULL;
	s->n_recent = s->cap_recent = 0;
}

/* The operation stored as the bytes v under id, decoded into *ret. */
static int op_decode_val(p11g_txn *t, uint64_t id, const MDB_val *v, struct p11g_op *ret,
                         p11g_err *err)
{
	_cleanup_json_ json_t *j = json_from(v, JSON_REJECT_DUPLICATES);
	p11g_err why = {0};
	if (!j)
		return p11g_err_set(err, P11G_E_STORE,
		                    "store in %s: operation %" PRIu64 " is not JSON", t->s->dir,
		                    id);
	if (p11g_op_decode(j, ret, &why) < 0)
		return p11g_err_set(err, P11G_E_STORE, "store in %s: operation %" PRIu64 ": %s",
		                    t->s->dir, id, why.msg);
	if (ret->id != id) {
		p11g_op_clear(ret);
		return p11g_err_set(err, P11G_E_STORE,
		                    "store in %s: operation %" PRIu64 " holds operation %" PRIu64,
		                    t->s->dir, id, ret->id);
	}
	return 0;
}

#ifdef P11G_CHECK_CACHES
/* The sanitizer build proves the cache answers what a decode would. */
static void op_cache_check(p11g_txn *t, uint64_t id, const MDB_val *v, const struct p11g_op *op)
{
	struct p11g_op fresh = {0};
	if (op_decode_val(t, id, v, &fresh, NULL) < 0) {
		p11g_error("operation %" PRIu64 ": cached, but its bytes do not decode", id);
		abort();
	}
	_cleanup_json_ json_t *a = p11g_op_encode(&fresh), *b = p11g_op_encode(op);
	p11g_op_clear(&fresh);
	if (!a || !b || !json_equal(a, b)) {
		p11g_error("operation %" PRIu64 ": cached copy differs from the store", id);
		abort();
	}
}
#endif

/*
 * The operation stored as the bytes v under id: the cache's when the bytes are those it holds,
 * otherwise decoded into *tmp (the caller's to clear), and moved into the cache when keep.
 * *ret is borrowed until the next call into the store.
 */
static int op_view(p11g_txn *t, uint64_t id, const MDB_val *v, bool keep, struct p11g_op *tmp,
                   const struct p11g_op **ret, p11g_err *err)
{
	struct op_cached *e = &t->s->op_cache[id % OP_CACHE];
	if (e->op && e->id == id && e->len == v->mv_size &&
	    !memcmp(e->text, v->mv_data, v->mv_size)) {
#ifdef P11G_CHECK_CACHES
		op_cache_check(t, id, v, e->op);
#endif
		*ret = e->op;
		return 0;
	}
	if (op_decode_val(t, id, v, tmp, err) < 0)
		return -1;
	*ret = tmp;
	if (!keep)
		return 0;
	struct p11g_op *op = malloc(sizeof(*op));
	char *text = malloc(v->mv_size ? v->mv_size : 1);
	if (!op || !text) {
		free(op);
		free(text);
		return 0; /* not kept: it was read all the same */
	}
	memcpy(text, v->mv_data, v->mv_size);
	*op = *tmp;
	*tmp = (struct p11g_op){0};
	op_cached_set(e, id, text, v->mv_size, op);
	*ret = op;
	return 0;
}

/* The bytes stored under id; -ENOENT (err untouched) when none. */
static int op_bytes(p11g_txn *t, uint64_t id, MDB_val *ret, p11g_err *err)
{
	unsigned char kb[8];
	MDB_val k = {.mv_size = sizeof(kb), .mv_data = kb};
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	be64_put(id, kb);
	int rc = mdb_get(t->txn, t->s->ops, &k, ret);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot read operation %" PRIu64, id);
	return 0;
}

int p11g_txn_op_get(p11g_txn *t, uint64_t id, struct p11g_op *ret, p11g_err *err)
{
	struct p11g_op tmp __attribute__((cleanup(p11g_op_clear))) = {0};
	const struct p11g_op *op;
	MDB_val v;
	int r = op_bytes(t, id, &v, err);
	if (r < 0)
		return r;
	if (op_view(t, id, &v, true, &tmp, &op, err) < 0)
		return -1;
	if (p11g_op_copy(op, ret) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "out of memory reading operation %" PRIu64, id);
	return 0;
}

#define RECENT_MAX (1u << 22) /* operations remembered: 64 MiB of table at most */

static size_t recent_slot(const struct op_recent *tab, size_t cap, uint64_t id)
{
	size_t i = (size_t)(id * 0x9e3779b97f4a7c15ULL) & (cap - 1);
	while (tab[i].id && tab[i].id != id)
		i = (i + 1) & (cap - 1);
	return i;
}

/* Remembers seq as op id's last record; a full or unallocatable table remembers no more
 * (the check then trusts the store for the rest, as before a restart). */
static void recent_set(p11g_store *s, uint64_t id, uint64_t seq)
{
	bool known = s->cap_recent && s->recent[recent_slot(s->recent, s->cap_recent, id)].id;
	if (!known && s->n_recent >= RECENT_MAX)
		return;
	if (!known && 2 * (s->n_recent + 1) > s->cap_recent) {
		size_t cap = s->cap_recent ? 2 * s->cap_recent : 1024;
		struct op_recent *tab = calloc(cap, sizeof(*tab));
		if (!tab)
			return;
		for (size_t i = 0; i < s->cap_recent; i++)
			if (s->recent[i].id)
				tab[recent_slot(tab, cap, s->recent[i].id)] = s->recent[i];
		free(s->recent);
		s->recent = tab;
		s->cap_recent = cap;
	}
	size_t i = recent_slot(s->recent, s->cap_recent, id);
	if (!s->recent[i].id)
		s->n_recent++;
	s->recent[i] = (struct op_recent){id, seq};
}

int p11g_txn_op_recent(p11g_txn *t, uint64_t id, uint64_t *ret_seq)
{
	const p11g_store *s = t->s;
	if (!s->cap_recent)
		return -ENOENT;
	size_t i = recent_slot(s->recent, s->cap_recent, id);
	if (!s->recent[i].id)
		return -ENOENT;
	*ret_seq = s->recent[i].seq;
	return 0;
}

int p11g_txn_op_put(p11g_txn *t, const struct p11g_op *op, p11g_err *err)
{
	unsigned char kb[8];
	MDB_val k = {.mv_size = sizeof(kb), .mv_data = kb}, v;
	uint64_t id = op->id;
	if (p11g_store_txn_usable(t, true, err) < 0)
		return -1;
	_cleanup_json_ json_t *j = p11g_op_encode(op);
	_cleanup_opp_ struct p11g_op *back = calloc(1, sizeof(*back));
	p11g_err why = {0};
	if (!j || !back)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot encode operation %" PRIu64, id);
	/* A record approvald could not decode would take the operation out of every decision
	 * and every use: what is stored is what reads back, and what reads back is cached. */
	if (p11g_op_decode(j, back, &why) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "operation %" PRIu64
		                    " would be stored in a form approvald cannot "
		                    "read back (%s); nothing changed",
		                    id, why.msg);
	_cleanup_free_ char *text = json_dumps(j, JSON_COMPACT);
	if (!text)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot encode operation %" PRIu64, id);
	/* The indexes move from what was stored to what is: a record that does not decode
	 * leaves its entries behind, which the walks skip (they read every operation they
	 * find). */
	struct p11g_op was_tmp __attribute__((cleanup(p11g_op_clear))) = {0};
	const struct p11g_op *was = NULL;
	MDB_val ov;
	int r = op_bytes(t, id, &ov, err);
	if (r < 0 && r != -ENOENT)
		return -1;
	if (r == 0 && op_view(t, id, &ov, false, &was_tmp, &was, NULL) < 0)
		was = NULL;
	if (index_update(t, was, back, err) < 0)
		return -1;

	be64_put(id, kb);
	size_t len = strlen(text);
	v = (MDB_val){.mv_size = len, .mv_data = text};
	int rc = mdb_put(t->txn, t->s->ops, &k, &v, 0);
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot write operation %" PRIu64, id);
	if (p11g_op_state_active(op->state)) {
		/* The state is the index value only so that a dump reads well.
		 * An entry that already says so is left alone: a put would still
		 * copy its page into the commit (a use rewrites the op, seldom
		 * its state). */
		char state_text[32];
		size_t n = (size_t)snprintf(state_text, sizeof(state_text), "\"%s\"",
		                            p11g_op_state_name(op->state));
		MDB_val cur;
		rc = mdb_get(t->txn, t->s->active, &k, &cur);
		if (rc == MDB_NOTFOUND ||
		    (rc == 0 && (cur.mv_size != n || memcmp(cur.mv_data, state_text, n))))
			rc = mdb_put(t->txn, t->s->active, &k,
			             &(MDB_val){.mv_size = n, .mv_data = state_text}, 0);
	} else if ((rc = mdb_del(t->txn, t->s->active, &k, NULL)) == MDB_NOTFOUND) {
		rc = 0;
	}
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot index operation %" PRIu64, id);
	if (op->audit_seq)
		recent_set(t->s, id, op->audit_seq);
	/* The next read of these bytes takes what they decode to without decoding them. */
	op_cached_set(&t->s->op_cache[id % OP_CACHE], id, text, len, back);
	text = NULL; /* the cache's now */
	back = NULL;
	return 0;
}

/* The walk of p11g_txn_op_foreach (ascending from next) and _desc (descending from next). */
static int op_walk(p11g_txn *t, bool active_only, uint64_t next, bool desc, p11g_op_visit_fn fn,
                   void *arg, p11g_err *err)
{
	_cleanup_cursor_ MDB_cursor *cur = NULL;
	int rc = mdb_cursor_open(t->txn, active_only ? t->s->active : t->s->ops, &cur);
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot walk operations");
	for (;;) {
		unsigned char kb[8];
		MDB_val k = {.mv_size = sizeof(kb), .mv_data = kb}, v;
		struct p11g_op tmp __attribute__((cleanup(p11g_op_clear))) = {0};
		const struct p11g_op *op = NULL;
		/* Seek afresh every time: the visitor may change the tables
		 * (a state change drops the op from the index we walk). */
		be64_put(next, kb);
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		/* descending: the greatest id at or below next */
		if (desc && rc == MDB_NOTFOUND)
			rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
		else if (desc && rc == 0 && (k.mv_size != 8 || be64_get(k.mv_data) != next))
			rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
		if (rc == MDB_NOTFOUND)
			return 0;
		if (rc)
			return p11g_store_txn_fail(t, err, rc, "cannot walk operations");
		if (k.mv_size != 8)
			return p11g_err_set(err, P11G_E_STORE,
			                    "store in %s: operation key of %zu bytes (not an id)",
			                    t->s->dir, k.mv_size);
		uint64_t id = be64_get(k.mv_data);
		if (active_only) {
			/* The index is derived: an id whose op is gone or no longer
			 * active (edited outside approvald) is skipped, not fatal.
			 * Active operations are what every use walks: kept. */
			int r = op_bytes(t, id, &v, err);
			if (r < 0 && r != -ENOENT)
				return -1;
			if (r == 0 && op_view(t, id, &v, true, &tmp, &op, err) < 0)
				return -1;
			if (op && !p11g_op_state_active(op->state))
				op = NULL;
		} else if (op_view(t, id, &v, false, &tmp, &op, err) < 0) {
			return -1;
		}
		if (op) {
			int r = fn(op, arg);
			if (r < 0)
				return r;
			if (r > 0)
				return 0;
		}
		if (desc ? id <= 1 : id == UINT64_MAX)
			return 0;
		next = desc ? id - 1 : id + 1;
	}
}

int p11g_txn_op_foreach(p11g_txn *t, bool active_only, uint64_t after, p11g_op_visit_fn fn,
                        void *arg, p11g_err *err)
{
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	if (after == UINT64_MAX)
		return 0;
	return op_walk(t, active_only, after + 1, false, fn, arg, err);
}

int p11g_txn_op_foreach_desc(p11g_txn *t, bool active_only, uint64_t before, p11g_op_visit_fn fn,
                             void *arg, p11g_err *err)
{
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	if (before == 1)
		return 0;
	return op_walk(t, active_only, before ? before - 1 : UINT64_MAX, true, fn, arg, err);
}

/* ---- indexes ------------------------------------------------------------------------ */

/* One index entry of an operation: a key in one of the index tables (values are empty). */
struct ix_entry {
	MDB_dbi dbi;
	size_t len;
	unsigned char key[P11G_KEY_TERM_MAX + 8];
};

/* The entries of an active operation: one per distinct key term ("term\0id"), one by the end
 * of its window (end with the sign bit flipped, then id: ascending order is time order), and,
 * while pending, one by orderer (uid, then id).  A malloc'd array (NULL with *n 0 for an
 * operation that is not active); -1 when memory ran out. */
static int op_entries(const p11g_store *s, const struct p11g_op *op, struct ix_entry **ret,
                      size_t *n)
{
	*ret = NULL;
	*n = 0;
	if (!p11g_op_state_active(op->state))
		return 0;
	struct ix_entry *e = calloc(op->n_keys + 2, sizeof(*e));
	if (!e)
		return -1;
	for (size_t i = 0; i < op->n_keys; i++) {
		char term[P11G_KEY_TERM_MAX];
		p11g_keyuri_term(op->keys[i].uri, term);
		size_t tl = strlen(term) + 1;
		bool dup = false;
		for (size_t j = 0; j < *n && !dup; j++)
			dup = e[j].len == tl + 8 && !memcmp(e[j].key, term, tl);
		if (dup)
			continue;
		e[*n] = (struct ix_entry){.dbi = s->by_key, .len = tl + 8};
		memcpy(e[*n].key, term, tl);
		be64_put(op->id, e[*n].key + tl);
		(*n)++;
	}
	e[*n] = (struct ix_entry){.dbi = s->by_expiry, .len = 16};
	be64_put((uint64_t)op->expires ^ (UINT64_C(1) << 63), e[*n].key);
	be64_put(op->id, e[*n].key + 8);
	(*n)++;
	if (op->state == P11G_OP_PENDING) {
		e[*n] = (struct ix_entry){.dbi = s->pending_by, .len = 16};
		be64_put((uint64_t)op->orderer.uid, e[*n].key);
		be64_put(op->id, e[*n].key + 8);
		(*n)++;
	}
	*ret = e;
	return 0;
}

/* Whether a and b are filed alike: a use changes a count only, and then nothing here need be
 * computed (each entry costs a key URI parse). */
static bool same_entries(const struct p11g_op *a, const struct p11g_op *b)
{
	if (a->state != b->state || a->expires != b->expires || a->orderer.uid != b->orderer.uid ||
	    a->n_keys != b->n_keys)
		return false;
	for (size_t i = 0; i < a->n_keys; i++)
		if (strcmp(a->keys[i].uri, b->keys[i].uri))
			return false;
	return true;
}

static bool ix_has(const struct ix_entry *e, size_t n, const struct ix_entry *x)
{
	for (size_t i = 0; i < n; i++)
		if (e[i].dbi == x->dbi && e[i].len == x->len && !memcmp(e[i].key, x->key, x->len))
			return true;
	return false;
}

/* Moves the entries of old (NULL: none) to those of op: only what differs is written, and a
 * use that changes a count changes nothing here. */
static int index_update(p11g_txn *t, const struct p11g_op *old, const struct p11g_op *op,
                        p11g_err *err)
{
	_cleanup_free_ struct ix_entry *was = NULL, *now = NULL;
	size_t n_was = 0, n_now = 0;
	if (!t->s->indexed || (old && same_entries(old, op)))
		return 0;
	if ((old && op_entries(t->s, old, &was, &n_was) < 0) ||
	    op_entries(t->s, op, &now, &n_now) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "out of memory indexing operation %" PRIu64, op->id);
	for (size_t i = 0; i < n_was; i++) {
		if (ix_has(now, n_now, &was[i]))
			continue;
		MDB_val k = {.mv_size = was[i].len, .mv_data = was[i].key};
		int rc = mdb_del(t->txn, was[i].dbi, &k, NULL);
		if (rc && rc != MDB_NOTFOUND)
			return p11g_store_txn_fail(t, err, rc, "cannot index operation %" PRIu64,
			                           op->id);
	}
	for (size_t i = 0; i < n_now; i++) {
		if (ix_has(was, n_was, &now[i]))
			continue;
		MDB_val k = {.mv_size = now[i].len, .mv_data = now[i].key}, v = {0};
		int rc = mdb_put(t->txn, now[i].dbi, &k, &v, 0);
		if (rc)
			return p11g_store_txn_fail(t, err, rc, "cannot index operation %" PRIu64,
			                           op->id);
	}
	return 0;
}

static int build_visit(const struct p11g_op *op, void *arg)
{
	struct {
		p11g_txn *t;
		p11g_err *err;
	} *b = arg;
	return index_update(b->t, NULL, op, b->err) < 0 ? -2 : 0;
}

int p11g_store_index_build(p11g_txn *t, p11g_err *err)
{
	struct {
		p11g_txn *t;
		p11g_err *err;
	} b = {t, err};
	return p11g_txn_op_foreach(t, true, 0, build_visit, &b, err) < 0 ? -1 : 0;
}

static int id_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Appends to *ids the ids of table whose keys start with prefix (plen bytes) and end in an
 * 8-byte id; with upto, only keys up to upto (16 bytes) inclusive. */
static int ids_with_prefix(p11g_txn *t, MDB_dbi dbi, const void *prefix, size_t plen,
                           const unsigned char *upto, uint64_t **ids, size_t *n, size_t *cap,
                           p11g_err *err)
{
	_cleanup_cursor_ MDB_cursor *cur = NULL;
	MDB_val k = {.mv_size = plen, .mv_data = (void *)prefix}, v;
	int rc = mdb_cursor_open(t->txn, dbi, &cur);
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot walk an index");
	for (rc = mdb_cursor_get(cur, &k, &v, plen ? MDB_SET_RANGE : MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size < plen + 8 || (plen && memcmp(k.mv_data, prefix, plen)))
			break;
		if (upto && (k.mv_size != 16 || memcmp(k.mv_data, upto, 16) > 0))
			break;
		if (*n == *cap) {
			size_t c = *cap ? *cap * 2 : 64;
			uint64_t *m = realloc(*ids, c * sizeof(*m));
			if (!m)
				return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
			*ids = m;
			*cap = c;
		}
		(*ids)[(*n)++] = be64_get((const unsigned char *)k.mv_data + k.mv_size - 8);
	}
	if (rc && rc != MDB_NOTFOUND)
		return p11g_store_txn_fail(t, err, rc, "cannot walk an index");
	return 0;
}

/* Visits the active operations among ids (sorted here, each once). */
static int visit_ids(p11g_txn *t, uint64_t *ids, size_t n, p11g_op_visit_fn fn, void *arg,
                     p11g_err *err)
{
	if (n > 1)
		qsort(ids, n, sizeof(*ids), id_cmp);
	for (size_t i = 0; i < n; i++) {
		struct p11g_op tmp __attribute__((cleanup(p11g_op_clear))) = {0};
		const struct p11g_op *op = NULL;
		MDB_val v;
		if (i && ids[i] == ids[i - 1])
			continue;
		/* An entry whose operation is gone or no longer active (edited outside
		 * approvald) is skipped, as in the active index. */
		int r = op_bytes(t, ids[i], &v, err);
		if (r == -ENOENT)
			continue;
		if (r < 0 || op_view(t, ids[i], &v, true, &tmp, &op, err) < 0)
			return -1;
		if (!p11g_op_state_active(op->state))
			continue;
		if ((r = fn(op, arg)) != 0)
			return r < 0 ? r : 0;
	}
	return 0;
}

int p11g_txn_op_foreach_key(p11g_txn *t, const char *const *terms, size_t n_terms,
                            p11g_op_visit_fn fn, void *arg, p11g_err *err)
{
	_cleanup_free_ uint64_t *ids = NULL;
	size_t n = 0, cap = 0;
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	if (!t->s->indexed)
		return p11g_txn_op_foreach(t, true, 0, fn, arg, err);
	for (size_t i = 0; i < n_terms; i++)
		if (ids_with_prefix(t, t->s->by_key, terms[i], strlen(terms[i]) + 1, NULL, &ids, &n,
		                    &cap, err) < 0)
			return -1;
	return visit_ids(t, ids, n, fn, arg, err);
}

struct due_ctx {
	int64_t now;
	p11g_op_visit_fn fn;
	void *arg;
};

static int due_visit(const struct p11g_op *op, void *arg)
{
	struct due_ctx *c = arg;
	return c->now >= op->expires ? c->fn(op, c->arg) : 0;
}

int p11g_txn_op_foreach_due(p11g_txn *t, int64_t now, p11g_op_visit_fn fn, void *arg, p11g_err *err)
{
	_cleanup_free_ uint64_t *ids = NULL;
	size_t n = 0, cap = 0;
	unsigned char upto[16];
	struct due_ctx c = {now, fn, arg};
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	if (!t->s->indexed)
		return p11g_txn_op_foreach(t, true, 0, due_visit, &c, err);
	be64_put((uint64_t)now ^ (UINT64_C(1) << 63), upto);
	be64_put(UINT64_MAX, upto + 8);
	if (ids_with_prefix(t, t->s->by_expiry, NULL, 0, upto, &ids, &n, &cap, err) < 0)
		return -1;
	return visit_ids(t, ids, n, due_visit, &c, err);
}

struct count_ctx {
	uid_t uid;
	size_t n;
};

static int count_visit(const struct p11g_op *op, void *arg)
{
	struct count_ctx *c = arg;
	c->n += op->state == P11G_OP_PENDING && op->orderer.uid == c->uid;
	return 0;
}

static int pending_visit(const struct p11g_op *op, void *arg)
{
	struct {
		p11g_op_visit_fn fn;
		void *arg;
	} *c = arg;
	return op->state == P11G_OP_PENDING ? c->fn(op, c->arg) : 0;
}

int p11g_txn_op_foreach_pending(p11g_txn *t, p11g_op_visit_fn fn, void *arg, size_t *ret_active,
                                p11g_err *err)
{
	_cleanup_free_ uint64_t *ids = NULL;
	size_t n = 0, cap = 0;
	MDB_stat st;
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	int rc = mdb_stat(t->txn, t->s->active, &st);
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot count the active operations");
	*ret_active = st.ms_entries;
	if (!t->s->indexed) {
		struct {
			p11g_op_visit_fn fn;
			void *arg;
		} c = {fn, arg};
		return p11g_txn_op_foreach(t, true, 0, pending_visit, &c, err);
	}
	if (ids_with_prefix(t, t->s->pending_by, NULL, 0, NULL, &ids, &n, &cap, err) < 0)
		return -1;
	return visit_ids(t, ids, n, fn, arg, err);
}

int p11g_txn_pending_count(p11g_txn *t, uid_t uid, size_t *ret, p11g_err *err)
{
	_cleanup_free_ uint64_t *ids = NULL;
	size_t n = 0, cap = 0;
	unsigned char prefix[8];
	struct count_ctx c = {uid, 0};
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	if (!t->s->indexed) {
		if (p11g_txn_op_foreach(t, true, 0, count_visit, &c, err) < 0)
			return -1;
		*ret = c.n;
		return 0;
	}
	be64_put((uint64_t)uid, prefix);
	if (ids_with_prefix(t, t->s->pending_by, prefix, sizeof(prefix), NULL, &ids, &n, &cap,
	                    err) < 0)
		return -1;
	*ret = n;
	return 0;
}
