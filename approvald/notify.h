/* Notifications (issue 21): events of operations put in the store's outbox in the transaction
 * that makes them, and handed to approvald-notify, which delivers them (notify.c). */
#ifndef P11GATE_NOTIFY_H
#define P11GATE_NOTIFY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "approvald/op.h"
#include "approvald/store.h"
#include "policy/policy.h"

/* The wake id of a notify_take parked for work (p11g_server_wake). */
#define P11G_NOTIFY_WAKE         ((UINT64_C(1) << 63) + 1)
#define P11G_NOTIFY_INFLIGHT_MAX 64

struct p11g_ops;

struct p11g_notify_config {
	char *web_url;       /* the approvals page as people reach it (links); NULL: none */
	int64_t retry_for;   /* seconds a delivery is retried before it is dead (24 h) */
	unsigned outbox_max; /* entries the outbox holds at most (10 000) */
};

struct p11g_notify {
	struct p11g_notify_config cfg;
	/* handed to approvald-notify and not yet answered */
	uint64_t inflight[P11G_NOTIFY_INFLIGHT_MAX];
	int64_t inflight_since[P11G_NOTIFY_INFLIGHT_MAX]; /* p11g_mono_us() when handed out */
	size_t n_inflight;
	bool added; /* an entry was added in this round: wake the sender after the commit */
	/* what status shows, as of the last scan (about once a second) */
	uint64_t depth;
	int64_t oldest;   /* created, seconds; 0: none */
	uint64_t dropped; /* events not put in a full outbox */
	/* use_refused: the keys told of lately (at most once a minute each, by a hash of the
	 * key's whole URI), and at most 20 such events a minute in all */
	struct {
		unsigned char uri_hash[32];
		int64_t told; /* seconds */
		uint64_t left_out;
	} refused[32];
	int64_t refused_minute;
	unsigned refused_in_minute;
	/* and at most 5 a minute for the refusals of one uid: one with no role cannot use up the
	 * others' share with made-up keys */
	struct {
		uid_t uid;
		unsigned n;
	} refused_by[32];
	int64_t logged_us;
	unsigned log_suppressed;
};

void p11g_notify_config_clear(struct p11g_notify_config *cfg);
/* The daemon's settings (copied; 0 and NULL keep the defaults).  0 or -ENOMEM. */
int p11g_notify_setup(struct p11g_ops *o, const struct p11g_notify_config *cfg);
/* Whether events were put in the outbox since the last call (the sender is then woken). */
bool p11g_notify_added(struct p11g_ops *o);

/* From ops_audit_op, in the event's transaction: the notifications audit_event of op (made by
 * actor, extra its record's own members) gives, put in the outbox for the notifiers of the
 * rules of op's keys that want them.  0, or -1 with err (the store's). */
int p11g_notify_op_event(p11g_txn *t, struct p11g_ops *o, const char *audit_event,
                         const struct p11g_ident *actor, const struct p11g_op *op,
                         const json_t *extra, p11g_err *err);
/* A refused use of key by caller (use_refused): told to the notifiers of the key's rule that
 * want it, at most once a minute per key (the next one counts those left out).  *decided: 0
 * before the request's first call (then 1 told, -1 left out), kept across its calls. */
int p11g_notify_use_refused(p11g_txn *t, struct p11g_ops *o, const struct p11g_ident *caller,
                            const struct p11g_keyid *key, const char *reason, const char *message,
                            int *decided, p11g_err *err);
/* A test event for notifier name (approvald notify test): root and approvald's user only. */
int p11g_notify_test(struct p11g_ops *o, const struct p11g_ident *caller, const char *name,
                     json_t **ret, p11g_err *err);
/* Pending operations whose window ends within 15 minutes, told once ("expiring"). */
int p11g_notify_expiring(struct p11g_ops *o, p11g_err *err);
/* approvald-notify's verbs: up to max deliveries due (0 with *ret, or 1 when none is due:
 * the caller waits for P11G_NOTIFY_WAKE), and the results of those it made. */
int p11g_notify_take(struct p11g_ops *o, unsigned max, json_t **ret, p11g_err *err);
int p11g_notify_done(struct p11g_ops *o, const json_t *results, p11g_err *err);
/* approvald-notify ended: what it held is handed out again. */
void p11g_notify_sender_gone(struct p11g_ops *o);
/* status: the outbox's figures (NULL when the policy has no notifiers). */
json_t *p11g_notify_status(struct p11g_ops *o);

/* The bodies of a delivery (notify_format.c): the event (the JSON format) as Slack's Block Kit
 * message or a Teams message card with an Adaptive Card; a new string. */
char *p11g_notify_render(enum p11g_notify_format f, const json_t *event);

#endif
