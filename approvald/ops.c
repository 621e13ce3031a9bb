/* The operation model's shared core: rule snapshots and quorum, the public form, audit records,
 * transaction plumbing and housekeeping (expiry, refusal aggregates, policy loads).  The verbs
 * live in ops_request.c, ops_decide.c, ops_use.c and ops_view.c; who may do what in authz.c. */
#include "approvald/jbuild.h"
#include "approvald/op.h"
#include "approvald/names.h"
#include "approvald/notify.h"
#include "approvald/idtoken.h"
#include "approvald/ops_internal.h"
#include "approvald/read_worker.h"
#include "approvald/verify_job.h"
#include "approvald/refusals.h"

#include <inttypes.h>

#include "p11gate/log.h"
#include "p11gate/wire.h"

#define RULE_CACHE 16 /* parsed rule snapshots kept for uses */

void ops_rule_freep(struct p11g_rule **r)
{
	p11g_rule_free(*r);
}

json_t *ops_actor_json(const struct p11g_ident *id)
{
	return json_pack("{s:I, s:s, s:I, s:s*}", "uid", (json_int_t)id->uid, "user", id->user,
	                 "pid", (json_int_t)id->pid, "via", id->via[0] ? id->via : NULL);
}

void ops_notify(struct p11g_ops *o, uint64_t id)
{
	if (o->changed)
		o->changed(o->changed_arg, id);
}

/* ---- rules and quorum ---------------------------------------------------- */

/* Snapshots parsed before, by their canonical text: every use looks at the
 * rule of each operation for its key, and parsing one costs more than
 * printing it. */
struct p11g_rule_cache {
	struct {
		char *text;
		struct p11g_rule *rule;
		json_t *snap; /* the snapshot object last found to hold text, kept */
	} e[RULE_CACHE];
	size_t next; /* the slot the next miss takes */
};

void p11g_ops_clear(struct p11g_ops *o)
{
	struct p11g_rule_cache *rc = o->rule_cache;
	p11g_verify_job_free(o);
	p11g_read_worker_free(o);
	if (o->audit_key)
		p11_kit_uri_free(o->audit_key);
	o->audit_key = NULL;
	p11g_ops_notify_disable(o);
	if (o->notify)
		p11g_notify_config_clear(&o->notify->cfg);
	free(o->notify);
	o->notify = NULL;
	p11g_refusals_free(o->refusals);
	o->refusals = NULL;
	free(o->budget);
	o->budget = NULL;
	if (!rc)
		return;
	for (size_t i = 0; i < RULE_CACHE; i++) {
		free(rc->e[i].text);
		p11g_rule_free(rc->e[i].rule);
		json_decref(rc->e[i].snap);
	}
	free(rc);
	o->rule_cache = NULL;
}

/* The rule snapshot an operation keeps for one of its keys, parsed as
 * p11g_rule_from_json does.  Borrowed from o's cache: valid until the next
 * call, which may evict it.  Snapshots are never changed once written (op.h):
 * the object a snapshot was last seen as answers without printing it again. */
const struct p11g_rule *ops_rule(struct p11g_ops *o, const struct p11g_op *op, const char *name,
                                 p11g_err *err)
{
	struct p11g_rule *r = NULL;
	json_t *snap = json_object_get(op->rules, name);
	if (!json_is_object(snap)) {
		p11g_err_set(err, P11G_E_INTERNAL,
		             "operation %" PRIu64 " has no snapshot of rule %s", op->id, name);
		return NULL;
	}
	if (!o->rule_cache && !(o->rule_cache = calloc(1, sizeof(*o->rule_cache)))) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		return NULL;
	}
	struct p11g_rule_cache *rc = o->rule_cache;
	for (size_t i = 0; i < RULE_CACHE; i++)
		if (rc->e[i].snap == snap)
			return rc->e[i].rule;
	char *text = json_dumps(snap, JSON_COMPACT | JSON_SORT_KEYS);
	if (!text) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < RULE_CACHE; i++) {
		if (rc->e[i].text && !strcmp(rc->e[i].text, text)) {
			free(text);
			json_decref(rc->e[i].snap);
			rc->e[i].snap = json_incref(snap);
			return rc->e[i].rule;
		}
	}
	if (p11g_rule_from_json(snap, &r, err) < 0) {
		free(text);
		return NULL;
	}
	size_t i = rc->next;
	rc->next = (i + 1) % RULE_CACHE;
	free(rc->e[i].text);
	p11g_rule_free(rc->e[i].rule);
	json_decref(rc->e[i].snap);
	rc->e[i].text = text;
	rc->e[i].rule = r;
	rc->e[i].snap = json_incref(snap);
	return r;
}

int ops_quorum(const struct p11g_op *op, bool *ret_met, char *missing, size_t missing_size,
               p11g_err *err)
{
	/* p11g_rule_quorum_met takes the approvers side by side: shallow copies */
	struct p11g_ident *apv = calloc(op->n_approvals + 1, sizeof(*apv));
	const char *name;
	json_t *snap;
	bool met = true;
	int r = 0;

	if (!apv)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	for (size_t i = 0; i < op->n_approvals; i++)
		apv[i] = op->approvals[i].who;
	if (missing_size)
		missing[0] = '\0';
	json_object_foreach(op->rules, name, snap)
	{
		_cleanup_rule_ struct p11g_rule *rule = NULL;
		char why[256] = "";
		if (p11g_rule_from_json(snap, &rule, err) < 0) {
			r = -1;
			break;
		}
		if (p11g_rule_auto_approves(rule, &op->orderer))
			continue;
		if (!p11g_rule_quorum_met(rule, apv, op->n_approvals, op->orderer.uid, why,
		                          sizeof(why))) {
			if (met && missing_size)
				snprintf(missing, missing_size, "rule %s %s", name, why);
			met = false;
		}
	}
	free(apv);
	if (r == 0)
		*ret_met = met;
	return r;
}

/* The public form: no rule snapshots, no group lists; state as seen now,
 * and for pending operations what they still need. */
json_t *ops_public(const struct p11g_op *op)
{
	struct p11g_jb b = {0};
	_cleanup_json_ json_t *pub = p11g_jb_new(&b, p11g_op_encode(op));
	json_t *a, *rules = p11g_jb_new(&b, json_object());
	size_t i;
	int64_t now = p11g_now();
	const char *name;
	json_t *snap;

	json_object_foreach(op->rules, name, snap)
	{
		p11g_jb_set(&b, rules, name,
		            json_pack("{s:O?, s:O?, s:O?}", "quorum",
		                      json_object_get(snap, "quorum"), "max_uses",
		                      json_object_get(snap, "max_uses"), "bind_digest",
		                      json_object_get(snap, "bind_digest")));
	}
	p11g_jb_set(&b, pub, "rules", rules);
	json_object_del(json_object_get(pub, "orderer"), "groups");
	json_array_foreach(json_object_get(pub, "approvals"), i, a) json_object_del(a, "groups");
	enum p11g_op_state seen = p11g_op_effective_state(op, now);
	p11g_jb_set_str(&b, pub, "state", p11g_op_state_name(seen));
	if (seen == P11G_OP_PENDING) {
		char missing[300];
		bool met = false;
		if (ops_quorum(op, &met, missing, sizeof(missing), NULL) == 0 && !met)
			p11g_jb_set_str(&b, pub, "needs", missing);
	}
	return b.failed ? NULL : json_incref(pub);
}

/* ---- audit ------------------------------------------------------------- */

/* Appends one audit record: event, actor, operation id and extra members
 * (stolen).  extra is what the caller's json_pack made: NULL is its failure,
 * and a record without its members is never written. */
int ops_audit(p11g_txn *t, const char *event, const struct p11g_ident *actor, uint64_t id,
              json_t *extra, p11g_err *err)
{
	struct p11g_jb b = {0};
	_cleanup_json_ json_t *rec = p11g_jb_new(&b, extra);
	p11g_jb_set_str(&b, rec, "event", event);
	if (actor)
		p11g_jb_set(&b, rec, "actor", ops_actor_json(actor));
	if (id)
		p11g_jb_set_int(&b, rec, "op", (int64_t)id);
	if (p11g_jb_check(&b, err) < 0)
		return -1;
	return p11g_txn_audit_append(t, rec, NULL, err);
}

/* The ops whose events become notifications: approvald's own (p11g_ops_notify_enable); one
 * per process, and never a reader's. */
static struct p11g_ops *notifying_ops;

void p11g_ops_notify_enable(struct p11g_ops *o)
{
	notifying_ops = o;
}

void p11g_ops_notify_disable(struct p11g_ops *o)
{
	if (notifying_ops == o)
		notifying_ops = NULL;
}

int ops_audit_op(p11g_txn *t, const char *event, const struct p11g_ident *actor, struct p11g_op *op,
                 json_t *extra, p11g_err *err)
{
	struct p11g_jb b = {0};
	_cleanup_json_ json_t *rec = p11g_jb_new(&b, extra);
	uint64_t seq = 0;
	p11g_jb_set_str(&b, rec, "event", event);
	if (actor)
		p11g_jb_set(&b, rec, "actor", ops_actor_json(actor));
	p11g_jb_set_int(&b, rec, "op", (int64_t)op->id);
	/* the terms whole where they begin, by hash after */
	bool whole = !op->terms_seq || !strcmp(event, "created") || !strcmp(event, "recorded");
	p11g_jb_set(&b, rec, "after", p11g_op_audited(op, whole ? 0 : op->terms_seq));
	if (p11g_jb_check(&b, err) < 0 || p11g_txn_audit_append(t, rec, &seq, err) < 0)
		return -1;
	op->audit_seq = seq;
	if (whole)
		op->terms_seq = seq;
	if (p11g_txn_op_put(t, op, err) < 0)
		return -1;
	/* who is told, in the same transaction */
	if (notifying_ops && p11g_notify_op_event(t, notifying_ops, event, actor, op, rec, err) < 0)
		return -1;
	return 0;
}

const struct p11g_ident *ops_daemon_actor(const struct p11g_ops *o, struct p11g_ident *buf)
{
	memset(buf, 0, sizeof(*buf));
	buf->uid = o->daemon_uid;
	buf->gid = getgid();
	buf->pid = getpid();
	snprintf(buf->user, sizeof(buf->user), "approvald");
	return buf;
}

/* ---- transaction plumbing ----------------------------------------------- */

void ops_ctx_result(struct txn_ctx *c, json_t *result)
{
	json_decref(c->result);
	c->result = result;
}

int ops_load_op(p11g_txn *t, uint64_t id, struct p11g_op *ret, p11g_err *err)
{
	int r = p11g_txn_op_get(t, id, ret, err);
	if (r == -ENOENT)
		return p11g_err_set(err, P11G_E_NOT_FOUND, "no operation %" PRIu64, id);
	return r < 0 ? -1 : 0;
}

int ops_finish(struct txn_ctx *c, int r, json_t **ret, p11g_err *err)
{
	if (r != 0) {
		ops_ctx_result(c, NULL);
		return -1;
	}
	if (c->changed)
		ops_notify(c->o, c->changed);
	/* Committed, but the reply could not be built: the client hears a failure (a use spent
	 * and refused, never a use granted without its record). */
	if (!c->result)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	*ret = c->result;
	return 0;
}

/* ---- housekeeping --------------------------------------------------------- */

struct expire_ctx {
	struct p11g_ops *o;
	uint64_t ids[256];
	size_t n;
};

static int expire_visit(const struct p11g_op *op, void *arg)
{
	struct expire_ctx *c = arg;
	if (c->n < P11G_ARRAY_SIZE(c->ids))
		c->ids[c->n++] = op->id;
	return c->n == P11G_ARRAY_SIZE(c->ids) ? 1 : 0;
}

static int expire_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct expire_ctx *c = arg;
	struct p11g_ident me;
	int64_t now = p11g_now();
	size_t pruned = 0;
	c->n = 0;
	/* the used tokens' jti, once they can no longer be presented: a minute's worth at most,
	 * once a minute */
	if (now - c->o->jti_pruned >= 60) {
		if (p11g_txn_meta_prune_int(t, P11G_JTI_PREFIX, now - P11G_IDTOKEN_SKEW, 4096,
		                            &pruned, err) < 0)
			return -1;
		c->o->jti_pruned = now;
	}
	if (p11g_txn_op_foreach_due(t, p11g_now(), expire_visit, c, err) < 0)
		return -1;
	for (size_t i = 0; i < c->n; i++) {
		_cleanup_op_ struct p11g_op op = {0};
		if (ops_load_op(t, c->ids[i], &op, err) < 0)
			return -1;
		json_t *extra = json_pack("{s:s}", "was", p11g_op_state_name(op.state));
		op.state = P11G_OP_EXPIRED;
		if (!extra)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		if (ops_audit_op(t, "expired", ops_daemon_actor(c->o, &me), &op, extra, err) < 0)
			return -1;
	}
	return 0;
}

int p11g_ops_expire_due(struct p11g_ops *o, p11g_err *err)
{
	struct expire_ctx c = {.o = o};
	if (p11g_store_write(o->store, expire_body, &c, err) != 0)
		return -1;
	for (size_t i = 0; i < c.n; i++)
		ops_notify(o, c.ids[i]);
	if (p11g_ops_flush_refusals(o, false, err) < 0)
		return -1;
	return (int)c.n;
}

struct flush_ctx {
	p11g_txn *t;
	p11g_err *err;
};

/* One aggregate record: the refusals counted after the first of their kind was written. */
static int flush_one(void *arg, const struct p11g_refusal_agg *a)
{
	struct flush_ctx *c = arg;
	struct p11g_ident who = {0};
	bool overflow = a->uid == (uid_t)-1;
	int r;

	if (!overflow && p11g_ident_resolve(a->uid, a->gid, 0, &who) < 0)
		return p11g_err_set(c->err, P11G_E_INTERNAL, "out of memory");
	struct p11g_jb b = {0};
	json_t *rec = p11g_jb_new(&b, json_pack("{s:s, s:s, s:I, s:I, s:I, s:b}", "key", a->key,
	                                        "reason", a->reason, "count", (json_int_t)a->count,
	                                        "first", (json_int_t)a->first, "last",
	                                        (json_int_t)a->last, "aggregated", 1));
	if (overflow)
		p11g_jb_set_str(&b, rec, "uids", "many (the table of refusals was full)");
	if (b.failed) {
		json_decref(rec);
		rec = NULL; /* ops_audit refuses it */
	}
	r = ops_audit(c->t, "use_refused", overflow ? NULL : &who, 0, rec, c->err);
	p11g_ident_clear(&who);
	return r;
}

struct flush_all_ctx {
	struct p11g_ops *o;
	bool all;
	int64_t now;
};

/* Writes what is due without changing the table: the store may run a body twice. */
static int flush_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct flush_all_ctx *c = arg;
	struct flush_ctx f = {t, err};
	return p11g_refusals_each_due(c->o->refusals, c->now, c->all, flush_one, &f);
}

int p11g_ops_flush_refusals(struct p11g_ops *o, bool all, p11g_err *err)
{
	struct flush_all_ctx c = {o, all, p11g_now()};
	if (!o->refusals || !p11g_refusals_due(o->refusals, c.now, all))
		return 0;
	if (p11g_store_write(o->store, flush_body, &c, err) != 0)
		return -1; /* kept for the next sweep */
	p11g_refusals_forget_due(o->refusals, c.now, all);
	return 0;
}

struct policy_ctx {
	struct p11g_ops *o;
	const char *path;
};

static int policy_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct policy_ctx *c = arg;
	struct p11g_ident me;
	return ops_audit(t, "policy_loaded", ops_daemon_actor(c->o, &me), 0,
	                 json_pack("{s:s, s:s, s:i, s:i, s:s}", "path", c->path, "digest",
	                           c->o->policy->digest, "rules", (int)c->o->policy->n_rules,
	                           "files", (int)c->o->policy->n_files, "default",
	                           c->o->policy->default_allow ? "allow" : "deny"),
	                 err);
}

int p11g_ops_policy_loaded(struct p11g_ops *o, const char *path, p11g_err *err)
{
	struct policy_ctx c = {o, path};
	o->policy_loaded = p11g_now();
	return p11g_store_write(o->store, policy_body, &c, err) != 0 ? -1 : 0;
}
