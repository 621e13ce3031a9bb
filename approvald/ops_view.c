/* Read-only views of operations and the audit log: show, list, status, audit, verify. */
#include "approvald/authz.h"
#include "approvald/op.h"
#include "approvald/jwks_sources.h"
#include "approvald/notify.h"
#include "approvald/ops_internal.h"

#include <inttypes.h>

#include "p11gate/wire.h"

#define REPLY_BUDGET (P11G_FRAME_MAX - 4096) /* listings page before a reply outgrows a frame */
/* Stored operations one list call reads, whatever it finds, before it answers with the page so
 * far and a cursor ("next"): the walk runs in approvald-read (read_worker.c), or in approvald's
 * one event loop when that cannot start, where every use waits for it.  Reading one costs 28-45 us
 * (a 30 000-operation tests/bench/bench_store store, `list
 * --all --state rejected` from a uid that sees none, one wire call, two runs): 256 hold a call
 * to 7-12 ms, against 0.8-1.4 s for the whole walk and 90 ms at 2 000 (a status took 0.8-1.5
 * ms).  A whole listing costs about the same in all (0.9-1.5 s there, 118 calls), and signers
 * get their turns between the calls. */
#define LIST_SCAN_MAX 256
/* ... and a call ends after about this long whatever it read (at least eight operations: every
 * call gets on): a page of operations the caller may see costs 5-7 ms at 256 (root's `list
 * --all` on tests/bench/stall's store), which every request arriving meanwhile waited for. */
#define LIST_SCAN_US 200

struct read_ctx {
	struct p11g_ops *o;
	const struct p11g_ident *caller;
	uint64_t id;
	const struct p11g_list_args *list;
	json_t *out;
	unsigned n;
	size_t bytes; /* encoded size so far: a reply must fit in one frame */
	bool more;
	int64_t started_us; /* list: when the call began (LIST_SCAN_US) */
	uint64_t since;
	unsigned limit;
	bool oom; /* a visitor could not build what it found: the reply is an error, not short */
	bool has_state; /* list: the state asked for, when one was */
	enum p11g_op_state state;
	unsigned scanned; /* list: operations read so far */
	uint64_t last;    /* list: the last one read and dealt with, where a next call goes on */
};

/* A reply built after the walk: NULL is a failed allocation, reported as such. */
static int reply(json_t *result, json_t **ret, p11g_err *err)
{
	if (!result)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	*ret = result;
	return 0;
}

/* What a walk with visitors building c->out returned: a visitor's failed allocation is an
 * error the store did not set. */
static int walked(const struct read_ctx *c, int r, p11g_err *err)
{
	if (r < 0 && c->oom)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return r < 0 ? -1 : 0;
}

/* Adds item (taken) to the page in c->out, or ends the page (1) when it holds limit items or
 * item would take the reply past a frame; -1 when memory ran out (a visitor's abort). */
static int page_add(struct read_ctx *c, unsigned limit, json_t *item)
{
	size_t sz = json_dumpb(item, NULL, 0, JSON_COMPACT);
	if (c->n == limit || (c->n && c->bytes + sz > REPLY_BUDGET)) {
		json_decref(item);
		c->more = true;
		return 1;
	}
	if (json_array_append_new(c->out, item) < 0) {
		c->oom = true;
		return -1;
	}
	c->bytes += sz + 1;
	c->n++;
	return 0;
}

static int show_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct read_ctx *c = arg;
	_cleanup_op_ struct p11g_op op = {0};
	if (ops_load_op(t, c->id, &op, err) < 0)
		return -1;
	if (!p11g_authz_may_see(c->o->daemon_uid, c->caller, &op))
		return p11g_err_set(err, P11G_E_NOT_FOUND, "no operation %" PRIu64, c->id);
	if (!(c->out = ops_public(&op)))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return 0;
}

int p11g_ops_show(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t id, json_t **ret_op,
                  p11g_err *err)
{
	struct read_ctx c = {.o = o, .caller = caller, .id = id};
	if (p11g_store_read(o->store, show_body, &c, err) != 0) {
		json_decref(c.out);
		return -1;
	}
	*ret_op = c.out;
	return 0;
}

/* Adds op to the page when the caller asked for it and may see it: 0, 1 when the page is full,
 * -1 out of memory. */
static int list_one(struct read_ctx *c, const struct p11g_op *op)
{
	const struct p11g_list_args *a = c->list;
	enum p11g_op_state seen = p11g_op_effective_state(op, p11g_now());
	bool may_see = p11g_authz_may_see(c->o->daemon_uid, c->caller, op);

	if (a->all) {
		if (!may_see || (c->has_state && seen != c->state))
			return 0;
	} else {
		/* What waits for the caller's decision. */
		if (seen != (c->has_state ? c->state : P11G_OP_PENDING))
			return 0;
		if (seen == P11G_OP_PENDING ? !p11g_authz_awaits(op, c->caller) : !may_see)
			return 0;
	}
	json_t *pub = ops_public(op);
	if (!pub) {
		c->oom = true;
		return -1;
	}
	return page_add(c, c->list->limit, pub);
}

/* One more operation read, past LIST_SCAN_MAX, ends the call: then there is more, and the
 * next call goes on after the last one dealt with. */
static int list_visit(const struct p11g_op *op, void *arg)
{
	struct read_ctx *c = arg;
	if (c->scanned++ == LIST_SCAN_MAX ||
	    (c->scanned % 8 == 0 && p11g_mono_us() - c->started_us > LIST_SCAN_US)) {
		c->more = true;
		return 1;
	}
	int r = list_one(c, op);
	if (r == 0)
		c->last = op->id;
	return r;
}

static int list_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct read_ctx *c = arg;
	const struct p11g_list_args *a = c->list;
	/* Only pending and approved operations live in the index; the rest need a full walk. */
	bool active_only =
	    (!a->all && !c->has_state) || (c->has_state && p11g_op_state_active(c->state));
	return walked(c,
	              a->desc
	                  ? p11g_txn_op_foreach_desc(t, active_only, a->after, list_visit, c, err)
	                  : p11g_txn_op_foreach(t, active_only, a->after, list_visit, c, err),
	              err);
}

int p11g_ops_list(struct p11g_ops *o, const struct p11g_ident *caller,
                  const struct p11g_list_args *args, json_t **ret_result, p11g_err *err)
{
	struct read_ctx c = {.o = o,
	                     .caller = caller,
	                     .list = args,
	                     .last = args->after,
	                     .out = json_array(),
	                     .started_us = p11g_mono_us()};
	if (args->state) {
		if (p11g_op_state_parse(args->state, &c.state) < 0) {
			json_decref(c.out);
			return p11g_err_set(err, P11G_E_BAD_REQUEST, "state: unknown state %s",
			                    args->state);
		}
		c.has_state = true;
	}
	if (p11g_store_read(o->store, list_body, &c, err) != 0) {
		json_decref(c.out);
		return -1;
	}
	json_t *res = json_pack("{s:o, s:b}", "operations", c.out, "more", c.more);
	if (res && c.more &&
	    json_object_set_new(res, "next", json_integer((json_int_t)c.last)) < 0) {
		json_decref(res);
		res = NULL;
	}
	return reply(res, ret_result, err);
}

struct status_ctx {
	struct p11g_ops *o;
	const struct p11g_ident *caller;
	unsigned pending, approved, for_you;
	uint64_t total;
};

/* Pending operations are walked (for the caller's share); approved ones are counted from the
 * index: a status costs what is pending, not the thousands of operations a line keeps open.
 * An operation past its window until the next sweep (within a second) counts as before it. */
static int status_visit(const struct p11g_op *op, void *arg)
{
	struct status_ctx *c = arg;
	if (op->state != P11G_OP_PENDING)
		return 0;
	c->pending++;
	if (p11g_op_effective_state(op, p11g_now()) == P11G_OP_PENDING &&
	    p11g_authz_awaits(op, c->caller))
		c->for_you++;
	return 0;
}

static int status_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct status_ctx *c = arg;
	size_t active = 0;
	c->pending = c->for_you = 0;
	if (p11g_txn_last_id(t, &c->total, err) < 0 ||
	    p11g_txn_op_foreach_pending(t, status_visit, arg, &active, err) < 0)
		return -1;
	c->approved = active > c->pending ? (unsigned)(active - c->pending) : 0;
	return 0;
}

int p11g_ops_status(struct p11g_ops *o, const struct p11g_ident *caller, json_t **ret_result,
                    p11g_err *err)
{
	struct status_ctx c = {.o = o, .caller = caller};
	uint64_t map = 0, used = 0;
	if (p11g_store_read(o->store, status_body, &c, err) != 0)
		return -1;
	p11g_store_stat(o->store, &map, &used);
	return reply(json_pack("{s:i, s:i, s:i, s:I, s:{s:i, s:i, s:s, s:s, s:I}, s:{s:I, s:I}, "
	                       "s:o*, s:o*}",
	                       "pending", c.pending, "approved", c.approved, "pending_for_you",
	                       c.for_you, "total", (json_int_t)c.total, "policy", "rules",
	                       (int)o->policy->n_rules, "files", (int)o->policy->n_files, "digest",
	                       o->policy->digest, "default",
	                       o->policy->default_allow ? "allow" : "deny", "loaded",
	                       (json_int_t)o->policy_loaded, "store", "map_size", (json_int_t)map,
	                       "used", (json_int_t)used, "key_sets",
	                       o->jwks && o->jwks->n ? p11g_jwks_sources_status(o->jwks) : NULL,
	                       "notifications", p11g_notify_status(o)),
	             ret_result, err);
}

static int audit_visit(uint64_t seq, json_t *rec, void *arg)
{
	struct read_ctx *c = arg;
	(void)seq;
	return page_add(c, c->limit, json_incref(rec));
}

static int audit_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct read_ctx *c = arg;
	return walked(c, p11g_txn_audit_foreach(t, c->since, audit_visit, c, err), err);
}

int p11g_ops_audit(struct p11g_ops *o, const struct p11g_ident *caller, uint64_t since,
                   unsigned limit, json_t **ret_result, p11g_err *err)
{
	if (!p11g_authz_may_read_audit(o->policy, o->daemon_uid, caller))
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "the audit log is for root, approvers and admins");
	return p11g_ops_audit_page(o, since, limit, ret_result, err);
}

int p11g_ops_audit_page(struct p11g_ops *o, uint64_t since, unsigned limit, json_t **ret_result,
                        p11g_err *err)
{
	struct read_ctx c = {.o = o, .since = since, .limit = limit, .out = json_array()};
	if (p11g_store_read(o->store, audit_body, &c, err) != 0) {
		json_decref(c.out);
		return -1;
	}
	return reply(json_pack("{s:o, s:b}", "records", c.out, "more", c.more), ret_result, err);
}
