/* approvald-notify, started (and started again) by approvald while its policy has notifiers,
 * with its two connections to approvald's server (notify_sender.c). */
#ifndef P11GATE_NOTIFY_SENDER_H
#define P11GATE_NOTIFY_SENDER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "approvald/server.h"

#define P11G_NOTIFY_PROGRAM "approvald-notify"

struct p11g_ops;

struct p11g_notify_sender {
	struct p11g_server *server;
	struct p11g_ops *ops;
	char program[4096];
	pid_t pid;
	int64_t start_after_us, backoff_us, started_us;
};

/* About once a second (and at start): starts approvald-notify when the policy has notifiers
 * and it is not running. */
void p11g_notify_sender_tick(struct p11g_notify_sender *s);
/* true when pid was approvald-notify. */
bool p11g_notify_sender_exited(struct p11g_notify_sender *s, pid_t pid, int status);
void p11g_notify_sender_stop(struct p11g_notify_sender *s);

#endif
