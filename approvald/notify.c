/*
 * Notifications (issue 21).  An event of an operation (created, an approval, approved,
 * rejected, ...) is put in the store's outbox in the transaction that makes it: committed
 * together or not at all, so a crash between the event and its delivery loses nothing.  Each
 * entry names its notifier and holds the event's JSON as of the event.  approvald-notify (a
 * child process: libcurl and commands never run in approvald) asks for the deliveries due
 * (notify_take, which waits while none is) and answers with their results (notify_done): a
 * delivery done leaves the outbox; one that failed is tried again after an exponential backoff
 * with jitter (or the receiver's Retry-After), for retry_for (24 h); then it is dead, counted
 * and audited.  The HMAC key of a notifier (secret_file) is read here, at each delivery, and
 * never leaves approvald: approvald-notify gets the signature header.  Nothing of this runs in
 * a signer's path but the outbox write of the event that a decision or a use makes anyway.
 */
#include "approvald/notify.h"

#include <fcntl.h>
#include <stdarg.h>
#include <inttypes.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include "approvald/authz.h"
#include "approvald/jbuild.h"
#include "approvald/ops_internal.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define TEXT_MAX          4096  /* bytes of a description (or any text) in a notification */
#define DELIVERY_BODY_MAX 28000 /* a delivery's body, at most (escaped in a 64 KiB frame) */
#define TAKE_BYTES_MAX    60000 /* the deliveries of one notify_take reply, encoded */
#define SECRET_MAX        4096
#define BACKOFF_MIN       5         /* seconds: the first retry */
#define BACKOFF_MAX       3600      /* and the longest wait between two */
#define EXPIRING_WITHIN   900       /* "expires in 15 minutes" */
#define INFLIGHT_MAX_US   180000000 /* a delivery handed out and not reported on */
#define LOG_INTERVAL_US   60000000

#ifndef _cleanup_json_
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))
#endif

void p11g_notify_config_clear(struct p11g_notify_config *cfg)
{
	free(cfg->web_url);
	memset(cfg, 0, sizeof(*cfg));
}

/* Failures are logged at most once a minute, with a count of those left out. */
static void log_limited(struct p11g_notify *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void log_limited(struct p11g_notify *n, const char *fmt, ...)
{
	int64_t now = p11g_mono_us();
	char buf[512];
	va_list ap;
	if (n->logged_us && now - n->logged_us < LOG_INTERVAL_US) {
		n->log_suppressed++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n->log_suppressed)
		p11g_warn("notifications: %s (and %u more failures in the last minute)", buf,
		          n->log_suppressed);
	else
		p11g_warn("notifications: %s", buf);
	n->log_suppressed = 0;
	n->logged_us = now;
}

static struct p11g_notify *notify_of(struct p11g_ops *o)
{
	if (!o->notify && (o->notify = calloc(1, sizeof(*o->notify)))) {
		o->notify->cfg.retry_for = 86400;
		o->notify->cfg.outbox_max = 10000;
	}
	return o->notify;
}

int p11g_notify_setup(struct p11g_ops *o, const struct p11g_notify_config *cfg)
{
	struct p11g_notify *n = notify_of(o);
	if (!n)
		return -ENOMEM;
	if (cfg->web_url && !(n->cfg.web_url = strdup(cfg->web_url)))
		return -ENOMEM;
	if (cfg->retry_for > 0)
		n->cfg.retry_for = cfg->retry_for;
	if (cfg->outbox_max > 0)
		n->cfg.outbox_max = cfg->outbox_max;
	return 0;
}

bool p11g_notify_added(struct p11g_ops *o)
{
	if (!o->notify || !o->notify->added)
		return false;
	o->notify->added = false;
	return true;
}

/* ---- events ---------------------------------------------------------------------------- */

/* The notify event an audited event of op is, or 0. */
static unsigned event_of(const char *audit_event, const struct p11g_op *op)
{
	/* an operation approved as it was made is told once, by its "approved" */
	if (!strcmp(audit_event, "created"))
		return op->state == P11G_OP_PENDING ? P11G_NOTIFY_CREATED : 0;
	if (!strcmp(audit_event, "approved"))
		return op->state == P11G_OP_APPROVED ? P11G_NOTIFY_APPROVED : P11G_NOTIFY_APPROVAL;
	if (!strcmp(audit_event, "rejected"))
		return P11G_NOTIFY_REJECTED;
	if (!strcmp(audit_event, "withdrawn"))
		return P11G_NOTIFY_WITHDRAWN;
	if (!strcmp(audit_event, "revoked"))
		return P11G_NOTIFY_REVOKED;
	if (!strcmp(audit_event, "expired"))
		return P11G_NOTIFY_EXPIRED;
	if (!strcmp(audit_event, "use_granted") && op->state == P11G_OP_EXHAUSTED)
		return P11G_NOTIFY_EXHAUSTED;
	return 0;
}

static json_t *cut_text(const json_t *s)
{
	size_t len = json_string_length(s);
	if (len <= TEXT_MAX)
		return json_incref((json_t *)s);
	const char *v = json_string_value(s);
	size_t n = TEXT_MAX;
	while (n && ((unsigned char)v[n] & 0xc0) == 0x80)
		n--;
	char *buf = malloc(n + 4);
	if (!buf)
		return NULL;
	memcpy(buf, v, n);
	memcpy(buf + n, "\xe2\x80\xa6", 4);
	json_t *j = json_string(buf);
	free(buf);
	return j;
}

/* What a notification tells of op: what approvers and requesters read (as approvald show
 * shows it), never a token, a PIN or a secret. */
static json_t *op_summary(const struct p11g_op *op)
{
	_cleanup_json_ json_t *pub = ops_public(op);
	json_t *out = json_object();
	static const char *const copied[] = {
	    "id",      "state",   "needs",     "name",          "signer",
	    "created", "expires", "digests",   "payload_names", "images",
	    "oci",     "meta",    "approvals", "rejection",     "revocation"};
	if (!pub || !out) {
		json_decref(out);
		return NULL;
	}
	for (size_t i = 0; i < P11G_ARRAY_SIZE(copied); i++) {
		json_t *v = json_object_get(pub, copied[i]);
		if (v && json_object_set(out, copied[i], v) < 0)
			goto oom;
	}
	static const char *const texts[] = {"description", "context"};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(texts); i++) {
		json_t *v = json_object_get(pub, texts[i]);
		if (json_is_string(v) && json_string_length(v) &&
		    json_object_set_new(out, texts[i], cut_text(v)) < 0)
			goto oom;
	}
	const json_t *o = json_object_get(pub, "orderer");
	if (json_object_set_new(out, "requester",
	                        json_pack("{s:O?, s:O?}", "uid", json_object_get(o, "uid"), "user",
	                                  json_object_get(o, "user"))) < 0)
		goto oom;
	json_t *keys = json_array(), *k;
	size_t i;
	json_array_foreach(json_object_get(pub, "keys"), i, k) json_array_append_new(
	    keys, json_pack("{s:O?, s:O?, s:O?, s:O?}", "uri", json_object_get(k, "uri"), "rule",
	                    json_object_get(k, "rule"), "uses", json_object_get(k, "uses"), "used",
	                    json_object_get(k, "used")));
	if (json_object_set_new(out, "keys", keys) < 0)
		goto oom;
	const json_t *id = json_object_get(pub, "identity");
	if (id && json_object_set_new(out, "pipeline",
	                              json_pack("{s:O?, s:O?, s:O?}", "issuer",
	                                        json_object_get(id, "issuer"), "subject",
	                                        json_object_get(id, "subject"), "claims",
	                                        json_object_get(id, "claims"))) < 0)
		goto oom;
	return out;
oom:
	json_decref(out);
	return NULL;
}

static json_t *event_body(struct p11g_notify *n, unsigned ev, const struct p11g_ident *actor,
                          const struct p11g_op *op, const json_t *extra)
{
	struct p11g_jb b = {0};
	json_t *body = p11g_jb_new(&b, json_object());
	p11g_jb_set_str(&b, body, "event", p11g_notify_event_name(ev));
	p11g_jb_set_int(&b, body, "time", p11g_now());
	if (op) {
		p11g_jb_set(&b, body, "operation", op_summary(op));
		if (n->cfg.web_url) {
			char link[2200];
			snprintf(link, sizeof(link), "%s/op/%" PRIu64, n->cfg.web_url, op->id);
			p11g_jb_set_str(&b, body, "link", link);
		}
	}
	if (actor)
		p11g_jb_set(&b, body, "actor",
		            json_pack("{s:I, s:s, s:s*}", "uid", (json_int_t)actor->uid, "user",
		                      actor->user, "via", actor->via[0] ? actor->via : NULL));
	const json_t *reason = json_object_get(extra, "reason");
	if (json_is_string(reason) && json_string_length(reason))
		p11g_jb_set(&b, body, "reason", cut_text(reason));
	if (b.failed) {
		json_decref(body);
		return NULL;
	}
	return body;
}

/* Puts body for notifier name in the outbox (never failing the event's transaction for a full
 * outbox: that event is counted as dropped and logged instead). */
static int enqueue(p11g_txn *t, struct p11g_notify *n, const char *name, unsigned ev,
                   uint64_t op_id, const json_t *body, p11g_err *err)
{
	if (n->depth >= n->cfg.outbox_max) {
		n->dropped++;
		log_limited(n,
		            "the outbox holds %" PRIu64 " deliveries, its most: a \"%s\" event "
		            "for %s was not kept",
		            n->depth, p11g_notify_event_name(ev), name);
		return 0;
	}
	int64_t now = p11g_now();
	_cleanup_json_ json_t *e =
	    json_pack("{s:s, s:s, s:I, s:I, s:i, s:I, s:O}", "notifier", name, "event",
	              p11g_notify_event_name(ev), "op", (json_int_t)op_id, "created",
	              (json_int_t)now, "attempts", 0, "next", (json_int_t)now, "body", body);
	if (!e)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (p11g_txn_outbox_add(t, e, NULL, err) < 0)
		return -1;
	n->depth++;
	if (!n->oldest)
		n->oldest = now;
	n->added = true;
	return 0;
}

int p11g_notify_op_event(p11g_txn *t, struct p11g_ops *o, const char *audit_event,
                         const struct p11g_ident *actor, const struct p11g_op *op,
                         const json_t *extra, p11g_err *err)
{
	const struct p11g_policy *p = o->policy;
	/* the one-use operations of rules without approvals are uses, not decisions */
	if (!p || !p->n_notifiers || op->implicit)
		return 0;
	unsigned ev = event_of(audit_event, op);
	if (!ev)
		return 0;
	struct p11g_notify *n = notify_of(o);
	if (!n)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	/* each notifier once, whichever of op's rules names it */
	const char *told[64];
	size_t n_told = 0;
	_cleanup_json_ json_t *body = NULL;
	for (size_t k = 0; k < op->n_keys; k++) {
		const struct p11g_rule *r = p11g_policy_rule(p, op->keys[k].rule);
		for (size_t i = 0; r && i < r->n_notify; i++) {
			const struct p11g_notifier *nf = p11g_policy_notifier(p, r->notify[i]);
			bool seen = false;
			for (size_t j = 0; j < n_told; j++)
				seen |= !strcmp(told[j], r->notify[i]);
			if (!nf || seen || !(nf->events & ev) || n_told == P11G_ARRAY_SIZE(told))
				continue;
			told[n_told++] = nf->name;
			if (!body && !(body = event_body(n, ev, actor, op, extra)))
				return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
			if (enqueue(t, n, nf->name, ev, op->id, body, err) < 0)
				return -1;
		}
	}
	return 0;
}

int p11g_notify_use_refused(p11g_txn *t, struct p11g_ops *o, const struct p11g_ident *caller,
                            const struct p11g_keyid *key, const char *reason, const char *message,
                            int *decided, p11g_err *err)
{
	const struct p11g_policy *p = o->policy;
	if (!p || !p->n_notifiers)
		return 0;
	const struct p11g_rule *r = p11g_policy_match(p, key);
	bool wanted = false;
	for (size_t i = 0; r && i < r->n_notify; i++) {
		const struct p11g_notifier *nf = p11g_policy_notifier(p, r->notify[i]);
		wanted |= nf && (nf->events & P11G_NOTIFY_USE_REFUSED);
	}
	struct p11g_notify *n = notify_of(o);
	if (!wanted || !n)
		return 0;
	_cleanup_free_ char *uri = p11g_keyid_to_uri(key);
	if (!uri)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	/* the key's slot (or the oldest one): once a minute per key */
	int64_t now = p11g_now();
	unsigned char h[32];
	size_t slot = 0;
	SHA256((const unsigned char *)uri, strlen(uri), h);
	for (size_t i = 0; i < P11G_ARRAY_SIZE(n->refused); i++) {
		if (!memcmp(n->refused[i].uri_hash, h, sizeof(h))) {
			slot = i;
			break;
		}
		if (n->refused[i].told < n->refused[slot].told)
			slot = i;
	}
	if (memcmp(n->refused[slot].uri_hash, h, sizeof(h))) {
		memcpy(n->refused[slot].uri_hash, h, sizeof(h));
		n->refused[slot].told = 0;
		n->refused[slot].left_out = 0;
	}
	/* decided once per request (a body run again after the map grew tells it again) */
	if (!*decided) {
		if (now - n->refused_minute >= 60) {
			n->refused_minute = now;
			n->refused_in_minute = 0;
			memset(n->refused_by, 0, sizeof(n->refused_by));
		}
		size_t u = SIZE_MAX, free_slot = SIZE_MAX;
		for (size_t i = 0; i < P11G_ARRAY_SIZE(n->refused_by); i++) {
			if (n->refused_by[i].n && n->refused_by[i].uid == caller->uid) {
				u = i;
				break;
			}
			if (!n->refused_by[i].n && free_slot == SIZE_MAX)
				free_slot = i;
		}
		if (u == SIZE_MAX && free_slot != SIZE_MAX) {
			u = free_slot;
			n->refused_by[u].uid = caller->uid;
		}
		/* no slot: 32 uids were told of this minute already */
		bool uid_full = u == SIZE_MAX || n->refused_by[u].n >= 5;
		/* and 20 a minute in all: made-up keys cannot fill the outbox */
		*decided =
		    now - n->refused[slot].told < 60 || n->refused_in_minute >= 20 || uid_full ? -1
		                                                                               : 1;
		if (*decided > 0) {
			n->refused_by[u].n++;
			n->refused_in_minute++;
		}
		if (*decided < 0)
			n->refused[slot].left_out++;
		else
			n->refused[slot].told = now;
	}
	if (*decided < 0)
		return 0;
	struct p11g_jb b = {0};
	_cleanup_json_ json_t *body =
	    p11g_jb_new(&b, event_body(n, P11G_NOTIFY_USE_REFUSED, caller, NULL, NULL));
	p11g_jb_set_str(&b, body, "key", uri);
	p11g_jb_set_str(&b, body, "rule", r->name);
	p11g_jb_set_str(&b, body, "refusal", reason ? reason : "");
	p11g_jb_set(&b, body, "message", json_string(message ? message : ""));
	p11g_jb_set_int(&b, body, "left_out", (int64_t)n->refused[slot].left_out);
	if (b.failed)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	for (size_t i = 0; i < r->n_notify; i++) {
		const struct p11g_notifier *nf = p11g_policy_notifier(p, r->notify[i]);
		if (nf && (nf->events & P11G_NOTIFY_USE_REFUSED) &&
		    enqueue(t, n, nf->name, P11G_NOTIFY_USE_REFUSED, 0, body, err) < 0)
			return -1;
	}
	n->refused[slot].left_out = 0;
	return 0;
}

static int test_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	struct p11g_notify *n = notify_of(c->o);
	_cleanup_json_ json_t *body =
	    n ? event_body(n, P11G_NOTIFY_TEST, c->caller, NULL, NULL) : NULL;
	if (!body || json_object_set_new(body, "message",
	                                 json_string("A test of this notifier, sent by approvald "
	                                             "notify test.")) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	uint64_t before = n->depth;
	if (enqueue(t, n, c->reason, P11G_NOTIFY_TEST, 0, body, err) < 0)
		return -1;
	if (n->depth == before)
		return p11g_err_set(err, P11G_E_LIMIT, "the outbox is full");
	ops_ctx_result(c, json_pack("{s:s}", "notifier", c->reason));
	return 0;
}

int p11g_notify_test(struct p11g_ops *o, const struct p11g_ident *caller, const char *name,
                     json_t **ret, p11g_err *err)
{
	if (caller->uid != 0 && caller->uid != o->daemon_uid)
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "a test notification is for root and approvald's user");
	if (!p11g_policy_notifier(o->policy, name))
		return p11g_err_set(err, P11G_E_NOT_FOUND, "the policy has no notifier \"%s\"",
		                    name);
	struct txn_ctx c = {.o = o, .caller = caller, .reason = name};
	return ops_finish(&c, p11g_store_write(o->store, test_body, &c, err), ret, err);
}

/* ---- expiring ---------------------------------------------------------------------------- */

struct expiring_ctx {
	struct p11g_ops *o;
	p11g_txn *t;
	p11g_err *err;
	int64_t now;
};

static int expiring_visit(const struct p11g_op *op, void *arg)
{
	struct expiring_ctx *c = arg;
	char name[40];
	int64_t told;
	if (op->state != P11G_OP_PENDING || op->expires - c->now > EXPIRING_WITHIN ||
	    op->expires <= c->now)
		return 0;
	snprintf(name, sizeof(name), "expiring:%" PRIu64, op->id);
	int r = p11g_txn_meta_get_int(c->t, name, &told, c->err);
	if (r == 0)
		return 0;
	if (r != -ENOENT)
		return -1;
	/* told once: the mark goes with the sweep that prunes old marks */
	if (p11g_txn_meta_put_int(c->t, name, op->expires, c->err) < 0)
		return -1;
	unsigned ev = P11G_NOTIFY_EXPIRING;
	const struct p11g_policy *p = c->o->policy;
	struct p11g_notify *n = notify_of(c->o);
	_cleanup_json_ json_t *body = NULL;
	for (size_t k = 0; n && k < op->n_keys; k++) {
		const struct p11g_rule *rl = p11g_policy_rule(p, op->keys[k].rule);
		for (size_t i = 0; rl && i < rl->n_notify; i++) {
			const struct p11g_notifier *nf = p11g_policy_notifier(p, rl->notify[i]);
			if (!nf || !(nf->events & ev))
				continue;
			if (!body && !(body = event_body(n, ev, NULL, op, NULL)))
				return p11g_err_set(c->err, P11G_E_INTERNAL, "out of memory");
			if (enqueue(c->t, n, nf->name, ev, op->id, body, c->err) < 0)
				return -1;
		}
	}
	return 0;
}

static int expiring_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct expiring_ctx *c = arg;
	size_t active = 0, pruned = 0;
	c->t = t;
	c->err = err;
	if (p11g_txn_op_foreach_pending(t, expiring_visit, c, &active, err) < 0)
		return -1;
	return p11g_txn_meta_prune_int(t, "expiring:", c->now, 256, &pruned, err);
}

int p11g_notify_expiring(struct p11g_ops *o, p11g_err *err)
{
	bool any = false;
	for (size_t i = 0; o->policy && i < o->policy->n_notifiers; i++)
		any |= (o->policy->notifiers[i].events & P11G_NOTIFY_EXPIRING) != 0;
	if (!any)
		return 0;
	struct expiring_ctx c = {.o = o, .now = p11g_now()};
	return p11g_store_write(o->store, expiring_body, &c, err);
}

/* ---- deliveries --------------------------------------------------------------------------- */

static bool inflight(const struct p11g_notify *n, uint64_t id)
{
	for (size_t i = 0; i < n->n_inflight; i++)
		if (n->inflight[i] == id)
			return true;
	return false;
}

static void inflight_drop(struct p11g_notify *n, uint64_t id)
{
	for (size_t i = 0; i < n->n_inflight; i++)
		if (n->inflight[i] == id) {
			n->n_inflight--;
			n->inflight[i] = n->inflight[n->n_inflight];
			n->inflight_since[i] = n->inflight_since[n->n_inflight];
			return;
		}
}

/* The HMAC key of a notifier: its file, approvald's and 0600 (or 0400).  NULL with why. */
static unsigned char *read_secret(const char *path, size_t *ret_len, char *why, size_t why_size)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	unsigned char *buf = NULL;
	if (fd < 0) {
		snprintf(why, why_size, "secret_file %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 0077) || st.st_size <= 0 || st.st_size > SECRET_MAX) {
		snprintf(why, why_size,
		         "secret_file %s must be a file of approvald's user, mode 0600 or 0400, "
		         "of 1 to %d bytes",
		         path, SECRET_MAX);
		close(fd);
		return NULL;
	}
	if (!(buf = malloc((size_t)st.st_size)) ||
	    read(fd, buf, (size_t)st.st_size) != (ssize_t)st.st_size) {
		snprintf(why, why_size, "secret_file %s: cannot read it", path);
		free(buf);
		close(fd);
		return NULL;
	}
	close(fd);
	/* a trailing newline (echo > file) is not part of the key */
	size_t len = (size_t)st.st_size;
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (!len) {
		snprintf(why, why_size, "secret_file %s holds no key", path);
		free(buf);
		return NULL;
	}
	*ret_len = len;
	return buf;
}

struct take_ctx {
	struct p11g_ops *o;
	struct p11g_notify *n;
	unsigned max;
	int64_t now;
	json_t *out;
	size_t bytes; /* of out, encoded */
	/* entries that can never be delivered (their notifier left the policy, too large, no
	 * longer readable): dead at once, after the walk */
	struct {
		uint64_t id;
		const char *why;
	} gone[16];
	size_t n_gone;
};

static void give_up(struct take_ctx *c, uint64_t id, const char *why)
{
	if (c->n_gone < P11G_ARRAY_SIZE(c->gone)) {
		c->gone[c->n_gone].id = id;
		c->gone[c->n_gone++].why = why;
	}
}

/* One delivery as approvald-notify makes it. */
static json_t *delivery(struct take_ctx *c, uint64_t id, const json_t *e,
                        const struct p11g_notifier *nf)
{
	char did[24], why[300] = "";
	snprintf(did, sizeof(did), "%" PRIu64, id);
	_cleanup_json_ json_t *body = json_deep_copy(json_object_get(e, "body"));
	if (!body || json_object_set_new(body, "delivery", json_string(did)) < 0 ||
	    json_object_set_new(body, "notifier", json_string(nf->name)) < 0)
		return NULL;
	char *text = NULL;
	/* a body fits approvald-notify's frame with room for escaping (at most twice its bytes):
	 * else the request's metadata and images are left out, said so */
	for (int pass = 0; pass < 2; pass++) {
		free(text);
		text = nf->command || nf->format == P11G_NOTIFY_JSON
		           ? json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS)
		           : p11g_notify_render(nf->format, body);
		if (!text || strlen(text) <= DELIVERY_BODY_MAX)
			break;
		json_t *op = json_object_get(body, "operation");
		json_object_del(op, "meta");
		json_object_del(op, "images");
		json_object_del(op, "pipeline");
		json_object_set_new(op, "left_out",
		                    json_string("metadata, images and pipeline "
		                                "claims: too large for a "
		                                "notification (approvald show)"));
	}
	if (!text)
		return NULL;
	if (strlen(text) > DELIVERY_BODY_MAX) {
		free(text);
		return json_pack("{s:I, s:b}", "id", (json_int_t)id, "too_large", 1);
	}
	json_t *d = json_pack("{s:I, s:s, s:s, s:s, s:i}", "id", (json_int_t)id, "delivery", did,
	                      "event", json_string_value(json_object_get(e, "event")), "notifier",
	                      nf->name, "timeout", (int)nf->timeout);
	if (!d || json_object_set_new(d, "body", json_string(text)) < 0) {
		free(text);
		json_decref(d);
		return NULL;
	}
	if (nf->url) {
		json_object_set_new(d, "url", json_string(nf->url));
		if (nf->ca_file)
			json_object_set_new(d, "ca_file", json_string(nf->ca_file));
	} else {
		json_t *argv = json_array();
		for (size_t i = 0; argv && i < nf->n_command; i++)
			json_array_append_new(argv, json_string(nf->command[i]));
		json_object_set_new(d, "command", argv);
	}
	if (nf->secret_file) {
		size_t klen = 0;
		unsigned char *key = read_secret(nf->secret_file, &klen, why, sizeof(why)), mac[32];
		unsigned int mlen = 0;
		if (!key) {
			json_object_set_new(d, "error", json_string(why));
		} else if (HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)text,
		                strlen(text), mac, &mlen) &&
		           mlen == 32) {
			char hex[7 + 65] = "sha256=";
			for (unsigned i = 0; i < 32; i++)
				snprintf(hex + 7 + 2 * i, 3, "%02x", mac[i]);
			json_object_set_new(d, "signature", json_string(hex));
		} else {
			/* never sent unsigned */
			json_object_set_new(d, "error",
			                    json_string("the body could not be signed"));
		}
		if (key)
			OPENSSL_cleanse(key, klen);
		free(key);
	}
	free(text);
	return d;
}

static int take_visit(uint64_t id, const json_t *e, void *arg)
{
	struct take_ctx *c = arg;
	if (json_array_size(c->out) >= c->max)
		return 1;
	if (inflight(c->n, id))
		return 0;
	const struct p11g_notifier *nf =
	    p11g_policy_notifier(c->o->policy, json_string_value(json_object_get(e, "notifier")));
	if (!nf) {
		give_up(c, id, "the notifier is no longer in the policy");
		return 0;
	}
	json_t *d = delivery(c, id, e, nf);
	if (!d) {
		give_up(c, id, "the entry in the outbox is not one approvald can send");
		return 0;
	}
	if (json_object_get(d, "too_large")) {
		json_decref(d);
		give_up(c, id, "the event is too large for a notification");
		return 0;
	}
	/* one reply frame: the rest waits for the next take */
	char *enc = json_dumps(d, JSON_COMPACT);
	size_t size = enc ? strlen(enc) : SIZE_MAX;
	free(enc);
	if (size > TAKE_BYTES_MAX) {
		json_decref(d);
		give_up(c, id, "the event is too large for a notification");
		return 0;
	}
	if (c->bytes + size > TAKE_BYTES_MAX) {
		json_decref(d);
		return 1;
	}
	c->bytes += size;
	if (json_array_append_new(c->out, d) < 0)
		return -ENOMEM;
	c->n->inflight_since[c->n->n_inflight] = p11g_mono_us();
	c->n->inflight[c->n->n_inflight++] = id;
	return 0;
}

static int take_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct take_ctx *c = arg;
	uint64_t count = 0, first = 0;
	if (p11g_txn_outbox_stat(t, &count, &first, err) < 0)
		return -1;
	c->n->depth = count;
	c->n->oldest = 0;
	if (first) {
		_cleanup_json_ json_t *e = NULL;
		int r = p11g_txn_outbox_get(t, first, &e, err);
		if (r < 0 && r != -ENOENT)
			return -1;
		c->n->oldest = json_integer_value(json_object_get(e, "created"));
	}
	int r = p11g_txn_outbox_foreach_due(t, c->now, take_visit, c, err);
	if (r == -ENOMEM)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return r < 0 ? -1 : 0;
}

static int record_results(struct p11g_ops *o, const json_t *results, bool dead, p11g_err *err);

int p11g_notify_take(struct p11g_ops *o, unsigned max, json_t **ret, p11g_err *err)
{
	struct p11g_notify *n = notify_of(o);
	if (!n)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	/* a delivery handed out and not reported within 3 minutes (its timeout is at most one) is
	 * handed out again: a report lost stalls nothing */
	int64_t stale = p11g_mono_us() - INFLIGHT_MAX_US;
	for (size_t i = 0; i < n->n_inflight;) {
		if (n->inflight_since[i] < stale) {
			log_limited(n, "delivery %" PRIu64 " was not reported on; handed out again",
			            n->inflight[i]);
			inflight_drop(n, n->inflight[i]);
		} else {
			i++;
		}
	}
	if (max > P11G_NOTIFY_INFLIGHT_MAX - n->n_inflight)
		max = (unsigned)(P11G_NOTIFY_INFLIGHT_MAX - n->n_inflight);
	struct take_ctx c = {.o = o, .n = n, .max = max, .now = p11g_now(), .out = json_array()};
	if (!c.out)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	size_t before = n->n_inflight;
	if (p11g_store_read(o->store, take_body, &c, err) != 0) {
		n->n_inflight = before; /* nothing was handed out */
		json_decref(c.out);
		return -1;
	}
	if (c.n_gone) {
		/* deliveries that can never be made: dead now, not after a day of retries */
		json_t *res = json_array();
		for (size_t i = 0; res && i < c.n_gone; i++)
			json_array_append_new(res, json_pack("{s:I, s:b, s:s}", "id",
			                                     (json_int_t)c.gone[i].id, "ok", 0,
			                                     "error", c.gone[i].why));
		p11g_err e2 = {0};
		if (res && record_results(o, res, true, &e2) < 0)
			log_limited(n, "%s", e2.msg);
		json_decref(res);
	}
	if (!json_array_size(c.out)) {
		json_decref(c.out);
		return 1;
	}
	*ret = json_pack("{s:o}", "deliveries", c.out);
	return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
}

struct results_ctx {
	struct p11g_ops *o;
	struct p11g_notify *n;
	const json_t *results;
	bool dead; /* approvald's own verdict: each is dead now */
};

/* The wait before attempt number attempts + 1: 5 s doubling to an hour, +-20 %. */
static int64_t backoff(unsigned attempts, int64_t retry_after)
{
	int64_t s = BACKOFF_MIN;
	for (unsigned i = 1; i < attempts && s < BACKOFF_MAX; i++)
		s *= 2;
	if (s > BACKOFF_MAX)
		s = BACKOFF_MAX;
	unsigned r = 0;
	if (getentropy(&r, sizeof(r)) < 0)
		r = (unsigned)p11g_mono_us();
	s = s * (80 + (int64_t)(r % 41)) / 100;
	if (retry_after > s)
		s = retry_after < 86400 ? retry_after : 86400;
	return s < 1 ? 1 : s;
}

static int results_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct results_ctx *c = arg;
	size_t i;
	const json_t *res;
	int64_t now = p11g_now();
	json_array_foreach(c->results, i, res)
	{
		json_int_t id = json_integer_value(json_object_get(res, "id"));
		_cleanup_json_ json_t *e = NULL;
		if (id <= 0)
			continue;
		int r = p11g_txn_outbox_get(t, (uint64_t)id, &e, err);
		if (r == -ENOENT)
			continue;
		if (r < 0)
			return -1;
		if (json_is_true(json_object_get(res, "ok"))) {
			if (p11g_txn_outbox_del(t, (uint64_t)id, err) < 0)
				return -1;
			continue;
		}
		/* approvald-notify's words, cut and printable: they reach the log and the audit */
		char why[201];
		const char *said = json_string_value(json_object_get(res, "error"));
		snprintf(why, sizeof(why), "%s", said && *said ? said : "failed");
		for (char *p = why; *p; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
				*p = '?';
		const char *name = json_string_value(json_object_get(e, "notifier"));
		unsigned attempts =
		    (unsigned)json_integer_value(json_object_get(e, "attempts")) + 1;
		int64_t created = json_integer_value(json_object_get(e, "created"));
		int64_t after = json_integer_value(json_object_get(res, "retry_after"));
		int64_t next = now + backoff(attempts, after);
		log_limited(c->n, "delivery %lld to %s failed (attempt %u): %s", (long long)id,
		            name ? name : "?", attempts, why);
		if (c->dead || next - created > c->n->cfg.retry_for) {
			char meta[96];
			int64_t dead = 0;
			snprintf(meta, sizeof(meta), "notify_dead:%.64s", name ? name : "?");
			r = p11g_txn_meta_get_int(t, meta, &dead, err);
			if ((r < 0 && r != -ENOENT) ||
			    p11g_txn_meta_put_int(t, meta, dead + 1, err) < 0 ||
			    p11g_txn_outbox_del(t, (uint64_t)id, err) < 0 ||
			    ops_audit(t, "notification_dead", NULL,
			              (uint64_t)json_integer_value(json_object_get(e, "op")),
			              json_pack("{s:s?, s:I, s:O?, s:i, s:s}", "notifier", name,
			                        "delivery", (json_int_t)id, "notify_event",
			                        json_object_get(e, "event"), "attempts",
			                        (int)attempts, "error", why),
			              err) < 0)
				return -1;
			p11g_warn(
			    "notifications: delivery %lld to %s is dead after %u attempts: %s",
			    (long long)id, name ? name : "?", attempts, why);
			continue;
		}
		if (json_object_set_new(e, "attempts", json_integer(attempts)) < 0 ||
		    json_object_set_new(e, "next", json_integer(next)) < 0 ||
		    json_object_set_new(e, "last_error", json_string(why)) < 0)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		if (p11g_txn_outbox_put(t, (uint64_t)id, e, err) < 0)
			return -1;
	}
	return 0;
}

static int record_results(struct p11g_ops *o, const json_t *results, bool dead, p11g_err *err)
{
	struct results_ctx c = {.o = o, .n = o->notify, .results = results, .dead = dead};
	return p11g_store_write(o->store, results_body, &c, err);
}

int p11g_notify_done(struct p11g_ops *o, const json_t *results, p11g_err *err)
{
	struct p11g_notify *n = notify_of(o);
	size_t i;
	const json_t *res;
	if (!n)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (!json_is_array(results) || json_array_size(results) > P11G_NOTIFY_INFLIGHT_MAX)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "\"results\" must be an array of at most "
		                    "%d",
		                    P11G_NOTIFY_INFLIGHT_MAX);
	/* only what was handed out, once: approvald-notify cannot touch any other delivery */
	json_t *mine = json_array();
	if (!mine)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	json_array_foreach(results, i, res)
	{
		json_int_t id = json_integer_value(json_object_get(res, "id"));
		if (id <= 0 || !inflight(n, (uint64_t)id))
			continue;
		inflight_drop(n, (uint64_t)id);
		json_array_append(mine, (json_t *)res);
	}
	int r = json_array_size(mine) ? record_results(o, mine, false, err) : 0;
	json_decref(mine);
	return r;
}

void p11g_notify_sender_gone(struct p11g_ops *o)
{
	if (o->notify)
		o->notify->n_inflight = 0;
}

struct dead_ctx {
	json_t *dead;
	const struct p11g_policy *p;
};

static int dead_one(const char *name, int64_t n, void *arg)
{
	struct dead_ctx *c = arg;
	return json_object_set_new(c->dead, name, json_integer(n)) < 0 ? -ENOMEM : 0;
}

/* Every notifier's dead deliveries, those the policy no longer names included (0 for those
 * of the policy with none). */
static int dead_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct dead_ctx *c = arg;
	for (size_t i = 0; i < c->p->n_notifiers; i++)
		json_object_set_new(c->dead, c->p->notifiers[i].name, json_integer(0));
	int r = p11g_txn_meta_foreach_int(t, "notify_dead:", dead_one, c, err);
	if (r == -ENOMEM)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	return r < 0 ? -1 : 0;
}

json_t *p11g_notify_status(struct p11g_ops *o)
{
	if (!o->policy || !o->policy->n_notifiers)
		return NULL;
	struct p11g_notify *n = notify_of(o);
	struct dead_ctx c = {.dead = json_object(), .p = o->policy};
	p11g_err err = {0};
	if (!n || !c.dead || p11g_store_read(o->store, dead_body, &c, &err) != 0) {
		json_decref(c.dead);
		return NULL;
	}
	int64_t age = n->oldest ? p11g_now() - n->oldest : 0;
	return json_pack("{s:I, s:I, s:I, s:I, s:o}", "outbox", (json_int_t)n->depth, "oldest_age",
	                 (json_int_t)(age > 0 ? age : 0), "in_flight", (json_int_t)n->n_inflight,
	                 "dropped", (json_int_t)n->dropped, "dead", c.dead);
}
