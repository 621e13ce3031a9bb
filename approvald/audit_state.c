/* Operations checked against the audit log: each change's record holds the state it left
 * (p11g_op_audited), a use spends only an operation that agrees with its last record, and
 * audit --verify replays the records and compares every stored operation with them. */
#include "approvald/audit_state.h"

#include <inttypes.h>

#include <openssl/evp.h>

#include "approvald/checkpoint.h"
#include "approvald/checkpoint_job.h"
#include "approvald/jbuild.h"
#include "approvald/op.h"
#include "approvald/ops_internal.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define LEGACY_META "legacy_ops_through"

#define broken(err, ...) p11g_err_set(err, P11G_E_AUDIT_BROKEN, __VA_ARGS__)

/* The first of names where a and b differ: 1 with msg "NAME is A in the store, B in its record
 * SEQ", or 0. */
static int diff_members(const json_t *a, const json_t *b, const char *const *names, uint64_t seq,
                        char *msg, size_t n)
{
	char what[128], sa[160], sb[160];
	for (size_t i = 0; names[i]; i++) {
		const json_t *x = json_object_get(a, names[i]), *y = json_object_get(b, names[i]);
		if (!x && !y)
			continue; /* an optional member neither has */
		if (!p11g_op_audited_diff(x, y, what, sizeof(what), sa, sb, sizeof(sa)))
			continue;
		snprintf(msg, n, "%s%s is %s in the store, %s in its record %" PRIu64, names[i],
		         what, sa, sb, seq);
		return 1;
	}
	return 0;
}

/* The operation's stored form against what its record says it was after the change, and its
 * terms against the record that holds them whole: 1 with msg naming the first difference, 0
 * when they agree, -1 with err (store, memory). */
static int compare(p11g_txn *t, const struct p11g_op *op, const json_t *rec, char *msg, size_t n,
                   p11g_err *err)
{
	static const char *const changing[] = {"state", "used", "approvals", NULL};
	const json_t *after = json_object_get(rec, "after");
	json_int_t rid = json_integer_value(json_object_get(rec, "op"));
	if (!json_is_object(after) || rid != (json_int_t)op->id) {
		snprintf(msg, n, "its record %" PRIu64 " is not a record of its state",
		         op->audit_seq);
		return 1;
	}
	_cleanup_json_ json_t *mine = p11g_op_audited(op, 0);
	if (!mine)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (diff_members(mine, after, changing, op->audit_seq, msg, n))
		return 1;
	/* the terms: whole in this record, or by hash and the record that holds them */
	const json_t *tseq = json_object_get(after, "terms_seq");
	uint64_t held = tseq ? (uint64_t)json_integer_value(tseq) : op->audit_seq;
	if (held != op->terms_seq) {
		snprintf(msg, n,
		         "it names record %" PRIu64 " for its terms, its record %" PRIu64
		         " names record %" PRIu64,
		         op->terms_seq, op->audit_seq, held);
		return 1;
	}
	const char *h = json_string_value(json_object_get(after, "terms")),
	           *mh = json_string_value(json_object_get(mine, "terms"));
	if (h && mh && !strcmp(h, mh))
		return 0;
	_cleanup_json_ json_t *whole = NULL;
	if (tseq) {
		int r = p11g_txn_audit_get(t, held, &whole, err);
		if (r == -ENOENT) {
			snprintf(msg, n, "the record of its terms (%" PRIu64 ") is missing", held);
			return 1;
		}
		if (r < 0)
			return -1;
	}
	const json_t *tafter = whole ? json_object_get(whole, "after") : after;
	if (diff_members(mine, tafter, p11g_op_term_names, held, msg, n))
		return 1;
	snprintf(msg, n, "its terms do not match their hash in its record %" PRIu64, op->audit_seq);
	return 1;
}

/* Whether approvald wrote a later record of op than the one it names (the operation was put
 * back to an earlier state of itself): 1 with msg, 0, or -1 with err.  The record approvald
 * remembers may be gone (its transaction undone) or be another operation's (its number then
 * reused): then it proves nothing. */
static int rolled_back(p11g_txn *t, const struct p11g_op *op, char *msg, size_t n, p11g_err *err)
{
	uint64_t last = 0;
	_cleanup_json_ json_t *rec = NULL;
	if (p11g_txn_op_recent(t, op->id, &last) < 0 || last <= op->audit_seq)
		return 0;
	int r = p11g_txn_audit_get(t, last, &rec, err);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return -1;
	if (json_integer_value(json_object_get(rec, "op")) != (json_int_t)op->id)
		return 0;
	snprintf(msg, n,
	         "it names record %" PRIu64 ", approvald last wrote record %" PRIu64
	         " of it (put back to an earlier state)",
	         op->audit_seq, last);
	return 1;
}

int ops_check_audited(p11g_txn *t, const struct p11g_op *op, p11g_err *err)
{
	_cleanup_json_ json_t *rec = NULL;
	char msg[600];
	int r;

	if ((r = rolled_back(t, op, msg, sizeof(msg), err)) < 0)
		return -1;
	if (r) {
		/* named below */
	} else if (!op->audit_seq) {
		snprintf(msg, sizeof(msg), "it names no audit record of its state");
	} else if ((r = p11g_txn_audit_get(t, op->audit_seq, &rec, err)) == -ENOENT) {
		snprintf(msg, sizeof(msg), "its record %" PRIu64 " is missing", op->audit_seq);
	} else if (r < 0) {
		return -1;
	} else if ((r = compare(t, op, rec, msg, sizeof(msg), err)) < 0) {
		return -1;
	} else if (r == 0) {
		return 0;
	}
	p11g_error("operation %" PRIu64 " refused: %s (the store was changed behind approvald: "
	           "run approvald audit --verify)",
	           op->id, msg);
	return broken(err,
	              "operation %" PRIu64 " disagrees with the audit log (%s): refused; an admin "
	              "should run approvald audit --verify",
	              op->id, msg);
}

/* ---- startup: every active operation gets a record of its state ---------------------- */

struct record_ctx {
	struct p11g_ops *o;
	uint64_t ids[256];
	size_t n;
	uint64_t start, after; /* the walk's start and where it got to */
};

static int unrecorded_visit(const struct p11g_op *op, void *arg)
{
	struct record_ctx *c = arg;
	c->after = op->id;
	if (op->audit_seq == 0)
		c->ids[c->n++] = op->id;
	return c->n == P11G_ARRAY_SIZE(c->ids) ? 1 : 0;
}

/*
 * The operations an older version left without a record of their state are those up to the
 * last id allocated when this version first opened the store (meta "legacy_ops_through",
 * written then): only they get one at start.  An operation after it without one was changed
 * behind approvald, and gets no record that would bless the change: its uses are refused.
 */
static int legacy_through(p11g_txn *t, int64_t *ret, p11g_err *err)
{
	uint64_t last = 0;
	int r = p11g_txn_meta_get_int(t, LEGACY_META, ret, err);
	if (r != -ENOENT)
		return r;
	if (p11g_txn_last_id(t, &last, err) < 0 ||
	    p11g_txn_meta_put_int(t, LEGACY_META, (int64_t)last, err) < 0)
		return -1;
	*ret = (int64_t)last;
	return 0;
}

static int record_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct record_ctx *c = arg;
	struct p11g_ident me;
	int64_t legacy = 0;
	c->n = 0;
	c->after = c->start;
	if (legacy_through(t, &legacy, err) < 0)
		return -1;
	if (p11g_txn_op_foreach(t, true, c->start, unrecorded_visit, c, err) < 0)
		return -1;
	for (size_t i = 0; i < c->n; i++) {
		_cleanup_op_ struct p11g_op op = {0};
		if (c->ids[i] > (uint64_t)legacy) {
			p11g_error(
			    "operation %" PRIu64 " names no audit record of its state, and "
			    "was created by this version: changed behind approvald, its uses "
			    "are refused (run approvald audit --verify)",
			    c->ids[i]);
			continue;
		}
		if (ops_load_op(t, c->ids[i], &op, err) < 0 ||
		    ops_audit_op(t, "recorded", ops_daemon_actor(c->o, &me), &op,
		                 json_pack("{s:s}", "why", "state recorded at start"), err) < 0)
			return -1;
	}
	return 0;
}

int p11g_ops_record_states(struct p11g_ops *o, size_t *ret_count, p11g_err *err)
{
	struct record_ctx c = {.o = o};
	*ret_count = 0;
	do {
		c.start = c.after;
		if (p11g_store_write(o->store, record_body, &c, err) < 0)
			return -1;
		*ret_count += c.n;
	} while (c.n == P11G_ARRAY_SIZE(c.ids));
	return 0;
}

/* ---- the replay ---------------------------------------------------------------------- */

/* What the replay keeps per operation: where its last record is, and enough of that record's
 * state to judge the next one (the rest is re-read when a finding needs naming). */
struct replayed {
	uint64_t seq; /* 0: none seen */
	enum p11g_op_state state;
	int64_t used;
	size_t approvals;
	unsigned char terms[32]; /* SHA-256 of what never changes after creation */
	uint64_t terms_seq;      /* the record that holds them whole */
	bool seen;               /* compare: found in the store */
};

/* The terms' hash a record states (its "terms"), checked against the terms themselves when
 * the record holds them whole: 0, 1 when they disagree, -1 when malformed. */
static int terms_of(const json_t *after, unsigned char out[32])
{
	const char *hex = json_string_value(json_object_get(after, "terms"));
	char mine[65];
	if (!hex || strlen(hex) != 64 || p11g_hex_decode(hex, 64, out, 32) != 32)
		return -1;
	if (json_object_get(after, "terms_seq"))
		return 0;
	if (p11g_op_terms_hash(after, mine) < 0)
		return -1;
	return strcmp(mine, hex) ? 1 : 0;
}

static int64_t used_of(const json_t *after)
{
	int64_t n = 0;
	size_t i;
	json_t *k;
	json_array_foreach(json_object_get(after, "used"), i, k) n += json_integer_value(k);
	return n;
}

void p11g_replay_init(struct p11g_replay *r, bool full)
{
	memset(r, 0, sizeof(*r));
	r->full = full;
	r->findings = json_array();
}

void p11g_replay_clear(struct p11g_replay *r)
{
	free(r->ops);
	free(r->recent);
	json_decref(r->findings);
	memset(r, 0, sizeof(*r));
}

static void finding(struct p11g_replay *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void finding(struct p11g_replay *r, const char *fmt, ...)
{
	char text[800];
	va_list ap;
	r->n_findings++;
	if (json_array_size(r->findings) >= P11G_REPLAY_FINDINGS_MAX)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	json_array_append_new(r->findings, json_string(text));
}

static struct replayed *slot(struct p11g_replay *r, uint64_t id)
{
	if (id == 0 || id > P11G_REPLAY_IDS_MAX)
		return NULL;
	if (id >= r->n_ops) {
		size_t n = r->n_ops ? r->n_ops : 1024;
		while (n <= id)
			n *= 2;
		struct replayed *ops = realloc(r->ops, n * sizeof(*ops));
		if (!ops)
			return NULL;
		memset(ops + r->n_ops, 0, (n - r->n_ops) * sizeof(*ops));
		r->ops = ops;
		r->n_ops = n;
	}
	return &r->ops[id];
}

static bool terminal(enum p11g_op_state s)
{
	return s != P11G_OP_PENDING && s != P11G_OP_APPROVED;
}

struct p11g_replay_hash {
	uint64_t seq;
	char hex[2 * P11G_AUDIT_HASH_LEN + 1];
};

/* Each record's prev, the hash of the record before it (which the chain walk checked), kept
 * for the checkpoints that come after it. */
static int remember_prev(struct p11g_replay *r, uint64_t seq, const json_t *rec, p11g_err *err)
{
	const char *prev = json_string_value(json_object_get(rec, "prev"));
	if (!r->pubkey || seq < 2 || !prev || strlen(prev) != 2 * P11G_AUDIT_HASH_LEN)
		return 0;
	if (!r->recent && !(r->recent = calloc(P11G_CHECKPOINT_LAG_MAX, sizeof(*r->recent))))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	struct p11g_replay_hash *h = &r->recent[(seq - 1) % P11G_CHECKPOINT_LAG_MAX];
	h->seq = seq - 1;
	memcpy(h->hex, prev, sizeof(h->hex));
	return 0;
}

/* A checkpoint signs a record before it (through: the one just before, or one some records
 * back when it was signed while approvald went on, checkpoint_job.h) and that record's hash,
 * which the chain walk has checked: a rewrite up to there that re-hashed the chain leaves the
 * signed hash behind, and a signature cannot be made without the key. */
static int replay_checkpoint(struct p11g_replay *r, uint64_t seq, const json_t *rec)
{
	const char *why = NULL;
	const char *head = json_string_value(json_object_get(rec, "head")), *known = NULL;
	json_int_t through = json_integer_value(json_object_get(rec, "through"));

	if (!r->pubkey)
		return 0;
	int c = p11g_checkpoint_check(r->pubkey, rec, &why);
	if (c != 0) {
		finding(r, "record %" PRIu64 ": a checkpoint that is not approvald's (%s)", seq,
		        why);
		return 0;
	}
	if (through > 0 && through < (json_int_t)seq &&
	    (uint64_t)(seq - 1 - (uint64_t)through) < P11G_CHECKPOINT_LAG_MAX && r->recent &&
	    r->recent[(uint64_t)through % P11G_CHECKPOINT_LAG_MAX].seq == (uint64_t)through)
		known = r->recent[(uint64_t)through % P11G_CHECKPOINT_LAG_MAX].hex;
	if (!known || !head || strcmp(head, known) != 0) {
		finding(r,
		        "records %" PRIu64 " to %" JSON_INTEGER_FORMAT
		        ": rewritten (the checkpoint in record %" PRIu64
		        " signed another hash for record %" JSON_INTEGER_FORMAT ")",
		        r->covered + 1, through, seq, through);
		return 0;
	}
	/* the checkpoint's own record holds what it signs and the signature: right after what
	 * it signs, it is covered too */
	r->checkpoints++;
	uint64_t covered = (uint64_t)through == seq - 1 ? seq : (uint64_t)through;
	if (covered > r->covered)
		r->covered = covered;
	return 0;
}

int p11g_replay_record(uint64_t seq, const json_t *rec, void *arg, p11g_err *err)
{
	struct p11g_replay *r = arg;
	const json_t *after = json_object_get(rec, "after");
	const char *event = json_string_value(json_object_get(rec, "event"));
	json_int_t id = json_integer_value(json_object_get(rec, "op"));
	enum p11g_op_state state;
	unsigned char terms[32];

	r->records++;
	if (remember_prev(r, seq, rec, err) < 0)
		return -1;
	if (event && !strcmp(event, "checkpoint"))
		return replay_checkpoint(r, seq, rec);
	if (!after)
		return 0;
	struct replayed *p = slot(r, (uint64_t)id);
	if (!p)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
		                    " cannot be replayed (out of memory or id out of range)",
		                    seq, id);
	int tr = json_is_object(after) ? terms_of(after, terms) : -1;
	if (!event || tr < 0 ||
	    p11g_op_state_parse(json_string_value(json_object_get(after, "state")), &state) < 0) {
		finding(r,
		        "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
		        ": its state after the change is malformed",
		        seq, id);
		return 0;
	}
	int64_t used = used_of(after);
	size_t approvals = json_array_size(json_object_get(after, "approvals"));
	bool first = p->seq == 0;
	const json_t *tseq = json_object_get(after, "terms_seq");
	if (tr == 1)
		finding(r,
		        "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
		        ": its terms do not match their hash",
		        seq, id);
	if (tseq && !first && (uint64_t)json_integer_value(tseq) != p->terms_seq)
		finding(r,
		        "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
		        ": names record %" JSON_INTEGER_FORMAT " for its terms, record %" PRIu64
		        " holds them",
		        seq, id, json_integer_value(tseq), p->terms_seq);
	if (tseq && first && r->full)
		finding(r,
		        "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
		        ": its terms by hash before any record of them whole",
		        seq, id);
	if (first && r->full && strcmp(event, "created") != 0 && strcmp(event, "recorded") != 0)
		finding(r,
		        "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
		        ": \"%s\" before any record of its creation",
		        seq, id, event);
	if (!first) {
		if (!strcmp(event, "recorded"))
			finding(r,
			        "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
			        ": its state recorded again at a start (record %" PRIu64
			        " had it): its record was removed from the store",
			        seq, id, p->seq);
		if (!strcmp(event, "created"))
			finding(r,
			        "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
			        " created again (first recorded in record %" PRIu64 ")",
			        seq, id, p->seq);
		if (memcmp(terms, p->terms, sizeof(terms)) != 0)
			finding(
			    r,
			    "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
			    ": its terms (orderer, signer, window, keys, uses granted or pinned "
			    "digests) changed since record %" PRIu64,
			    seq, id, p->seq);
		if (terminal(p->state))
			finding(r,
			        "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
			        ": \"%s\" after it was %s (record %" PRIu64 ")",
			        seq, id, event, p11g_op_state_name(p->state), p->seq);
		bool use = !strcmp(event, "use_granted");
		if (used != p->used + (use ? 1 : 0))
			finding(r,
			        "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT ": %" PRId64
			        " uses made after \"%s\", %" PRId64 " before",
			        seq, id, used, event, p->used);
		if (use && p->state != P11G_OP_APPROVED)
			finding(r,
			        "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
			        ": a use granted while it was %s",
			        seq, id, p11g_op_state_name(p->state));
		/* an approval adds its approver's, a withdrawal takes it away, nothing else
		 * changes who approved (an approval "by" the policy adds none) */
		bool by_policy = json_object_get(rec, "by") != NULL;
		bool approve = !strcmp(event, "approved") && !by_policy,
		     withdraw = !strcmp(event, "withdrawn");
		json_int_t actor =
		    json_integer_value(json_object_get(json_object_get(rec, "actor"), "uid"));
		bool listed = false;
		size_t k;
		json_t *u;
		json_array_foreach(json_object_get(after, "approvals"), k, u) listed |=
		    json_integer_value(u) == actor;
		size_t want = approve    ? p->approvals + 1
		              : withdraw ? p->approvals - 1
		                         : p->approvals;
		if (approvals != want || (approve && !listed) || (withdraw && listed))
			finding(r,
			        "record %" PRIu64 ": operation %" JSON_INTEGER_FORMAT
			        ": %zu approvals after \"%s\" by uid %" JSON_INTEGER_FORMAT
			        ", %zu before",
			        seq, id, approvals, event, actor, p->approvals);
	}
	p->seq = seq;
	p->terms_seq = tseq ? (uint64_t)json_integer_value(tseq) : seq;
	p->state = state;
	p->used = used;
	p->approvals = approvals;
	memcpy(p->terms, terms, sizeof(terms));
	return 0;
}

/* Stored operations compared per read transaction, and records verified per one: the walk
 * takes many short snapshots, so that approvald's writes meanwhile reuse the pages they free
 * (a snapshot held for the whole walk made every commit grow the file). */
#define COMPARE_CHUNK 2048
#define VERIFY_CHUNK  65536

struct compare_ctx {
	struct p11g_replay *r;
	p11g_txn *t;
	p11g_err *err;
	uint64_t after; /* the last operation compared */
	uint64_t head;  /* the chain's head in this snapshot */
	unsigned n;     /* compared in this snapshot */
	bool failed;
};

static int compare_visit(const struct p11g_op *op, void *arg)
{
	struct compare_ctx *c = arg;
	struct p11g_replay *r = c->r;
	struct replayed *p = op->id < r->n_ops ? &r->ops[op->id] : NULL;
	char msg[600];

	if (c->n++ == COMPARE_CHUNK)
		return 1;
	c->after = op->id;
	r->operations++;
	if (p && p->seq)
		p->seen = true;
	if (op->audit_seq > r->through) {
		/* changed since the walk began: its record is not among those verified */
		if (op->audit_seq > c->head)
			finding(r,
			        "operation %" PRIu64 ": names record %" PRIu64
			        ", past the end of the log (%" PRIu64 ")",
			        op->id, op->audit_seq, c->head);
		else
			r->changed++;
		return 0;
	}
	if (!op->audit_seq) {
		if (p11g_op_state_active(op->state) || (p && p->seq))
			finding(r, "operation %" PRIu64 ": %s, and names no record of its state",
			        op->id, p11g_op_state_name(op->state));
		else
			r->unrecorded++;
		return 0;
	}
	if (p && p->seq && p->seq != op->audit_seq) {
		finding(r,
		        "operation %" PRIu64 ": names record %" PRIu64
		        " as its last change, the log's last is record %" PRIu64,
		        op->id, op->audit_seq, p->seq);
		return 0;
	}
	if (r->full && !(p && p->seq)) {
		finding(r, "operation %" PRIu64 ": no record in the audit log changed it", op->id);
		return 0;
	}
	_cleanup_json_ json_t *rec = NULL;
	int g = p11g_txn_audit_get(c->t, op->audit_seq, &rec, c->err);
	if (g == -ENOENT) {
		finding(r, "operation %" PRIu64 ": its record %" PRIu64 " is missing", op->id,
		        op->audit_seq);
		return 0;
	}
	if (g < 0) {
		c->failed = true;
		return -1;
	}
	int d = compare(c->t, op, rec, msg, sizeof(msg), c->err);
	if (d < 0) {
		c->failed = true;
		return -1;
	}
	if (d)
		finding(r, "operation %" PRIu64 ": %s", op->id, msg);
	return 0;
}

static int compare_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct compare_ctx *c = arg;
	c->t = t;
	c->n = 0;
	c->failed = false;
	if (p11g_txn_audit_head_seq(t, &c->head, err) < 0 ||
	    p11g_txn_op_foreach(t, false, c->after, compare_visit, c, err) < 0)
		return -1;
	return c->failed ? -1 : 0;
}

int p11g_replay_compare(p11g_store *s, struct p11g_replay *r, p11g_err *err)
{
	struct compare_ctx c = {.r = r, .err = err};
	do {
		if (p11g_store_read(s, compare_body, &c, err) != 0)
			return -1;
	} while (c.n > COMPARE_CHUNK);
	for (size_t id = 1; id < r->n_ops; id++)
		if (r->ops[id].seq && !r->ops[id].seen)
			finding(r,
			        "operation %zu: changed in record %" PRIu64
			        " of the audit log, absent from the store",
			        id, r->ops[id].seq);
	return 0;
}

struct verify_chunk {
	struct p11g_replay *r;
	const struct p11g_audit_mark *from;
	uint64_t upto;
	struct p11g_audit_mark through;
	uint64_t head;
};

static int head_body(p11g_txn *t, void *arg, p11g_err *err)
{
	return p11g_txn_audit_head_seq(t, arg, err);
}

static int verify_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct verify_chunk *v = arg;
	return p11g_txn_audit_verify_range(t, v->from, v->upto, p11g_replay_record, v->r,
	                                   &v->through, err);
}

static int mark_body(p11g_txn *t, void *arg, p11g_err *err)
{
	return p11g_txn_audit_check_mark(t, arg, err);
}

int p11g_audit_check(p11g_store *s, const struct p11g_audit_mark *from,
                     const struct p11g_audit_mark *known, EVP_PKEY *pubkey, json_t **ret_report,
                     p11g_err *err)
{
	struct p11g_replay r __attribute__((cleanup(p11g_replay_clear)));
	struct p11g_audit_mark mark = from ? *from : (struct p11g_audit_mark){0};
	char hex[2 * P11G_AUDIT_HASH_LEN + 1];
	bool full = mark.seq == 0;
	uint64_t target = 0;

	p11g_replay_init(&r, full);
	r.pubkey = pubkey;
	if (pubkey && !full)
		return p11g_err_set(err, P11G_E_INTERNAL, "checkpoints are checked from record 1");
	if (!r.findings)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	/* the records up to the head as the walk begins, a chunk per snapshot (the log only
	 * grows: what a later snapshot adds is for the next walk) */
	if (p11g_store_read(s, head_body, &target, err) != 0)
		return -1;
	do {
		uint64_t before = mark.seq;
		struct verify_chunk v = {
		    .r = &r,
		    .from = mark.seq ? &mark : NULL,
		    .upto = target - mark.seq > VERIFY_CHUNK ? mark.seq + VERIFY_CHUNK : target};
		if (p11g_store_read(s, verify_body, &v, err) != 0)
			return -1;
		mark = v.through;
		if (mark.seq <= before && mark.seq < target)
			return broken(err,
			              "chain head: moved back to record %" PRIu64
			              " during the walk (it was at %" PRIu64 ")",
			              mark.seq, target);
	} while (mark.seq < target);
	/* a walk from record 1 still checks the record a walk before ended at: its hash in
	 * approvald's memory is what a rewrite that re-hashed the chain cannot keep */
	if (known && known->seq && known->seq <= mark.seq &&
	    p11g_store_read(s, mark_body, (void *)known, err) != 0)
		return -1;
	r.through = mark.seq;
	if (p11g_replay_compare(s, &r, err) < 0)
		return -1;
	if (r.n_findings) {
		char msg[900];
		size_t len = 0;
		for (size_t i = 0; i < json_array_size(r.findings) && i < 3 && len < sizeof(msg);
		     i++)
			len += (size_t)snprintf(msg + len, sizeof(msg) - len, "%s%s", i ? "; " : "",
			                        json_string_value(json_array_get(r.findings, i)));
		return broken(
		    err, "the operations disagree with the audit log (%" PRIu64 " finding%s): %s",
		    r.n_findings, r.n_findings == 1 ? "" : "s", msg);
	}
	if (pubkey && r.checkpoints == 0 && mark.seq > 0)
		return broken(err,
		              "no checkpoint signed by this audit key: none of the %" PRIu64
		              " records is covered (were the checkpoints removed, or is it another "
		              "key?)",
		              mark.seq);
	p11g_hex_encode(mark.hash, sizeof(mark.hash), hex);
	*ret_report =
	    json_pack("{s:I, s:I, s:s, s:I, s:I, s:I, s:b}", "records", (json_int_t)mark.seq,
	              "from", (json_int_t)(from ? from->seq + 1 : 1), "hash", hex, "operations",
	              (json_int_t)r.operations, "unrecorded", (json_int_t)r.unrecorded, "changed",
	              (json_int_t)r.changed, "ok", 1);
	if (!*ret_report)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (pubkey) {
		struct p11g_jb b = {0};
		p11g_jb_set_int(&b, *ret_report, "checkpoints", (int64_t)r.checkpoints);
		p11g_jb_set_int(&b, *ret_report, "covered", (int64_t)r.covered);
		p11g_jb_set_int(&b, *ret_report, "uncovered", (int64_t)(mark.seq - r.covered));
		if (b.failed)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	return 0;
}
