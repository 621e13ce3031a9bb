/* The approvald store in LMDB: environment, map growth, operations, active index, audit table. */
#include "approvald/store_lmdb.h"

#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#include <lmdb.h>

#include "p11gate/log.h"
#include "p11gate/wire.h"

#define MIB                 ((uint64_t)1024 * 1024)
#define DEFAULT_INITIAL_MAP (16 * MIB)
#define DEFAULT_MAX_MAP     (64 * 1024 * MIB)
#define SCHEMA_VERSION      2 /* 2: the index tables by_key, by_expiry, pending_by */
#define N_TABLES            9

static void kept_read_drop(p11g_store *s)
{
	if (s->kept_read)
		mdb_txn_abort(s->kept_read);
	s->kept_read = NULL;
}

static void store_free(p11g_store *s)
{
	if (!s)
		return;
	p11g_store_ops_free(s);
	kept_read_drop(s);
	if (s->batch)
		mdb_txn_abort(s->batch);
	if (s->env)
		mdb_env_close(s->env);
	free(s->dir);
	free(s);
}
static void store_freep(p11g_store **s)
{
	store_free(*s);
}
#define _cleanup_store_ __attribute__((cleanup(store_freep)))

static void size_text(uint64_t bytes, char *buf, size_t n)
{
	if (bytes >= MIB)
		snprintf(buf, n, "%" PRIu64 " MiB", bytes / MIB);
	else
		snprintf(buf, n, "%" PRIu64 " KiB", bytes / 1024);
}

static bool disk_full(int rc)
{
	return rc == ENOSPC || rc == EDQUOT;
}

/* Every LMDB error leaves the store as a store_error sentence naming the
 * directory; a full disk gets the one sentence operators grep for. */
__attribute__((format(printf, 4, 0))) static int vstore_fail(const p11g_store *s, p11g_err *err,
                                                             int rc, const char *fmt, va_list ap)
{
	char what[256];
	if (disk_full(rc))
		return p11g_err_set(err, P11G_E_STORE,
		                    "cannot record: no space left on device in %s", s->dir);
	vsnprintf(what, sizeof(what), fmt, ap);
	return p11g_err_set(err, P11G_E_STORE, "store in %s: %s: %s", s->dir, what,
	                    mdb_strerror(rc));
}

__attribute__((format(printf, 4, 5))) static int store_fail(const p11g_store *s, p11g_err *err,
                                                            int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vstore_fail(s, err, rc, fmt, ap);
	va_end(ap);
	return -1;
}

int p11g_store_txn_fail(p11g_txn *t, p11g_err *err, int rc, const char *fmt, ...)
{
	va_list ap;
	if (!t->failed)
		t->failed = rc;
	va_start(ap, fmt);
	vstore_fail(t->s, err, rc, fmt, ap);
	va_end(ap);
	return -1;
}

int p11g_store_txn_usable(p11g_txn *t, bool write, p11g_err *err)
{
	if (t->failed)
		return store_fail(t->s, err, t->failed, "transaction already failed");
	if (write && !t->write)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "store: write in a read-only transaction");
	return 0;
}

/* ---- meta ----------------------------------------------------------------- */

/* The meta entry's bytes (in the map, valid for the transaction); -ENOENT
 * (err untouched) when absent. */
static int meta_get_raw(p11g_txn *t, const char *name, MDB_val *ret, p11g_err *err)
{
	MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
	int rc = mdb_get(t->txn, t->s->meta, &k, ret);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot read meta %s", name);
	return 0;
}

static int meta_put_raw(p11g_txn *t, const char *name, const char *text, size_t len, p11g_err *err)
{
	MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
	MDB_val v = {.mv_size = len, .mv_data = (void *)text};
	int rc = mdb_put(t->txn, t->s->meta, &k, &v, 0);
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot write meta %s", name);
	return 0;
}

/* *ret is NULL when the entry is absent; bad_code is the error code for an
 * entry that is not JSON. */
static int meta_get(p11g_txn *t, const char *name, const char *bad_code, json_t **ret,
                    p11g_err *err)
{
	MDB_val v;
	int r = meta_get_raw(t, name, &v, err);
	if (r == -ENOENT) {
		*ret = NULL;
		return 0;
	}
	if (r < 0)
		return -1;
	json_t *j = json_from(&v, JSON_DECODE_ANY);
	if (!j)
		return p11g_err_set(err, bad_code, "store in %s: meta %s is not valid JSON",
		                    t->s->dir, name);
	*ret = j;
	return 0;
}

static int meta_put(p11g_txn *t, const char *name, const json_t *value, p11g_err *err)
{
	_cleanup_free_ char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!text)
		return p11g_err_set(err, P11G_E_INTERNAL, "store: cannot encode meta %s", name);
	return meta_put_raw(t, name, text, strlen(text), err);
}

int p11g_txn_meta_get_int(p11g_txn *t, const char *name, int64_t *ret, p11g_err *err)
{
	_cleanup_json_ json_t *j = NULL;
	if (p11g_store_txn_usable(t, false, err) < 0 ||
	    meta_get(t, name, P11G_E_STORE, &j, err) < 0)
		return -1;
	if (!j)
		return -ENOENT;
	if (!json_is_integer(j))
		return p11g_err_set(err, P11G_E_STORE, "store in %s: meta %s is not a number",
		                    t->s->dir, name);
	*ret = (int64_t)json_integer_value(j);
	return 0;
}

int p11g_txn_meta_put_int(p11g_txn *t, const char *name, int64_t value, p11g_err *err)
{
	_cleanup_json_ json_t *j = json_integer(value);
	if (p11g_store_txn_usable(t, true, err) < 0)
		return -1;
	if (!j)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return meta_put(t, name, j, err);
}

int p11g_txn_meta_prune_int(p11g_txn *t, const char *prefix, int64_t before, size_t max,
                            size_t *ret_n, p11g_err *err)
{
	MDB_cursor *cur = NULL;
	size_t plen = strlen(prefix), n = 0;
	MDB_val k = {.mv_size = plen, .mv_data = (void *)prefix}, v;
	int rc;

	*ret_n = 0;
	if (p11g_store_txn_usable(t, true, err) < 0)
		return -1;
	if ((rc = mdb_cursor_open(t->txn, t->s->meta, &cur)) != 0)
		return p11g_store_txn_fail(t, err, rc, "cannot read meta %s...", prefix);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && n < max;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
			break;
		_cleanup_json_ json_t *j = json_from(&v, JSON_DECODE_ANY);
		if (!json_is_integer(j) || json_integer_value(j) >= before)
			continue;
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			break;
		n++;
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND)
		return p11g_store_txn_fail(t, err, rc, "cannot prune meta %s...", prefix);
	*ret_n = n;
	return 0;
}

int p11g_txn_meta_foreach_int(p11g_txn *t, const char *prefix,
                              int (*fn)(const char *name, int64_t value, void *arg), void *arg,
                              p11g_err *err)
{
	MDB_cursor *cur = NULL;
	size_t plen = strlen(prefix);
	MDB_val k = {.mv_size = plen, .mv_data = (void *)prefix}, v;
	int rc, r = 0;

	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	if ((rc = mdb_cursor_open(t->txn, t->s->meta, &cur)) != 0)
		return p11g_store_txn_fail(t, err, rc, "cannot read meta %s...", prefix);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size < plen || k.mv_size > 255 || memcmp(k.mv_data, prefix, plen) != 0)
			break;
		_cleanup_json_ json_t *j = json_from(&v, JSON_DECODE_ANY);
		char name[256];
		if (!json_is_integer(j))
			continue;
		memcpy(name, k.mv_data, k.mv_size);
		name[k.mv_size] = '\0';
		if ((r = fn(name + plen, (int64_t)json_integer_value(j), arg)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (r < 0)
		return r;
	if (rc && rc != MDB_NOTFOUND)
		return p11g_store_txn_fail(t, err, rc, "cannot read meta %s...", prefix);
	return 0;
}

/* See store_internal.h. */
char *p11g_json_text_add(const char *obj, const char *name, const char *value)
{
	char *out = NULL;
	size_t n = obj ? strlen(obj) : 0;
	if (n < 3 || obj[n - 1] != '}' ||
	    asprintf(&out, "%.*s,\"%s\":%s}", (int)(n - 1), obj, name, value) < 0)
		return NULL;
	return out;
}

/* ---- environment ------------------------------------------------------------ */

/* Returns an LMDB or errno code; s->env is set only on success. */
static int env_open(p11g_store *s, uint64_t map_size)
{
	MDB_env *env = NULL;
	int fd, flags, rc = mdb_env_create(&env);
	if (rc)
		return rc;
	if ((rc = mdb_env_set_maxdbs(env, N_TABLES)) != 0 ||
	    (map_size && (rc = mdb_env_set_mapsize(env, (size_t)map_size)) != 0) ||
	    (rc = mdb_env_open(env, s->dir, s->env_flags, 0600)) != 0) {
		mdb_env_close(env);
		return rc;
	}
	/* LMDB sets close-on-exec on every descriptor but the data file's, which
	 * it leaves for callers of mdb_env_get_fd; nothing we exec may hold it. */
	if (mdb_env_get_fd(env, &fd) == 0 && fd >= 0 && (flags = fcntl(fd, F_GETFD)) >= 0)
		(void)fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
	s->env = env;
	return 0;
}

/* An existing store keeps the map it grew to (LMDB records it), within the
 * configured bounds. */
static int env_fit_map(p11g_store *s, uint64_t initial)
{
	MDB_envinfo info;
	int rc = mdb_env_info(s->env, &info);
	if (rc)
		return rc;
	uint64_t want = info.me_mapsize < initial ? initial : info.me_mapsize;
	if (want > s->max_map)
		want = s->max_map;
	return want == info.me_mapsize ? 0 : mdb_env_set_mapsize(s->env, (size_t)want);
}

static int tables_open(p11g_store *s, p11g_err *err)
{
	struct {
		const char *name;
		MDB_dbi *dbi;
		bool index; /* added in schema 2 */
	} tables[N_TABLES] = {{"meta", &s->meta},
	                      {"ops", &s->ops},
	                      {"active", &s->active},
	                      {"audit", &s->audit},
	                      {"by_key", &s->by_key, true},
	                      {"by_expiry", &s->by_expiry, true},
	                      {"pending_by", &s->pending_by, true},
	                      {"outbox", &s->outbox, true},
	                      {"outbox_due", &s->outbox_due, true}};
	_cleanup_txn_ MDB_txn *txn = NULL;
	_cleanup_json_ json_t *schema = NULL;
	int rc = mdb_txn_begin(s->env, NULL, s->read_only ? MDB_RDONLY : 0, &txn);
	if (rc)
		return store_fail(s, err, rc, "cannot begin a transaction");
	s->indexed = true;
	for (size_t i = 0; i < N_TABLES; i++) {
		rc =
		    mdb_dbi_open(txn, tables[i].name, s->read_only ? 0 : MDB_CREATE, tables[i].dbi);
		if (rc == MDB_NOTFOUND &&
		    (tables[i].dbi == &s->outbox || tables[i].dbi == &s->outbox_due)) {
			s->no_outbox = true; /* older, read-only: no notification waits */
			continue;
		}
		if (rc == MDB_NOTFOUND && tables[i].index) {
			s->indexed = false; /* schema 1, read-only: walks go through "active" */
			continue;
		}
		if (rc == MDB_NOTFOUND)
			return p11g_err_set(err, P11G_E_STORE,
			                    "%s is not an approvald store (no %s table)", s->dir,
			                    tables[i].name);
		if (rc)
			return store_fail(s, err, rc, "cannot open the %s table", tables[i].name);
	}

	struct p11g_txn t = {.s = s, .txn = txn, .write = !s->read_only};
	if (meta_get(&t, "schema", P11G_E_STORE, &schema, err) < 0)
		return -1;
	if (!schema) {
		if (s->read_only)
			return p11g_err_set(err, P11G_E_STORE,
			                    "%s is not an approvald store (no schema version)",
			                    s->dir);
		schema = json_integer(SCHEMA_VERSION);
		if (meta_put(&t, "schema", schema, err) < 0)
			return -1;
	} else if (json_is_integer(schema) && json_integer_value(schema) == 1) {
		/* Schema 1 had no indexes: built once, in this transaction. */
		if (s->read_only) {
			s->indexed = false;
		} else {
			json_decref(schema);
			schema = json_integer(SCHEMA_VERSION);
			if (p11g_store_index_build(&t, err) < 0 ||
			    meta_put(&t, "schema", schema, err) < 0)
				return -1;
			p11g_info("store in %s: operations indexed (schema 1 to %d)", s->dir,
			          SCHEMA_VERSION);
		}
	} else if (!json_is_integer(schema) || json_integer_value(schema) != SCHEMA_VERSION) {
		_cleanup_free_ char *text = json_dumps(schema, JSON_COMPACT | JSON_ENCODE_ANY);
		return p11g_err_set(
		    err, P11G_E_STORE,
		    "store in %s has schema version %s; this approvald reads version %d", s->dir,
		    text ? text : "?", SCHEMA_VERSION);
	}
	/* Committing (even a read-only transaction) is what keeps the table
	 * handles open for later transactions. */
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc)
		return store_fail(s, err, rc, "cannot record the store's tables");
	return 0;
}

static int head_trust_body(p11g_txn *t, void *arg, p11g_err *err)
{
	return p11g_store_audit_head(t, arg, err);
}

static int nothing_body(p11g_txn *t, void *arg, p11g_err *err)
{
	return 0;
}

/* The head as approvald finds it at open is the one it trusts (what was done to the store
 * while approvald was down is for audit --verify to find). */
static int head_trust(p11g_store *s, p11g_err *err)
{
	return p11g_store_read(s, head_trust_body, &s->trusted, err);
}

int p11g_store_open(const char *dir, const struct p11g_store_options *opt, p11g_store **ret,
                    p11g_err *err)
{
	static const struct p11g_store_options defaults;
	const struct p11g_store_options *o = opt ? opt : &defaults;
	_cleanup_store_ p11g_store *s = calloc(1, sizeof(*s));
	bool fresh = false;
	int rc;

	if (!s || !(s->dir = strdup(dir)))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory opening the store");
	s->read_only = o->read_only;
	s->max_map = o->max_map_size ? o->max_map_size : DEFAULT_MAX_MAP;
	uint64_t initial = o->initial_map_size ? o->initial_map_size : DEFAULT_INITIAL_MAP;
	if (initial > s->max_map)
		initial = s->max_map;
	/* NOTLS: read snapshots are not tied to threads, and a read may be
	 * opened inside another (or inside a write body). */
	s->env_flags = MDB_NOTLS;
	if (s->read_only)
		s->env_flags |= MDB_RDONLY;
	if (o->durability == P11G_DURABLE_PROCESS)
		s->env_flags |= MDB_NOSYNC;

	if (!s->read_only) {
		struct stat st;
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return p11g_err_set(err, P11G_E_STORE,
			                    "cannot create store directory %s: %s", dir,
			                    strerror(errno));
		_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return p11g_err_set(err, P11G_E_STORE, "cannot open store directory %s: %s",
			                    dir, strerror(errno));
		if (fstatat(dfd, "data.mdb", &st, 0) < 0) {
			if (errno != ENOENT)
				return p11g_err_set(err, P11G_E_STORE,
				                    "cannot open store in %s: %s", dir,
				                    strerror(errno));
			fresh = true;
		}
	}

	rc = env_open(s, fresh ? initial : 0);
	if (rc && s->read_only && (rc == EACCES || rc == EPERM || rc == EROFS)) {
		/* The lock file cannot be created or opened: a copied store in a
		 * place we may not write.  Reading without the lock is safe only
		 * because nothing writes to such a copy. */
		s->env_flags |= MDB_NOLOCK;
		rc = env_open(s, 0);
	}
	if (rc)
		return p11g_err_set(err, P11G_E_STORE, "cannot open store in %s: %s", dir,
		                    mdb_strerror(rc));
	if (!s->read_only && !fresh && (rc = env_fit_map(s, initial)) != 0)
		return store_fail(s, err, rc, "cannot size the map");
	if (tables_open(s, err) < 0 || (!s->read_only && head_trust(s, err) < 0))
		return -1;
	/* a read-only store starts with a kept transaction (see kept_read): its opener may lower
	 * its priority now, and its reads renew it */
	if (s->read_only && p11g_store_read(s, nothing_body, NULL, err) < 0)
		return -1;
	*ret = s;
	s = NULL;
	return 0;
}

void p11g_store_close(p11g_store *s)
{
	store_free(s);
}

/* After a failed meta-page write LMDB marks the environment unusable; the
 * file still holds the last good commit, so a fresh environment is fine. */
static int env_reopen(p11g_store *s, p11g_err *err)
{
	MDB_envinfo info;
	uint64_t map = mdb_env_info(s->env, &info) == 0 ? info.me_mapsize : 0;
	mdb_env_close(s->env);
	s->env = NULL;
	int rc = env_open(s, 0);
	if (rc)
		return p11g_err_set(err, P11G_E_STORE, "cannot reopen store in %s: %s", s->dir,
		                    mdb_strerror(rc));
	if (!s->read_only && (rc = env_fit_map(s, map)) != 0)
		return store_fail(s, err, rc, "cannot size the map");
	p11g_warn("store in %s: reopened after a failed write", s->dir);
	return tables_open(s, err);
}

static int txn_begin(p11g_store *s, unsigned int flags, MDB_txn **ret, p11g_err *err)
{
	int rc = mdb_txn_begin(s->env, NULL, flags, ret);
	bool idle = !s->reads && !s->writing;
	if (rc == MDB_MAP_RESIZED && idle) {
		/* Another process grew the map: adopt its size. */
		if ((rc = mdb_env_set_mapsize(s->env, 0)) == 0)
			rc = mdb_txn_begin(s->env, NULL, flags, ret);
	} else if (rc == MDB_PANIC && idle) {
		if (env_reopen(s, err) < 0)
			return -1;
		rc = mdb_txn_begin(s->env, NULL, flags, ret);
	}
	if (rc)
		return store_fail(s, err, rc, "cannot begin a transaction");
	return 0;
}

static int map_grow(p11g_store *s, p11g_err *err)
{
	MDB_envinfo info;
	char size[32];
	int rc = mdb_env_info(s->env, &info);
	if (rc)
		return store_fail(s, err, rc, "cannot read the map size");
	uint64_t cur = info.me_mapsize;
	if (cur >= s->max_map) {
		size_text(s->max_map, size, sizeof(size));
		return p11g_err_set(err, P11G_E_STORE, "store is full (map at its maximum %s)",
		                    size);
	}
	if (s->reads)
		return p11g_err_set(
		    err, P11G_E_STORE,
		    "store in %s: map full, and it cannot grow while a read is open", s->dir);
	uint64_t next = cur > s->max_map / 2 ? s->max_map : cur * 2;
	if ((rc = mdb_env_set_mapsize(s->env, (size_t)next)) != 0)
		return store_fail(s, err, rc, "cannot grow the map to %" PRIu64 " bytes", next);
	size_text(next, size, sizeof(size));
	p11g_info("store in %s: map grown to %s", s->dir, size);
	return 0;
}

/* Commits the batch so far (before the map grows, or at the end).  A commit
 * can itself need pages (LMDB's free list): MDB_MAP_FULL there loses the
 * batch, which is why batches start with headroom. */
static int batch_commit(p11g_store *s, p11g_err *err)
{
	int rc;

	if (!s->batch)
		return 0;
	rc = mdb_txn_commit(s->batch);
	s->batch = NULL;
	if (rc == 0 && s->batch_head.present)
		s->trusted = s->batch_head;
	s->batch_head = (struct p11g_audit_head){0};
	if (rc) {
		s->batch_failed = rc;
		store_fail(s, err, rc, "cannot record");
		/* At the map's maximum, say so (and otherwise grow it now). */
		if (rc == MDB_MAP_FULL)
			map_grow(s, err);
		s->batch_err = *err;
		return -1;
	}
	return 0;
}

/* Before a batch opens (no transaction may be open while the map moves):
 * free space of at least half the map and BATCH_HEADROOM, as far as the
 * maximum allows, so that a batch does not run into the map's end. */
#define BATCH_HEADROOM (8u << 20)

static int batch_headroom(p11g_store *s, p11g_err *err)
{
	for (;;) {
		uint64_t map, used;
		p11g_store_stat(s, &map, &used);
		uint64_t want = map / 2 > BATCH_HEADROOM ? map / 2 : BATCH_HEADROOM;
		if (map >= s->max_map || map - used >= want || s->reads)
			return 0;
		if (map_grow(s, err) < 0)
			return -1;
	}
}

void p11g_store_batch_begin(p11g_store *s)
{
	if (!s->read_only) {
		s->batching = true;
		s->batch_failed = 0;
	}
}

int p11g_store_batch_end(p11g_store *s, p11g_err *err)
{
	int failed;

	if (!s->batching)
		return 0;
	s->batching = false;
	if (batch_commit(s, err) < 0)
		return -1;
	failed = s->batch_failed;
	s->batch_failed = 0;
	if (failed) {
		*err = s->batch_err;
		return -1;
	}
	return 0;
}

int p11g_store_write(p11g_store *s, p11g_txn_fn fn, void *arg, p11g_err *err)
{
	if (s->read_only)
		return p11g_err_set(err, P11G_E_STORE, "store in %s is open read-only", s->dir);
	if (s->writing)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "store: a write transaction is already open");
	for (;;) {
		_cleanup_txn_ MDB_txn *txn = NULL;
		int rc;
		if (s->batching) {
			/* A nested transaction of the batch: a failing or refusing
			 * body undoes only its own writes. */
			if (!s->batch &&
			    (batch_headroom(s, err) < 0 || txn_begin(s, 0, &s->batch, err) < 0))
				return -1;
			if ((rc = mdb_txn_begin(s->env, s->batch, 0, &txn)) != 0)
				return store_fail(s, err, rc, "cannot begin a transaction");
		} else if (txn_begin(s, 0, &txn, err) < 0) {
			return -1;
		}
		struct p11g_txn t = {.s = s, .txn = txn, .write = true};
		s->writing = true;
		int r = fn(&t, arg, err);
		s->writing = false;
		if (t.failed != MDB_MAP_FULL) {
			if (r != 0)
				return r;
			if (t.failed)
				return store_fail(s, err, t.failed, "cannot record");
			rc = mdb_txn_commit(txn);
			txn = NULL;
			if (rc == 0) {
				if (t.wrote.present) {
					if (s->batching)
						s->batch_head = t.wrote;
					else
						s->trusted = t.wrote;
				}
				return 0;
			}
			if (rc != MDB_MAP_FULL)
				return store_fail(s, err, rc, "cannot record");
		}
		/* The map is full: what a batch holds so far is committed, the
		 * map grows, and the body runs again. */
		if (txn) {
			mdb_txn_abort(txn);
			txn = NULL;
		}
		if ((s->batching && batch_commit(s, err) < 0) || map_grow(s, err) < 0)
			return -1;
	}
}

void p11g_store_reader_check(p11g_store *s)
{
	int dead = 0;
	if (s && s->env && mdb_reader_check(s->env, &dead) == 0 && dead)
		p11g_info("store in %s: %d reader slot%s of a process that ended released", s->dir,
		          dead, dead == 1 ? "" : "s");
}

const char *p11g_store_dir(const p11g_store *s)
{
	return s->dir;
}

int p11g_store_read(p11g_store *s, p11g_txn_fn fn, void *arg, p11g_err *err)
{
	_cleanup_txn_ MDB_txn *txn = NULL;
	/* A read-only store renews its kept transaction (see kept_read); one a renewal refuses
	 * (the map grew, say) is dropped, and a new one begun handles why.  A read within a
	 * read begins its own.  While a read runs or begins, kept_read is NULL: txn_begin's
	 * remap and reopen never find a transaction to close. */
	if (s->kept_read) {
		txn = s->kept_read;
		s->kept_read = NULL;
		if (mdb_txn_renew(txn) != 0) {
			mdb_txn_abort(txn);
			txn = NULL;
		}
	}
	if (!txn && txn_begin(s, MDB_RDONLY, &txn, err) < 0)
		return -1;
	struct p11g_txn t = {.s = s, .txn = txn};
	s->reads++;
	int r = fn(&t, arg, err);
	s->reads--;
	if (s->read_only && !s->kept_read) {
		mdb_txn_reset(txn);
		s->kept_read = txn;
		txn = NULL;
	}
	return r;
}

void p11g_store_stat(p11g_store *s, uint64_t *ret_map_size, uint64_t *ret_used)
{
	MDB_envinfo info = {0};
	MDB_stat st = {0};
	if (s && s->env && (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0)) {
		memset(&info, 0, sizeof(info));
		memset(&st, 0, sizeof(st));
	}
	if (ret_map_size)
		*ret_map_size = info.me_mapsize;
	if (ret_used)
		*ret_used = st.ms_psize ? ((uint64_t)info.me_last_pgno + 1) * st.ms_psize : 0;
}

/* ---- operations ------------------------------------------------------------- */

static int read_next_id(p11g_txn *t, uint64_t *ret, p11g_err *err)
{
	_cleanup_json_ json_t *v = NULL;
	if (meta_get(t, "next_id", P11G_E_STORE, &v, err) < 0)
		return -1;
	if (!v) {
		*ret = 1;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 1)
		return p11g_err_set(err, P11G_E_STORE,
		                    "store in %s: meta next_id is not a positive integer",
		                    t->s->dir);
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

int p11g_txn_next_id(p11g_txn *t, uint64_t *ret_id, p11g_err *err)
{
	uint64_t id;
	_cleanup_json_ json_t *next = NULL;
	if (p11g_store_txn_usable(t, true, err) < 0 || read_next_id(t, &id, err) < 0)
		return -1;
	if (id >= (uint64_t)INT64_MAX)
		return p11g_err_set(err, P11G_E_STORE, "store in %s: operation ids exhausted",
		                    t->s->dir);
	next = json_integer((json_int_t)(id + 1));
	if (meta_put(t, "next_id", next, err) < 0)
		return -1;
	*ret_id = id;
	return 0;
}

int p11g_txn_last_id(p11g_txn *t, uint64_t *ret_id, p11g_err *err)
{
	uint64_t id;
	if (p11g_store_txn_usable(t, false, err) < 0 || read_next_id(t, &id, err) < 0)
		return -1;
	*ret_id = id - 1;
	return 0;
}

/* ---- audit table (the chain itself is audit.c's) ----------------------------- */

static void head_keep(p11g_store *s, const void *text, size_t len, const struct p11g_audit_head *h)
{
	s->head_len = 0;
	if (len > 0 && len <= sizeof(s->head_text)) {
		memcpy(s->head_text, text, len);
		s->head_len = len;
		s->head = *h;
	}
}

int p11g_store_audit_head(p11g_txn *t, struct p11g_audit_head *ret, p11g_err *err)
{
	struct p11g_audit_head h = {0};
	MDB_val v;
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	int r = meta_get_raw(t, "audit_head", &v, err);
	if (r == -ENOENT) {
		*ret = h;
		return 0;
	}
	if (r < 0)
		return -1;
	bool kept = t->s->head_len && v.mv_size == t->s->head_len &&
	            !memcmp(v.mv_data, t->s->head_text, v.mv_size);
#ifndef P11G_CHECK_CACHES
	if (kept) {
		*ret = t->s->head;
		return 0;
	}
#endif
	_cleanup_json_ json_t *j = json_from(&v, JSON_DECODE_ANY);
	json_t *seq = json_object_get(j, "seq");
	const char *hex = json_string_value(json_object_get(j, "hash"));
	if (!json_is_integer(seq) || json_integer_value(seq) < 1 || !hex ||
	    strlen(hex) != 2 * P11G_AUDIT_HASH_LEN ||
	    p11g_hex_decode(hex, strlen(hex), h.hash, sizeof(h.hash)) != P11G_AUDIT_HASH_LEN)
		return p11g_err_set(err, P11G_E_AUDIT_BROKEN, "chain head: unreadable in %s",
		                    t->s->dir);
	h.present = true;
	h.seq = (uint64_t)json_integer_value(seq);
#ifdef P11G_CHECK_CACHES
	/* The sanitizer build reads the head every time and checks the kept one. */
	if (kept && (h.seq != t->s->head.seq || !t->s->head.present ||
	             memcmp(h.hash, t->s->head.hash, sizeof(h.hash)) != 0)) {
		p11g_error("audit chain head: kept copy differs from the store");
		abort();
	}
#endif
	head_keep(t->s, v.mv_data, v.mv_size, &h);
	*ret = h;
	return 0;
}

int p11g_store_audit_put(p11g_txn *t, uint64_t seq, const char *text, size_t len,
                         const unsigned char hash[P11G_AUDIT_HASH_LEN], p11g_err *err)
{
	unsigned char kb[8];
	char hex[2 * P11G_AUDIT_HASH_LEN + 1], head[sizeof(t->s->head_text)];
	MDB_val k = {.mv_size = sizeof(kb), .mv_data = kb};
	MDB_val v = {.mv_size = len, .mv_data = (void *)text};
	if (p11g_store_txn_usable(t, true, err) < 0)
		return -1;
	be64_put(seq, kb);
	int rc = mdb_put(t->txn, t->s->audit, &k, &v, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST)
		return p11g_err_set(err, P11G_E_AUDIT_BROKEN,
		                    "record %" PRIu64 ": already exists beyond the chain head",
		                    seq);
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot write audit record %" PRIu64, seq);
	p11g_hex_encode(hash, P11G_AUDIT_HASH_LEN, hex);
	/* The JSON object {"seq": seq, "hash": hex}, printed directly. */
	int n = snprintf(head, sizeof(head), "{\"seq\":%" PRIu64 ",\"hash\":\"%s\"}", seq, hex);
	if (n < 0 || (size_t)n >= sizeof(head))
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot encode the chain head");
	if (meta_put_raw(t, "audit_head", head, (size_t)n, err) < 0)
		return -1;
	struct p11g_audit_head h = {.present = true, .seq = seq};
	memcpy(h.hash, hash, sizeof(h.hash));
	head_keep(t->s, head, (size_t)n, &h);
	t->wrote = h;
	return 0;
}

int p11g_store_audit_expect(p11g_txn *t, const struct p11g_audit_head *head, p11g_err *err)
{
	const p11g_store *s = t->s;
	const struct p11g_audit_head *want = t->wrote.present                    ? &t->wrote
	                                     : s->batch && s->batch_head.present ? &s->batch_head
	                                                                         : &s->trusted;
	if (head->seq == want->seq && head->present == want->present &&
	    !memcmp(head->hash, want->hash, sizeof(head->hash)))
		return 0;
	p11g_error("store in %s: the audit chain's head is record %" PRIu64
	           ", approvald last wrote record %" PRIu64
	           ": the store was changed behind approvald; it records nothing more (run "
	           "approvald audit --verify, restart approvald once the store is sound)",
	           s->dir, head->seq, want->seq);
	return p11g_err_set(
	    err, P11G_E_AUDIT_BROKEN,
	    "the audit log was changed behind approvald (its head is record %" PRIu64
	    ", approvald wrote %" PRIu64 "): nothing is recorded or granted",
	    head->seq, want->seq);
}

int p11g_store_audit_scan(p11g_txn *t, uint64_t since, p11g_store_raw_fn fn, void *arg,
                          p11g_err *err)
{
	_cleanup_cursor_ MDB_cursor *cur = NULL;
	unsigned char kb[8];
	MDB_val k = {.mv_size = sizeof(kb), .mv_data = kb}, v;
	if (p11g_store_txn_usable(t, false, err) < 0)
		return -1;
	if (since == UINT64_MAX)
		return 0;
	int rc = mdb_cursor_open(t->txn, t->s->audit, &cur);
	if (rc)
		return p11g_store_txn_fail(t, err, rc, "cannot walk the audit log");
	be64_put(since + 1, kb);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 8)
			return p11g_err_set(err, P11G_E_AUDIT_BROKEN,
			                    "audit log: a key of %zu bytes is not a record number",
			                    k.mv_size);
		int r = fn(be64_get(k.mv_data), v.mv_data, v.mv_size, arg, err);
		if (r < 0)
			return r;
		if (r > 0)
			return 0;
	}
	if (rc != MDB_NOTFOUND)
		return p11g_store_txn_fail(t, err, rc, "cannot walk the audit log");
	return 0;
}
