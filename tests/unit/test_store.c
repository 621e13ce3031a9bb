/* Unit tests for the approvald store: ops, active index, map growth, disk full, audit chain. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <lmdb.h>
#include <openssl/evp.h>

#include "approvald/op.h"
#include "approvald/store.h"
#include "p11gate/keyid.h"
#include "p11gate/wire.h"

/* ---- disk-full injection ---------------------------------------------------
 * LMDB writes pages with pwrite and writev; definitions in the executable
 * come before libc's, so a test can make the disk "fill up" at will.  The
 * asm name is needed because _FILE_OFFSET_BITS=64 renames our pwrite to
 * pwrite64, while liblmdb calls pwrite. */

enum fail_mode { FAIL_NONE, FAIL_ALL, FAIL_META };
static enum fail_mode fail_writes;
static off_t meta_end; /* LMDB's two meta pages end here */

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);

ssize_t fake_pwrite(int fd, const void *buf, size_t n, off_t off) __asm__("pwrite");
ssize_t fake_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	static pwrite_fn real;
	if (fail_writes == FAIL_ALL || (fail_writes == FAIL_META && off < meta_end)) {
		errno = ENOSPC;
		return -1;
	}
	if (!real)
		real = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite");
	return real(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
	static writev_fn real;
	if (fail_writes == FAIL_ALL) {
		errno = ENOSPC;
		return -1;
	}
	if (!real)
		real = (writev_fn)dlsym(RTLD_NEXT, "writev");
	return real(fd, iov, n);
}

/* Read transactions begun (mdb_txn_begin with MDB_RDONLY), to tell a begun one from a
 * renewed one: on read-only environments and on writable ones. */
static unsigned read_begins, rw_read_begins;
typedef int (*txn_begin_fn)(MDB_env *, MDB_txn *, unsigned int, MDB_txn **);

int mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned int flags, MDB_txn **txn)
{
	static txn_begin_fn real;
	unsigned int env_flags = 0;
	if (!real)
		real = (txn_begin_fn)dlsym(RTLD_NEXT, "mdb_txn_begin");
	if ((flags & MDB_RDONLY) && mdb_env_get_flags(env, &env_flags) == 0)
		*(env_flags & MDB_RDONLY ? &read_begins : &rw_read_begins) += 1;
	return real(env, parent, flags, txn);
}

/* ---- fixture ---------------------------------------------------------------- */

struct fx {
	char root[64];
	char dir[128]; /* the store; does not exist before the test opens it */
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	snprintf(f->root, sizeof(f->root), "/tmp/p11g-store-XXXXXX");
	if (!mkdtemp(f->root))
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s/state", f->root);
	*state = f;
	return 0;
}

static int unlock_dir(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (type == FTW_D || type == FTW_DNR)
		chmod(path, 0700);
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	remove(path);
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	fail_writes = FAIL_NONE;
	nftw(f->root, unlock_dir, 16, FTW_PHYS);
	nftw(f->root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static p11g_store *open_store(const char *dir, const struct p11g_store_options *o)
{
	p11g_store *s = NULL;
	p11g_err err = {0};
	int r = p11g_store_open(dir, o, &s, &err);
	if (r != 0)
		print_error("open %s: %s (%s)\n", dir, err.msg, err.code);
	assert_int_equal(r, 0);
	assert_non_null(s);
	return s;
}

static const struct p11g_store_options fast = {.durability = P11G_DURABLE_PROCESS};

/* A whole operation as approvald stores it: one key of five uses (used of them spent) under
 * rule r, whose snapshot asks for two approvals; pad bytes of description. */
static void make_op(struct p11g_op *ret, uint64_t id, const char *state, size_t pad, int64_t used)
{
	char *text = malloc(pad + 1);
	memset(text, 'd', pad);
	text[pad] = '\0';
	json_t *j = json_pack(
	    "{s:I, s:s, s:{s:i, s:s, s:[]}, s:s, s:i, s:I, s:s, s:s, s:[], "
	    "s:[{s:s, s:s, s:i, s:I}], s:{s:{s:s, s:i}}, s:[]}",
	    "id", (json_int_t)id, "state", state, "orderer", "uid", 1000, "user", "ci", "groups",
	    "signer", "uid:1000", "created", 0, "expires", (json_int_t)4000000000, "description",
	    text, "context", "", "digests", "keys", "uri", "pkcs11:object=k", "rule", "r", "uses",
	    5, "used", (json_int_t)used, "rules", "r", "name", "r", "approvals", 2, "approvals");
	p11g_err err = {0};
	free(text);
	assert_non_null(j);
	if (p11g_op_decode(j, ret, &err) < 0)
		fail_msg("make_op: %s", err.msg);
	json_decref(j);
}

/* ---- bodies ----------------------------------------------------------------- */

struct put_args {
	size_t n;
	const char *const *states; /* cycled; NULL: "pending" */
	size_t n_states;
	size_t pad;
	bool audit;
	int ret; /* what the body returns after its work */
	unsigned runs;
};

static int put_ops_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct put_args *a = arg;
	a->runs++;
	for (size_t i = 0; i < a->n; i++) {
		uint64_t id;
		const char *state = a->states ? a->states[i % a->n_states] : "pending";
		if (p11g_txn_next_id(t, &id, err) < 0)
			return -1;
		struct p11g_op op;
		make_op(&op, id, state, a->pad, 0);
		int r = p11g_txn_op_put(t, &op, err);
		p11g_op_clear(&op);
		if (r < 0)
			return -1;
		if (a->audit) {
			json_t *ev =
			    json_pack("{s:s, s:I}", "event", "created", "op", (json_int_t)id);
			r = p11g_txn_audit_append(t, ev, NULL, err);
			json_decref(ev);
			if (r < 0)
				return -1;
		}
	}
	return a->ret;
}

static int write_ops(p11g_store *s, struct put_args *a, p11g_err *err)
{
	return p11g_store_write(s, put_ops_body, a, err);
}

struct set_state {
	uint64_t id;
	const char *state;
};

static int set_state_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct set_state *x = arg;
	struct p11g_op op;
	int r = p11g_txn_op_get(t, x->id, &op, err);
	if (r < 0)
		return r;
	assert_int_equal(p11g_op_state_parse(x->state, &op.state), 0);
	r = p11g_txn_op_put(t, &op, err);
	p11g_op_clear(&op);
	return r;
}

static void set_state(p11g_store *s, uint64_t id, const char *state)
{
	struct set_state x = {id, state};
	p11g_err err = {0};
	assert_int_equal(p11g_store_write(s, set_state_body, &x, &err), 0);
}

struct collect {
	bool active_only;
	bool desc; /* p11g_txn_op_foreach_desc: after is then "before" */
	uint64_t after;
	uint64_t ids[64];
	size_t n;
	size_t stop_after; /* 0: never */
	int fail_with;     /* negative: returned by the visitor on the first op */
	int ret;
	/* for the write-txn walk that changes what it walks */
	p11g_txn *txn;
	const char *new_state;
};

static int collect_visit(const struct p11g_op *op, void *arg)
{
	struct collect *c = arg;
	uint64_t id = op->id;
	if (c->fail_with)
		return c->fail_with;
	assert_true(c->n < P11G_ARRAY_SIZE(c->ids));
	c->ids[c->n++] = id;
	if (c->txn) {
		p11g_err err = {0};
		struct p11g_op mine; /* op may be the store's: read only */
		assert_int_equal(p11g_op_copy(op, &mine), 0);
		assert_int_equal(p11g_op_state_parse(c->new_state, &mine.state), 0);
		assert_int_equal(p11g_txn_op_put(c->txn, &mine, &err), 0);
		p11g_op_clear(&mine);
	}
	return c->stop_after && c->n == c->stop_after ? 1 : 0;
}

static int collect_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct collect *c = arg;
	c->txn = c->new_state ? t : NULL;
	c->ret = c->desc
	             ? p11g_txn_op_foreach_desc(t, c->active_only, c->after, collect_visit, c, err)
	             : p11g_txn_op_foreach(t, c->active_only, c->after, collect_visit, c, err);
	return c->ret < 0 ? -1 : 0;
}

static void assert_ids(const struct collect *c, const uint64_t *want, size_t n)
{
	assert_int_equal(c->n, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(c->ids[i], want[i]);
}

static struct collect walk(p11g_store *s, bool active_only, uint64_t after)
{
	struct collect c = {.active_only = active_only, .after = after};
	p11g_err err = {0};
	assert_int_equal(p11g_store_read(s, collect_body, &c, &err), 0);
	return c;
}

struct count {
	uint64_t ops, last_id;
};

static int count_visit(const struct p11g_op *op, void *arg)
{
	((struct count *)arg)->ops++;
	return 0;
}

static int count_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct count *c = arg;
	c->ops = 0;
	if (p11g_txn_last_id(t, &c->last_id, err) < 0)
		return -1;
	return p11g_txn_op_foreach(t, false, 0, count_visit, c, err) < 0 ? -1 : 0;
}

static struct count count_ops(p11g_store *s)
{
	struct count c = {0};
	p11g_err err = {0};
	assert_int_equal(p11g_store_read(s, count_body, &c, &err), 0);
	return c;
}

static int verify_body(p11g_txn *t, void *arg, p11g_err *err)
{
	return p11g_txn_audit_verify(t, arg, err);
}

/* Returns the verify result; count and err as verify left them. */
static int verify(p11g_store *s, uint64_t *count, p11g_err *err)
{
	*count = UINT64_MAX;
	return p11g_store_read(s, verify_body, count, err);
}

static void assert_intact(p11g_store *s, uint64_t want)
{
	uint64_t n;
	p11g_err err = {0};
	int r = verify(s, &n, &err);
	if (r != 0)
		print_error("verify: %s\n", err.msg);
	assert_int_equal(r, 0);
	assert_int_equal(n, want);
}

/* Direct LMDB access, as an attacker (or python3-lmdb) would have. */
struct raw {
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
};

static void raw_open(struct raw *r, const char *dir, const char *table)
{
	assert_int_equal(mdb_env_create(&r->env), 0);
	assert_int_equal(mdb_env_set_maxdbs(r->env, 8), 0);
	assert_int_equal(mdb_env_open(r->env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(r->env, NULL, 0, &r->txn), 0);
	assert_int_equal(mdb_dbi_open(r->txn, table, 0, &r->dbi), 0);
}

static void raw_close(struct raw *r)
{
	assert_int_equal(mdb_txn_commit(r->txn), 0);
	mdb_env_close(r->env);
}

static void be64(uint64_t v, unsigned char b[8])
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (unsigned char)v;
}

static json_t *raw_get(struct raw *r, uint64_t seq)
{
	unsigned char kb[8];
	MDB_val k = {8, kb}, v;
	be64(seq, kb);
	assert_int_equal(mdb_get(r->txn, r->dbi, &k, &v), 0);
	json_t *j = json_loadb(v.mv_data, v.mv_size, JSON_DECODE_ANY, NULL);
	assert_non_null(j);
	return j;
}

static void raw_put(struct raw *r, uint64_t seq, json_t *rec)
{
	unsigned char kb[8];
	char *text = json_dumps(rec, JSON_COMPACT);
	MDB_val k = {8, kb}, v = {strlen(text), text};
	be64(seq, kb);
	assert_int_equal(mdb_put(r->txn, r->dbi, &k, &v, 0), 0);
	free(text);
}

static void raw_del(struct raw *r, uint64_t seq)
{
	unsigned char kb[8];
	MDB_val k = {8, kb};
	be64(seq, kb);
	assert_int_equal(mdb_del(r->txn, r->dbi, &k, NULL), 0);
}

/* Writes the operations a asks for to a store in dir, closes it, and opens its "ops" table
 * raw in *r: operation id as its stored JSON. */
static json_t *written_op(const char *dir, struct put_args *a, uint64_t id, struct raw *r)
{
	p11g_err err = {0};
	p11g_store *s = open_store(dir, &fast);
	assert_int_equal(write_ops(s, a, &err), 0);
	p11g_store_close(s);
	raw_open(r, dir, "ops");
	return raw_get(r, id);
}

/* The keys of a table of ids, ascending; returns how many (at most max). */
static size_t raw_ids(const char *dir, const char *table, uint64_t *ids, size_t max)
{
	struct raw r;
	MDB_cursor *cur;
	MDB_val k, v;
	size_t n = 0;
	raw_open(&r, dir, table);
	assert_int_equal(mdb_cursor_open(r.txn, r.dbi, &cur), 0);
	while (mdb_cursor_get(cur, &k, &v, n ? MDB_NEXT : MDB_FIRST) == 0) {
		assert_int_equal(k.mv_size, 8);
		assert_true(n < max);
		uint64_t id = 0;
		for (int i = 0; i < 8; i++)
			id = id << 8 | ((unsigned char *)k.mv_data)[i];
		ids[n++] = id;
	}
	mdb_cursor_close(cur);
	raw_close(&r);
	return n;
}

/* ---- operations --------------------------------------------------------------- */

static bool cloexec_on_files_in(const char *dir)
{
	char fdpath[64], target[PATH_MAX];
	size_t dlen = strlen(dir);
	int seen = 0;
	for (int fd = 0; fd < 1024; fd++) {
		snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(fdpath, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (strncmp(target, dir, dlen) != 0 || target[dlen] != '/')
			continue;
		seen++;
		if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC)) {
			print_error("fd %d (%s) lacks FD_CLOEXEC\n", fd, target);
			return false;
		}
	}
	return seen >= 2; /* at least the data and lock files */
}

static void test_open_private_files(void **state)
{
	struct fx *f = *state;
	char path[256];
	struct stat st;
	p11g_store *s = open_store(f->dir, NULL);

	assert_int_equal(stat(f->dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	snprintf(path, sizeof(path), "%s/data.mdb", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/lock.mdb", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_true(cloexec_on_files_in(f->dir));

	uint64_t map, used;
	p11g_store_stat(s, &map, &used);
	assert_int_equal(map, 16 * 1024 * 1024);
	assert_true(used > 0 && used < map);
	p11g_store_close(s);
	p11g_store_close(NULL);
}

static void test_ops_and_active_index(void **state)
{
	struct fx *f = *state;
	static const char *const states[] = {"pending", "approved", "rejected",
	                                     "pending", "expired",  "approved"};
	struct put_args a = {.n = 6, .states = states, .n_states = 6};
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &fast);

	assert_int_equal(write_ops(s, &a, &err), 0);

	struct collect all = walk(s, false, 0);
	assert_ids(&all, (uint64_t[]){1, 2, 3, 4, 5, 6}, 6);
	struct collect act = walk(s, true, 0);
	assert_ids(&act, (uint64_t[]){1, 2, 4, 6}, 4);
	struct collect after = walk(s, true, 2);
	assert_ids(&after, (uint64_t[]){4, 6}, 2);
	after = walk(s, false, 5);
	assert_ids(&after, (uint64_t[]){6}, 1);
	after = walk(s, false, 6);
	assert_int_equal(after.n, 0);

	/* newest first (the web page's lists): below before, 0 from the newest */
	struct collect desc = {.desc = true};
	assert_int_equal(p11g_store_read(s, collect_body, &desc, &err), 0);
	assert_ids(&desc, (uint64_t[]){6, 5, 4, 3, 2, 1}, 6);
	desc = (struct collect){.desc = true, .active_only = true, .after = 6};
	assert_int_equal(p11g_store_read(s, collect_body, &desc, &err), 0);
	assert_ids(&desc, (uint64_t[]){4, 2, 1}, 3);
	desc = (struct collect){.desc = true, .active_only = true, .after = 3};
	assert_int_equal(p11g_store_read(s, collect_body, &desc, &err), 0);
	assert_ids(&desc, (uint64_t[]){2, 1}, 2);
	desc = (struct collect){.desc = true, .after = 100};
	assert_int_equal(p11g_store_read(s, collect_body, &desc, &err), 0);
	assert_ids(&desc, (uint64_t[]){6, 5, 4, 3, 2, 1}, 6);
	desc = (struct collect){.desc = true, .after = 1};
	assert_int_equal(p11g_store_read(s, collect_body, &desc, &err), 0);
	assert_int_equal(desc.n, 0);
	desc = (struct collect){.desc = true, .active_only = true, .stop_after = 2};
	assert_int_equal(p11g_store_read(s, collect_body, &desc, &err), 0);
	assert_ids(&desc, (uint64_t[]){6, 4}, 2);

	/* the visitor stops early, or aborts with its own value */
	struct collect stop = {.active_only = true, .stop_after = 2};
	assert_int_equal(p11g_store_read(s, collect_body, &stop, &err), 0);
	assert_int_equal(stop.ret, 0);
	assert_ids(&stop, (uint64_t[]){1, 2}, 2);
	struct collect fail = {.fail_with = -5};
	assert_int_equal(p11g_store_read(s, collect_body, &fail, &err), -1);
	assert_int_equal(fail.ret, -5);

	/* state changes move ops in and out of the index */
	set_state(s, 2, "exhausted");
	set_state(s, 3, "pending");
	set_state(s, 6, "approved");
	act = walk(s, true, 0);
	assert_ids(&act, (uint64_t[]){1, 3, 4, 6}, 4);
	all = walk(s, false, 0);
	assert_int_equal(all.n, 6);

	/* a walk of the index that empties it as it goes sees each op once */
	struct collect expire = {.active_only = true, .new_state = "expired"};
	assert_int_equal(p11g_store_write(s, collect_body, &expire, &err), 0);
	assert_ids(&expire, (uint64_t[]){1, 3, 4, 6}, 4);
	act = walk(s, true, 0);
	assert_int_equal(act.n, 0);
	set_state(s, 4, "approved");
	set_state(s, 5, "pending");
	act = walk(s, true, 0);
	assert_ids(&act, (uint64_t[]){4, 5}, 2);
	p11g_store_close(s);

	/* the index table itself holds exactly the active ids */
	uint64_t ids[8];
	assert_int_equal(raw_ids(f->dir, "active", ids, 8), 2);
	assert_int_equal(ids[0], 4);
	assert_int_equal(ids[1], 5);

	/* and the active walk goes through it, not through every op */
	struct raw r;
	raw_open(&r, f->dir, "active");
	raw_del(&r, 4);
	raw_close(&r);
	s = open_store(f->dir, &fast);
	act = walk(s, true, 0);
	assert_ids(&act, (uint64_t[]){5}, 1);
	p11g_store_close(s);
}

struct get {
	uint64_t id;
	struct p11g_op op;
};

static int get_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct get *g = arg;
	return p11g_txn_op_get(t, g->id, &g->op, err);
}

static void test_op_get(void **state)
{
	struct fx *f = *state;
	struct put_args a = {.n = 3, .pad = 10};
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &fast);
	assert_int_equal(write_ops(s, &a, &err), 0);

	struct get g = {.id = 2};
	assert_int_equal(p11g_store_read(s, get_body, &g, &err), 0);
	assert_int_equal(g.op.id, 2);
	assert_int_equal(g.op.state, P11G_OP_PENDING);
	assert_string_equal(g.op.description, "dddddddddd");
	assert_int_equal(g.op.n_keys, 1);
	assert_int_equal(g.op.keys[0].uses, 5);
	p11g_op_clear(&g.op);

	/* absent: -ENOENT and err untouched */
	g = (struct get){.id = 99};
	memset(&err, 0, sizeof(err));
	assert_int_equal(p11g_store_read(s, get_body, &g, &err), -ENOENT);
	assert_null(err.code);
	assert_null(g.op.signer);
	p11g_store_close(s);
}

/* An operation whose counts could not be read back (more used than it has). */
static int put_unreadable_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct p11g_op op;
	make_op(&op, 1, "approved", 0, 0);
	op.keys[0].used = op.keys[0].uses + 1;
	int r = p11g_txn_op_put(t, &op, err);
	p11g_op_clear(&op);
	return r;
}

/* What is stored must decode: a record approvald could not read back would take the
 * operation out of every decision. */
static void test_op_put_refuses_what_cannot_be_read_back(void **state)
{
	struct fx *f = *state;
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &fast);
	assert_int_equal(p11g_store_write(s, put_unreadable_body, NULL, &err), -1);
	assert_string_equal(err.code, P11G_E_INTERNAL);
	assert_non_null(strstr(err.msg, "cannot read back"));
	assert_int_equal(count_ops(s).ops, 0);
	p11g_store_close(s);
}

/* A record that does not decode is a store error, never an absent operation. */
static void test_op_damaged_is_an_error(void **state)
{
	struct fx *f = *state;
	struct put_args a = {.n = 2};
	p11g_err err = {0};
	struct raw r;
	json_t *op = written_op(f->dir, &a, 2, &r);
	json_object_del(op, "keys");
	raw_put(&r, 2, op);
	json_decref(op);
	raw_close(&r);

	p11g_store *s = open_store(f->dir, &fast);
	struct get g = {.id = 2};
	assert_int_equal(p11g_store_read(s, get_body, &g, &err), -1);
	assert_string_equal(err.code, P11G_E_STORE);
	assert_non_null(strstr(err.msg, "operation 2: operation record is damaged: keys"));
	struct collect c = {.active_only = true};
	memset(&err, 0, sizeof(err));
	assert_int_equal(p11g_store_read(s, collect_body, &c, &err), -1);
	assert_string_equal(err.code, P11G_E_STORE);
	assert_ids(&c, (uint64_t[]){1}, 1);
	p11g_store_close(s);
}

static int read_write_body(p11g_txn *t, void *arg, p11g_err *err)
{
	uint64_t id;
	return p11g_txn_next_id(t, &id, err);
}

static void test_next_id_persists(void **state)
{
	struct fx *f = *state;
	struct put_args a = {.n = 3};
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &fast);
	assert_int_equal(count_ops(s).last_id, 0);
	assert_int_equal(write_ops(s, &a, &err), 0);
	/* a read snapshot cannot allocate */
	assert_int_equal(p11g_store_read(s, read_write_body, NULL, &err), -1);
	assert_string_equal(err.code, P11G_E_INTERNAL);
	p11g_store_close(s);

	s = open_store(f->dir, NULL);
	assert_int_equal(count_ops(s).last_id, 3);
	assert_int_equal(write_ops(s, &a, &err), 0);
	struct count c = count_ops(s);
	assert_int_equal(c.last_id, 6);
	assert_int_equal(c.ops, 6);
	struct collect all = walk(s, false, 3);
	assert_ids(&all, (uint64_t[]){4, 5, 6}, 3);
	p11g_store_close(s);
}

/* Numbers under a prefix, some expired (value below 100): the prune removes those and only
 * those, consecutive ones included, at most max a call, and leaves other names alone. */
static const int64_t prune_values[] = {5, 6, 150, 7, 200, 8, 9, 99, 100, 1};

static int prune_fill_body(p11g_txn *t, void *arg, p11g_err *err)
{
	char name[32];
	(void)arg;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(prune_values); i++) {
		snprintf(name, sizeof(name), "jti:%02zu", i);
		if (p11g_txn_meta_put_int(t, name, prune_values[i], err) < 0)
			return -1;
	}
	/* before and after the prefix in key order */
	if (p11g_txn_meta_put_int(t, "jt", 1, err) < 0 ||
	    p11g_txn_meta_put_int(t, "jtz", 1, err) < 0)
		return -1;
	return 0;
}

struct prune_args {
	size_t max, n;
};

static int prune_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct prune_args *a = arg;
	return p11g_txn_meta_prune_int(t, "jti:", 100, a->max, &a->n, err);
}

static int prune_left_body(p11g_txn *t, void *arg, p11g_err *err)
{
	size_t *left = arg;
	char name[32];
	int64_t v;
	*left = 0;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(prune_values); i++) {
		snprintf(name, sizeof(name), "jti:%02zu", i);
		int r = p11g_txn_meta_get_int(t, name, &v, err);
		if (r == -ENOENT) {
			assert_true(prune_values[i] < 100);
			continue;
		}
		assert_int_equal(r, 0);
		assert_int_equal(v, prune_values[i]);
		(*left)++;
	}
	assert_int_equal(p11g_txn_meta_get_int(t, "jt", &v, err), 0);
	assert_int_equal(p11g_txn_meta_get_int(t, "jtz", &v, err), 0);
	return 0;
}

static void test_meta_prune(void **state)
{
	struct fx *f = *state;
	p11g_err err = {0};
	size_t left = 0;
	p11g_store *s = open_store(f->dir, &fast);
	assert_int_equal(p11g_store_write(s, prune_fill_body, NULL, &err), 0);
	struct prune_args a = {.max = 4};
	assert_int_equal(p11g_store_write(s, prune_body, &a, &err), 0);
	assert_int_equal(a.n, 4);
	a.max = 100;
	assert_int_equal(p11g_store_write(s, prune_body, &a, &err), 0);
	assert_int_equal(a.n, 3); /* 7 expired in all */
	assert_int_equal(p11g_store_read(s, prune_left_body, &left, &err), 0);
	assert_int_equal(left, 3);
	assert_int_equal(p11g_store_write(s, prune_body, &a, &err), 0);
	assert_int_equal(a.n, 0);
	p11g_store_close(s);
}

static int failing_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct put_args a = {.n = 2, .audit = true};
	if (put_ops_body(t, &a, err) < 0)
		return -1;
	return p11g_err_set(err, P11G_E_FORBIDDEN, "body says no");
}

static void test_body_abort(void **state)
{
	struct fx *f = *state;
	struct put_args a = {.n = 5, .audit = true, .ret = 7};
	p11g_err err = {0};
	uint64_t n;
	p11g_store *s = open_store(f->dir, &fast);

	assert_int_equal(write_ops(s, &a, &err), 7);
	assert_null(err.code);
	assert_int_equal(p11g_store_write(s, failing_body, NULL, &err), -1);
	assert_string_equal(err.code, P11G_E_FORBIDDEN);
	assert_string_equal(err.msg, "body says no");

	struct count c = count_ops(s);
	assert_int_equal(c.ops, 0);
	assert_int_equal(c.last_id, 0);
	assert_int_equal(verify(s, &n, &err), 0);
	assert_int_equal(n, 0);

	/* and the store still takes writes */
	a.ret = 0;
	assert_int_equal(write_ops(s, &a, &err), 0);
	assert_int_equal(count_ops(s).last_id, 5);
	assert_intact(s, 5);
	p11g_store_close(s);
}

/* ---- the parsed-operation cache ------------------------------------------------ */

/* Walks the active index and notes operation 1 as handed out: where it is (compared, never
 * read after the walk), what its key has spent, and its rule snapshots. */
struct seen {
	const struct p11g_op *at;
	int64_t used;
	json_t *rules;
};

static int seen_visit(const struct p11g_op *op, void *arg)
{
	struct seen *x = arg;
	if (op->id == 1) {
		x->at = op;
		x->used = op->keys[0].used;
		json_decref(x->rules);
		x->rules = json_incref(op->rules);
	}
	return 0;
}

static int seen_body(p11g_txn *t, void *arg, p11g_err *err)
{
	return p11g_txn_op_foreach(t, true, 0, seen_visit, arg, err);
}

static struct seen seen_now(p11g_store *s)
{
	struct seen x = {.used = -1};
	p11g_err err = {0};
	assert_int_equal(p11g_store_read(s, seen_body, &x, &err), 0);
	return x;
}

static int64_t used_now(p11g_store *s)
{
	struct seen x = seen_now(s);
	/* the rule snapshots come back whole, however the text was put together */
	json_t *want = json_pack("{s:{s:s, s:i}}", "r", "name", "r", "approvals", 2);
	assert_true(json_equal(x.rules, want));
	json_decref(want);
	json_decref(x.rules);
	return x.used;
}

/* Spends one use of operation 1 the way a use does (found in a walk, read as the caller's
 * own, written back), then returns ret (non-zero: the write is undone). */
static int spend_body(p11g_txn *t, void *arg, p11g_err *err)
{
	int ret = *(int *)arg;
	struct seen x = {.used = -1};
	struct p11g_op op;
	if (seen_body(t, &x, err) < 0)
		return -1;
	json_decref(x.rules);
	if (p11g_txn_op_get(t, 1, &op, err) < 0)
		return -1;
	assert_int_equal(op.keys[0].used, x.used);
	op.keys[0].used++;
	int r = p11g_txn_op_put(t, &op, err);
	p11g_op_clear(&op);
	if (r < 0)
		return -1;
	return ret ? p11g_err_set(err, P11G_E_FORBIDDEN, "undone") : 0;
}

static int put_used_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct p11g_op op;
	make_op(&op, 1, "approved", 0, *(int64_t *)arg);
	int r = p11g_txn_op_put(t, &op, err);
	p11g_op_clear(&op);
	return r;
}

/* Reads of operations come from decoded copies kept by the exact bytes they
 * stand for: whatever was undone or written another way, a read sees the
 * store, and what a read hands out is the caller's own. */
static void test_op_cache_follows_the_store(void **state)
{
	struct fx *f = *state;
	struct p11g_store_options o = {.durability = P11G_DURABLE_FULL};
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &o);
	int64_t used = 0;
	int undo = 0;

	assert_int_equal(p11g_store_write(s, put_used_body, &used, &err), 0);
	struct seen a = seen_now(s), b = seen_now(s);
	assert_int_equal(a.used, 0);
	/* kept: the second walk hands out what the first one did, not a new decode */
	assert_ptr_equal(a.at, b.at);
	assert_ptr_equal(a.rules, b.rules);
	json_decref(a.rules);
	json_decref(b.rules);

	/* spent and committed: the walk sees the new count */
	assert_int_equal(p11g_store_write(s, spend_body, &undo, &err), 0);
	assert_int_equal(used_now(s), 1);

	/* spent and undone: the cache holds the undone write, the store does not */
	undo = 1;
	assert_int_equal(p11g_store_write(s, spend_body, &undo, &err), -1);
	assert_int_equal(used_now(s), 1);

	/* the same inside a batch: one nested write undone, one kept */
	p11g_store_batch_begin(s);
	assert_int_equal(p11g_store_write(s, spend_body, &undo, &err), -1);
	undo = 0;
	assert_int_equal(p11g_store_write(s, spend_body, &undo, &err), 0);
	undo = 1;
	assert_int_equal(p11g_store_write(s, spend_body, &undo, &err), -1);
	memset(&err, 0, sizeof(err));
	assert_int_equal(p11g_store_batch_end(s, &err), 0);
	assert_int_equal(used_now(s), 2);

	/* another write of the same id: the bytes decide */
	used = 1;
	assert_int_equal(p11g_store_write(s, put_used_body, &used, &err), 0);
	assert_int_equal(used_now(s), 1);
	undo = 0;
	assert_int_equal(p11g_store_write(s, spend_body, &undo, &err), 0);
	assert_int_equal(used_now(s), 2);

	/* op_get hands out the caller's own copy */
	struct get g = {.id = 1};
	assert_int_equal(p11g_store_read(s, get_body, &g, &err), 0);
	g.op.keys[0].used = 4;
	g.op.state = P11G_OP_REVOKED;
	p11g_op_clear(&g.op);
	assert_int_equal(used_now(s), 2);

	/* and after a reopen the store's bytes are all there is */
	p11g_store_close(s);
	s = open_store(f->dir, &o);
	assert_int_equal(used_now(s), 2);
	p11g_store_close(s);
}

/* ---- audit chain ------------------------------------------------------------- */

struct chain_batch {
	uint64_t first, n;
	uint64_t last_seq;
};

static int audit_batch_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct chain_batch *b = arg;
	for (uint64_t i = b->first; i < b->first + b->n; i++) {
		json_t *ev = json_pack(
		    "{s:s, s:I, s:{s:i, s:s}, s:s, s:s}", "event", "use_granted", "op",
		    (json_int_t)i, "actor", "uid", 1000, "user", "ci", "key",
		    "pkcs11:token=prod;object=fw-signing", "digest",
		    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
		int r = p11g_txn_audit_append(t, ev, &b->last_seq, err);
		json_decref(ev);
		if (r < 0)
			return -1;
	}
	return 0;
}

/* Appends n records after the first `have`, per_txn to a transaction. */
static void append_records(p11g_store *s, uint64_t have, uint64_t n, uint64_t per_txn)
{
	p11g_err err = {0};
	for (uint64_t done = 0; done < n; done += per_txn) {
		struct chain_batch b = {.first = have + done + 1, .n = per_txn};
		assert_int_equal(p11g_store_write(s, audit_batch_body, &b, &err), 0);
		assert_int_equal(b.last_seq, have + done + per_txn);
	}
}

static void sha256_chain(const unsigned char prev[32], const char *canon, unsigned char out[32])
{
	size_t len = strlen(canon);
	unsigned char *buf = malloc(32 + len);
	memcpy(buf, prev, 32);
	memcpy(buf + 32, canon, len);
	assert_int_equal(EVP_Digest(buf, 32 + len, out, NULL, EVP_sha256(), NULL), 1);
	free(buf);
}

/* The documented hash, computed here without the store's code. */
static void record_hash(json_t *rec, unsigned char out[32])
{
	unsigned char prev[32];
	const char *hex = json_string_value(json_object_get(rec, "prev"));
	assert_non_null(hex);
	assert_int_equal(p11g_hex_decode(hex, strlen(hex), prev, sizeof(prev)), 32);
	json_t *body = json_deep_copy(rec);
	json_object_del(body, "hash");
	char *canon = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
	sha256_chain(prev, canon, out);
	free(canon);
	json_decref(body);
}

struct chain_check {
	uint64_t since, next;
	char prev[65];
};

static int chain_visit(uint64_t seq, json_t *rec, void *arg)
{
	struct chain_check *c = arg;
	unsigned char hash[32];
	char hex[65];
	assert_int_equal(seq, c->next);
	assert_int_equal(json_integer_value(json_object_get(rec, "seq")), (json_int_t)seq);
	assert_true(json_is_integer(json_object_get(rec, "time")));
	assert_string_equal(json_string_value(json_object_get(rec, "event")), "use_granted");
	if (c->since == 0)
		assert_string_equal(json_string_value(json_object_get(rec, "prev")), c->prev);
	record_hash(rec, hash);
	p11g_hex_encode(hash, 32, hex);
	assert_string_equal(json_string_value(json_object_get(rec, "hash")), hex);
	memcpy(c->prev, hex, sizeof(hex));
	c->next++;
	return 0;
}

static int chain_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct chain_check *c = arg;
	return p11g_txn_audit_foreach(t, c->since, chain_visit, c, err) < 0 ? -1 : 0;
}

static void test_audit_chain_intact(void **state)
{
	struct fx *f = *state;
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &fast);

	assert_intact(s, 0);
	append_records(s, 0, 1000, 100);
	assert_intact(s, 1000);

	struct chain_check c = {.since = 0, .next = 1};
	memset(c.prev, '0', 64);
	c.prev[64] = '\0';
	assert_int_equal(p11g_store_read(s, chain_body, &c, &err), 0);
	assert_int_equal(c.next, 1001);

	c = (struct chain_check){.since = 990, .next = 991};
	assert_int_equal(p11g_store_read(s, chain_body, &c, &err), 0);
	assert_int_equal(c.next, 1001);
	p11g_store_close(s);

	/* the chain goes on across a restart */
	s = open_store(f->dir, &fast);
	append_records(s, 1000, 1, 1);
	assert_intact(s, 1001);
	p11g_store_close(s);
}

enum tamper { ALTER, ALTER_REHASH, DELETE_MIDDLE, SWAP, DELETE_NEWEST, DELETE_HEAD };

static void tamper(const char *dir, enum tamper how)
{
	struct raw r;
	raw_open(&r, dir, how == DELETE_HEAD ? "meta" : "audit");
	switch (how) {
	case ALTER:
	case ALTER_REHASH: {
		json_t *rec = raw_get(&r, 17);
		json_object_set_new(rec, "actor",
		                    json_pack("{s:i, s:s}", "uid", 0, "user", "mallory"));
		if (how == ALTER_REHASH) {
			unsigned char hash[32];
			char hex[65];
			record_hash(rec, hash);
			p11g_hex_encode(hash, 32, hex);
			json_object_set_new(rec, "hash", json_string(hex));
		}
		raw_put(&r, 17, rec);
		json_decref(rec);
		break;
	}
	case DELETE_MIDDLE:
		raw_del(&r, 17);
		break;
	case SWAP: {
		json_t *a = raw_get(&r, 17), *b = raw_get(&r, 18);
		raw_put(&r, 17, b);
		raw_put(&r, 18, a);
		json_decref(a);
		json_decref(b);
		break;
	}
	case DELETE_NEWEST:
		raw_del(&r, 50);
		break;
	case DELETE_HEAD: {
		MDB_val k = {strlen("audit_head"), "audit_head"};
		assert_int_equal(mdb_del(r.txn, r.dbi, &k, NULL), 0);
		break;
	}
	}
	raw_close(&r);
}

static void check_tamper(const char *dir, enum tamper how, const char *want)
{
	p11g_err err = {0};
	uint64_t n;
	p11g_store *s = open_store(dir, &fast);
	append_records(s, 0, 50, 25);
	assert_intact(s, 50);
	p11g_store_close(s);

	tamper(dir, how);

	/* both the daemon's way and the offline way see it */
	struct p11g_store_options ro = {.read_only = true};
	for (int i = 0; i < 2; i++) {
		s = open_store(dir, i ? &ro : &fast);
		memset(&err, 0, sizeof(err));
		assert_int_equal(verify(s, &n, &err), -1);
		assert_string_equal(err.code, P11G_E_AUDIT_BROKEN);
		assert_string_equal(err.msg, want);
		assert_int_equal(n, UINT64_MAX); /* no count on failure */
		p11g_store_close(s);
	}
}

static void test_audit_altered(void **state)
{
	check_tamper(((struct fx *)*state)->dir, ALTER,
	             "record 17: hash mismatch (record altered)");
}

static void test_audit_altered_rehashed(void **state)
{
	check_tamper(((struct fx *)*state)->dir, ALTER_REHASH,
	             "record 18: prev does not match record 17");
}

static void test_audit_deleted_middle(void **state)
{
	check_tamper(((struct fx *)*state)->dir, DELETE_MIDDLE,
	             "record 17: missing (expected after 16)");
}

static void test_audit_swapped(void **state)
{
	check_tamper(((struct fx *)*state)->dir, SWAP, "record 17: out of order (holds seq 18)");
}

static void test_audit_deleted_newest(void **state)
{
	check_tamper(((struct fx *)*state)->dir, DELETE_NEWEST,
	             "chain head: records after 49 deleted");
}

static void test_audit_deleted_head(void **state)
{
	check_tamper(((struct fx *)*state)->dir, DELETE_HEAD,
	             "chain head: missing (records 1 to 50 present)");
}

/* ---- a read-only store's kept read transaction --------------------------------- */

static int failing_read_body(p11g_txn *t, void *arg, p11g_err *err)
{
	return p11g_err_set(err, P11G_E_STORE, "this read fails");
}

struct nested {
	p11g_store *s;
	uint64_t outer, inner;
};

static int nested_verify_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct nested *a = arg;
	if (p11g_txn_audit_verify(t, &a->outer, err) < 0)
		return -1;
	return p11g_store_read(a->s, verify_body, &a->inner, err);
}

/* approvald-read and the verify walk read through a read-only store at SCHED_IDLE: each read
 * renews one kept transaction, never begins one (which takes LMDB's reader-table mutex that
 * approvald's loop shares), and still sees the newest commit; a read within a read, and a map
 * grown by the writer, are handled. */
static void test_read_only_renews_its_transaction(void **state)
{
	struct fx *f = *state;
	struct p11g_store_options o = {.durability = P11G_DURABLE_PROCESS,
	                               .initial_map_size = 256 * 1024};
	struct p11g_store_options ro = {.read_only = true};
	p11g_err err = {0};
	uint64_t map, used, map0;
	p11g_store *w = open_store(f->dir, &o);
	append_records(w, 0, 10, 10);
	p11g_store_stat(w, &map0, &used);

	/* the open begins the transaction it keeps (before its opener turns idle): no read after
	 * it begins one */
	p11g_store *r = open_store(f->dir, &ro);
	unsigned begun = read_begins;
	assert_intact(r, 10);
	for (uint64_t have = 10; have < 110; have += 5) {
		append_records(w, have, 5, 5);
		assert_intact(r, have + 5); /* a renewed snapshot is the newest */
	}
	assert_int_equal(read_begins, begun);

	/* a read that fails leaves the transaction kept */
	assert_int_equal(p11g_store_read(r, failing_read_body, NULL, &err), -1);
	assert_string_equal(err.msg, "this read fails");
	assert_intact(r, 110);
	assert_int_equal(read_begins, begun);

	/* a read within a read begins its own; the next read renews again */
	struct nested both = {.s = r, .outer = UINT64_MAX, .inner = UINT64_MAX};
	assert_int_equal(p11g_store_read(r, nested_verify_body, &both, &err), 0);
	assert_int_equal(both.outer, 110);
	assert_int_equal(both.inner, 110);
	assert_int_equal(read_begins, begun + 1);
	assert_intact(r, 110);
	assert_int_equal(read_begins, begun + 1);

	/* the writer grows the map past the reader's: the renewal is refused, a new
	 * transaction adopts the size */
	append_records(w, 110, 6000, 100);
	p11g_store_stat(w, &map, &used);
	assert_true(map > map0);
	begun = read_begins;
	assert_intact(r, 6110);
	assert_true(read_begins > begun);
	begun = read_begins;
	assert_intact(r, 6110);
	assert_int_equal(read_begins, begun);
	p11g_store_close(r);

	/* a writable store (approvald's, which forks the readers) keeps none: it begins each
	 * read, as before */
	begun = rw_read_begins;
	assert_intact(w, 6110);
	assert_intact(w, 6110);
	assert_int_equal(rw_read_begins, begun + 2);
	p11g_store_close(w);
}

/* ---- map growth ------------------------------------------------------------------ */

static void test_map_growth(void **state)
{
	struct fx *f = *state;
	struct p11g_store_options o = {.durability = P11G_DURABLE_PROCESS,
	                               .initial_map_size = 64 * 1024};
	p11g_err err = {0};
	uint64_t map, used;
	p11g_store *s = open_store(f->dir, &o);

	p11g_store_stat(s, &map, &used);
	assert_int_equal(map, 64 * 1024);

	/* one transaction far larger than the map, then many small ones */
	struct put_args big = {.n = 1000, .pad = 300, .audit = true};
	assert_int_equal(write_ops(s, &big, &err), 0);
	assert_true(big.runs > 1);
	unsigned runs = 0;
	for (int i = 0; i < 100; i++) {
		struct put_args a = {.n = 30, .pad = 300, .audit = true};
		assert_int_equal(write_ops(s, &a, &err), 0);
		runs += a.runs;
	}
	assert_true(runs > 100); /* some batches hit the map's end and ran again */

	struct count c = count_ops(s);
	assert_int_equal(c.ops, 4000);
	assert_int_equal(c.last_id, 4000);
	assert_intact(s, 4000);
	p11g_store_stat(s, &map, &used);
	assert_true(map > 1024 * 1024);
	assert_true(used <= map);
	p11g_store_close(s);

	/* the grown map is kept across a restart */
	s = open_store(f->dir, &o);
	uint64_t map2;
	p11g_store_stat(s, &map2, &used);
	assert_int_equal(map2, map);
	p11g_store_close(s);
}

static void test_map_cap(void **state)
{
	struct fx *f = *state;
	struct p11g_store_options o = {.durability = P11G_DURABLE_PROCESS,
	                               .initial_map_size = 64 * 1024,
	                               .max_map_size = 1024 * 1024};
	p11g_err err = {0};
	uint64_t written = 0;
	int r = 0;
	p11g_store *s = open_store(f->dir, &o);

	for (int i = 0; i < 10000; i++) {
		struct put_args a = {.n = 10, .pad = 1000, .audit = true};
		if ((r = write_ops(s, &a, &err)) != 0)
			break;
		written += 10;
	}
	assert_int_equal(r, -1);
	assert_string_equal(err.code, P11G_E_STORE);
	assert_string_equal(err.msg, "store is full (map at its maximum 1 MiB)");
	assert_true(written > 100);

	/* the failed batch left nothing; everything before it reads back */
	struct count c = count_ops(s);
	assert_int_equal(c.ops, written);
	assert_int_equal(c.last_id, written);
	assert_intact(s, written);
	uint64_t map, used;
	p11g_store_stat(s, &map, &used);
	assert_int_equal(map, 1024 * 1024);
	p11g_store_close(s);

	/* with a higher ceiling the same store takes writes again */
	o.max_map_size = 4 * 1024 * 1024;
	s = open_store(f->dir, &o);
	struct put_args a = {.n = 10, .pad = 1000, .audit = true};
	assert_int_equal(write_ops(s, &a, &err), 0);
	assert_intact(s, written + 10);
	p11g_store_close(s);
}

/* ---- read-only copies ---------------------------------------------------------------- */

static int copy_file(const char *from, const char *to, mode_t mode)
{
	char buf[65536];
	ssize_t n;
	int in = open(from, O_RDONLY | O_CLOEXEC);
	int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (in < 0 || out < 0)
		return -1;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			return -1;
	close(in);
	return close(out) == 0 && n == 0 ? 0 : -1;
}

/* Checks without cmocka so that it can run in a child: 0, or the failing step. */
static int check_read_only_copy(const char *copy)
{
	struct p11g_store_options ro = {.read_only = true};
	p11g_store *s = NULL;
	p11g_err err = {0};
	uint64_t n = 0;
	char path[256];
	struct stat before, after;
	struct get g = {.id = 3};

	snprintf(path, sizeof(path), "%s/data.mdb", copy);
	if (stat(path, &before) < 0)
		return 1;
	if (p11g_store_open(copy, &ro, &s, &err) != 0) {
		fprintf(stderr, "read-only open: %s\n", err.msg);
		return 2;
	}
	if (p11g_store_read(s, verify_body, &n, &err) != 0 || n != 20) {
		fprintf(stderr, "verify: %s (%" PRIu64 ")\n", err.msg, n);
		return 3;
	}
	if (p11g_store_read(s, get_body, &g, &err) != 0 || g.op.id != 3)
		return 4;
	p11g_op_clear(&g.op);
	struct put_args a = {.n = 1};
	if (p11g_store_write(s, put_ops_body, &a, &err) != -1 || strcmp(err.code, P11G_E_STORE))
		return 5;
	p11g_store_close(s);
	if (stat(path, &after) < 0 || after.st_size != before.st_size ||
	    after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
	    after.st_mtim.tv_nsec != before.st_mtim.tv_nsec)
		return 6;
	snprintf(path, sizeof(path), "%s/lock.mdb", copy);
	if (geteuid() != 0 && access(path, F_OK) == 0)
		return 7; /* we could not have created it: the no-lock path was not taken */
	return 0;
}

static void test_read_only_copy(void **state)
{
	struct fx *f = *state;
	char copy[160], from[256], to[256];
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &fast);
	struct put_args a = {.n = 5};
	assert_int_equal(write_ops(s, &a, &err), 0);
	append_records(s, 0, 20, 10);
	p11g_store_close(s);

	/* a copy of the data file alone, in a directory nobody may write */
	snprintf(copy, sizeof(copy), "%s/copy", f->root);
	assert_int_equal(mkdir(copy, 0755), 0);
	snprintf(from, sizeof(from), "%s/data.mdb", f->dir);
	snprintf(to, sizeof(to), "%s/data.mdb", copy);
	assert_int_equal(copy_file(from, to, 0644), 0);
	assert_int_equal(chmod(copy, 0555), 0);
	assert_int_equal(chmod(f->root, 0711), 0);

	if (geteuid() == 0) {
		/* root writes anywhere: drop to nobody so the lock file really
		 * cannot be created */
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			if (setgid(65534) < 0 || setuid(65534) < 0)
				_exit(100);
			_exit(check_read_only_copy(copy));
		}
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	} else {
		assert_int_equal(check_read_only_copy(copy), 0);
	}

	/* as the owner too (root: with a lock file), and the copy verifies */
	assert_int_equal(check_read_only_copy(copy), 0);
}

static void test_read_only_missing(void **state)
{
	struct fx *f = *state;
	struct p11g_store_options ro = {.read_only = true};
	p11g_store *s = NULL;
	p11g_err err = {0};
	struct stat st;
	assert_int_equal(p11g_store_open(f->dir, &ro, &s, &err), -1);
	assert_null(s);
	assert_string_equal(err.code, P11G_E_STORE);
	assert_non_null(strstr(err.msg, f->dir));
	assert_int_equal(stat(f->dir, &st), -1); /* nothing created */
}

/* ---- write failures ------------------------------------------------------------------- */

static void check_disk_full(const char *dir, enum p11g_durability d, enum fail_mode mode)
{
	struct p11g_store_options o = {.durability = d};
	p11g_err err = {0};
	char want[256];
	p11g_store *s = open_store(dir, &o);
	struct put_args a = {.n = 1, .audit = true};
	assert_int_equal(write_ops(s, &a, &err), 0);

	meta_end = 2 * sysconf(_SC_PAGESIZE);
	fail_writes = mode;
	struct put_args big = {.n = 20, .pad = 4000, .audit = true};
	int r = write_ops(s, &big, &err);
	fail_writes = FAIL_NONE;
	assert_int_equal(r, -1);
	assert_string_equal(err.code, P11G_E_STORE);
	snprintf(want, sizeof(want), "cannot record: no space left on device in %s", dir);
	assert_string_equal(err.msg, want);

	/* nothing of the failed write was recorded */
	struct count c = count_ops(s);
	assert_int_equal(c.ops, 1);
	assert_int_equal(c.last_id, 1);
	assert_intact(s, 1);

	/* once there is space again the same handle records */
	assert_int_equal(write_ops(s, &big, &err), 0);
	assert_int_equal(count_ops(s).last_id, 21);
	assert_intact(s, 21);
	p11g_store_close(s);

	s = open_store(dir, &o);
	c = count_ops(s);
	assert_int_equal(c.ops, 21);
	assert_intact(s, 21);
	p11g_store_close(s);
}

static void test_disk_full_pages(void **state)
{
	check_disk_full(((struct fx *)*state)->dir, P11G_DURABLE_PROCESS, FAIL_ALL);
}

static void test_disk_full_sync(void **state)
{
	check_disk_full(((struct fx *)*state)->dir, P11G_DURABLE_FULL, FAIL_ALL);
}

/* The meta page write failing is the case LMDB cannot recover from in the
 * same environment. */
static void test_disk_full_meta(void **state)
{
	check_disk_full(((struct fx *)*state)->dir, P11G_DURABLE_FULL, FAIL_META);
}

/* ---- group commit ------------------------------------------------------------------------ */

/* Writes in a batch: a refusing body undoes only itself, nothing is visible
 * (or on disk) before the end, everything is after it, the chain holds. */
static void test_batch_commits_together(void **state)
{
	struct fx *f = *state;
	struct p11g_store_options o = {.durability = P11G_DURABLE_FULL};
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &o);

	p11g_store_batch_begin(s);
	for (int i = 0; i < 10; i++) {
		struct put_args a = {.n = 3, .audit = true};
		assert_int_equal(write_ops(s, &a, &err), 0);
		if (i == 4) {
			struct put_args no = {.n = 2, .audit = true, .ret = 7};
			assert_int_equal(write_ops(s, &no, &err), 7);
			assert_int_equal(p11g_store_write(s, failing_body, NULL, &err), -1);
			assert_string_equal(err.code, P11G_E_FORBIDDEN);
		}
	}
	/* a read sees the last commit, not the open batch */
	assert_int_equal(count_ops(s).ops, 0);
	memset(&err, 0, sizeof(err));
	assert_int_equal(p11g_store_batch_end(s, &err), 0);
	struct count c = count_ops(s);
	assert_int_equal(c.ops, 30);
	assert_int_equal(c.last_id, 30); /* the refused bodies took no ids */
	assert_intact(s, 30);
	/* outside a batch, writes commit on their own again */
	struct put_args a = {.n = 1, .audit = true};
	assert_int_equal(write_ops(s, &a, &err), 0);
	assert_int_equal(count_ops(s).ops, 31);
	p11g_store_close(s);

	s = open_store(f->dir, &o);
	assert_int_equal(count_ops(s).ops, 31);
	assert_intact(s, 31);
	p11g_store_close(s);
}

/* A batch in a small map: the map grows before the batch opens (a commit
 * at the map's very end can fail for LMDB's own pages), nothing is lost or
 * recorded twice. */
static void test_batch_map_growth(void **state)
{
	struct fx *f = *state;
	struct p11g_store_options o = {.durability = P11G_DURABLE_PROCESS,
	                               .initial_map_size = 64 * 1024};
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &o);

	p11g_store_batch_begin(s);
	for (int i = 0; i < 100; i++) {
		struct put_args a = {.n = 10, .pad = 300, .audit = true};
		assert_int_equal(write_ops(s, &a, &err), 0);
	}
	assert_int_equal(p11g_store_batch_end(s, &err), 0);
	uint64_t map, used;
	p11g_store_stat(s, &map, &used);
	assert_true(map >= 8u << 20 && used < map);
	struct count c = count_ops(s);
	assert_int_equal(c.ops, 1000);
	assert_int_equal(c.last_id, 1000);
	assert_intact(s, 1000);
	p11g_store_close(s);
}

/* The batch's commit fails (disk full): the end says so, none of the
 * batch's writes exist, and the next batch records once there is space. */
static void test_batch_commit_fails(void **state)
{
	struct fx *f = *state;
	struct p11g_store_options o = {.durability = P11G_DURABLE_FULL};
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &o);
	struct put_args first = {.n = 1, .audit = true};

	assert_int_equal(write_ops(s, &first, &err), 0);
	p11g_store_batch_begin(s);
	for (int i = 0; i < 5; i++) {
		struct put_args a = {.n = 2, .audit = true};
		assert_int_equal(write_ops(s, &a, &err), 0);
	}
	fail_writes = FAIL_ALL;
	assert_int_equal(p11g_store_batch_end(s, &err), -1);
	fail_writes = FAIL_NONE;
	assert_string_equal(err.code, P11G_E_STORE);
	assert_int_equal(count_ops(s).ops, 1);
	assert_intact(s, 1);
	p11g_store_batch_begin(s);
	struct put_args a = {.n = 2, .audit = true};
	assert_int_equal(write_ops(s, &a, &err), 0);
	assert_int_equal(p11g_store_batch_end(s, &err), 0);
	assert_int_equal(count_ops(s).ops, 3);
	assert_intact(s, 3);
	p11g_store_close(s);
}

/* ---- indexes ----------------------------------------------------------------------- */

/* Operations 1-4: 1 pending and 2 approved for object=k and token=bench, 3 approved for
 * object=other, 4 approved for every key ("pkcs11:"), 2 past its window. */
static int put_indexed_body(p11g_txn *t, void *arg, p11g_err *err)
{
	static const struct {
		const char *state, *uri;
		int64_t expires;
	} ops[] = {{"pending", "pkcs11:object=k", 4000000000},
	           {"approved", "pkcs11:token=bench", 1000},
	           {"approved", "pkcs11:object=other", 4000000000},
	           {"approved", "pkcs11:", 4000000000}};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(ops); i++) {
		struct p11g_op op;
		uint64_t id;
		if (p11g_txn_next_id(t, &id, err) < 0)
			return -1;
		make_op(&op, id, ops[i].state, 0, 0);
		free(op.keys[0].uri);
		op.keys[0].uri = strdup(ops[i].uri);
		op.expires = ops[i].expires;
		int r = p11g_txn_op_put(t, &op, err);
		p11g_op_clear(&op);
		if (r < 0)
			return -1;
	}
	return 0;
}

struct by_key {
	const char *token, *label;
	struct collect c;
	size_t pending; /* of uid 1000 */
	struct collect due;
};

static int by_key_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct by_key *b = arg;
	struct p11g_keyid k = {0};
	char terms[3][P11G_KEY_TERM_MAX];
	snprintf(k.token_label, sizeof(k.token_label), "%s", b->token);
	snprintf(k.label, sizeof(k.label), "%s", b->label);
	p11g_keyid_terms(&k, terms);
	const char *const list[] = {terms[0], terms[1], terms[2]};
	b->c = (struct collect){0};
	b->due = (struct collect){0};
	if (p11g_txn_op_foreach_key(t, list, 3, collect_visit, &b->c, err) < 0 ||
	    p11g_txn_op_foreach_due(t, p11g_now(), collect_visit, &b->due, err) < 0)
		return -1;
	return p11g_txn_pending_count(t, 1000, &b->pending, err);
}

static struct by_key by_key(p11g_store *s, const char *token, const char *label)
{
	struct by_key b = {.token = token, .label = label};
	p11g_err err = {0};
	assert_int_equal(p11g_store_read(s, by_key_body, &b, &err), 0);
	return b;
}

static size_t raw_count(const char *dir, const char *table)
{
	struct raw r;
	MDB_stat ms;
	raw_open(&r, dir, table);
	assert_int_equal(mdb_stat(r.txn, r.dbi, &ms), 0);
	raw_close(&r);
	return ms.ms_entries;
}

/* A use finds the operations that could name its key, and only those (with the ones for
 * every key); the sweep those past their window; a request its orderer's pending ones.  The
 * indexes follow every put: an operation that ends leaves them. */
static void test_indexes_follow_the_operations(void **state)
{
	struct fx *f = *state;
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &fast);
	assert_int_equal(p11g_store_write(s, put_indexed_body, NULL, &err), 0);

	struct by_key b = by_key(s, "bench", "k");
	assert_ids(&b.c, (uint64_t[]){1, 2, 4}, 3);
	assert_ids(&b.due, (uint64_t[]){2}, 1);
	assert_int_equal(b.pending, 1);
	b = by_key(s, "prod", "other");
	assert_ids(&b.c, (uint64_t[]){3, 4}, 2);
	b = by_key(s, "prod", "nothing");
	assert_ids(&b.c, (uint64_t[]){4}, 1);

	/* ended: out of every index; approved: out of the orderer's pending ones */
	set_state(s, 1, "approved");
	set_state(s, 2, "expired");
	set_state(s, 4, "revoked");
	b = by_key(s, "bench", "k");
	assert_ids(&b.c, (uint64_t[]){1}, 1);
	assert_int_equal(b.due.n, 0);
	assert_int_equal(b.pending, 0);
	p11g_store_close(s);
	assert_int_equal(raw_count(f->dir, "by_key"), 2);    /* 1 and 3 */
	assert_int_equal(raw_count(f->dir, "by_expiry"), 2); /* 1 and 3 */
	assert_int_equal(raw_count(f->dir, "pending_by"), 0);
}

/* A store of schema 1 (no indexes) is read as it is, and indexed the first time it is opened
 * for writing. */
static void test_schema_1_is_indexed_when_opened(void **state)
{
	struct fx *f = *state;
	p11g_err err = {0};
	p11g_store *s = open_store(f->dir, &fast);
	assert_int_equal(p11g_store_write(s, put_indexed_body, NULL, &err), 0);
	p11g_store_close(s);

	struct raw r;
	MDB_dbi dbi;
	raw_open(&r, f->dir, "meta");
	for (size_t i = 0; i < 3; i++) {
		static const char *const names[] = {"by_key", "by_expiry", "pending_by"};
		assert_int_equal(mdb_dbi_open(r.txn, names[i], 0, &dbi), 0);
		assert_int_equal(mdb_drop(r.txn, dbi, 1), 0);
	}
	MDB_val k = {strlen("schema"), "schema"}, v = {1, "1"};
	assert_int_equal(mdb_put(r.txn, r.dbi, &k, &v, 0), 0);
	raw_close(&r);

	/* read-only: no indexes, the walks go through every active operation */
	struct p11g_store_options ro = {.read_only = true};
	s = open_store(f->dir, &ro);
	struct by_key b = by_key(s, "prod", "nothing");
	assert_ids(&b.c, (uint64_t[]){1, 2, 3, 4}, 4);
	assert_ids(&b.due, (uint64_t[]){2}, 1);
	assert_int_equal(b.pending, 1);
	p11g_store_close(s);

	s = open_store(f->dir, &fast);
	b = by_key(s, "prod", "nothing");
	assert_ids(&b.c, (uint64_t[]){4}, 1);
	b = by_key(s, "bench", "k");
	assert_ids(&b.c, (uint64_t[]){1, 2, 4}, 3);
	assert_int_equal(b.pending, 1);
	p11g_store_close(s);
	assert_int_equal(raw_count(f->dir, "by_key"), 4);
}

/* ---- external tools -------------------------------------------------------------------- */

static void test_values_are_json(void **state)
{
	struct fx *f = *state;
	static const char *const states[] = {"pending", "revoked"};
	struct put_args a = {.n = 2, .states = states, .n_states = 2, .audit = true};
	struct raw r;
	json_t *op = written_op(f->dir, &a, 2, &r);
	assert_string_equal(json_string_value(json_object_get(op, "state")), "revoked");
	json_decref(op);
	raw_close(&r);

	raw_open(&r, f->dir, "active");
	json_t *st = raw_get(&r, 1);
	assert_string_equal(json_string_value(st), "pending");
	json_decref(st);
	MDB_stat ms;
	assert_int_equal(mdb_stat(r.txn, r.dbi, &ms), 0);
	assert_int_equal(ms.ms_entries, 1);
	raw_close(&r);

	raw_open(&r, f->dir, "meta");
	MDB_val k = {strlen("next_id"), "next_id"}, v;
	assert_int_equal(mdb_get(r.txn, r.dbi, &k, &v), 0);
	assert_int_equal(v.mv_size, 1);
	assert_memory_equal(v.mv_data, "3", 1);
	k = (MDB_val){strlen("schema"), "schema"};
	assert_int_equal(mdb_get(r.txn, r.dbi, &k, &v), 0);
	assert_memory_equal(v.mv_data, "2", 1);
	k = (MDB_val){strlen("audit_head"), "audit_head"};
	assert_int_equal(mdb_get(r.txn, r.dbi, &k, &v), 0);
	json_t *head = json_loadb(v.mv_data, v.mv_size, 0, NULL);
	assert_int_equal(json_integer_value(json_object_get(head, "seq")), 2);
	assert_int_equal(strlen(json_string_value(json_object_get(head, "hash"))), 64);
	json_decref(head);
	raw_close(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_private_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ops_and_active_index, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_op_get, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_op_put_refuses_what_cannot_be_read_back, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_op_damaged_is_an_error, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_next_id_persists, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_meta_prune, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_body_abort, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_op_cache_follows_the_store, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_chain_intact, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_altered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_altered_rehashed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_deleted_middle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_swapped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_deleted_newest, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_deleted_head, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_only_renews_its_transaction, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_map_growth, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_map_cap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_only_copy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_only_missing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disk_full_pages, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disk_full_sync, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disk_full_meta, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_values_are_json, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_indexes_follow_the_operations, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_schema_1_is_indexed_when_opened, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batch_commits_together, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batch_map_growth, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batch_commit_fails, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
