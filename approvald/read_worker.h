/* Listing pages away from the event loop: `list` and `audit` pages are read by a child process
 * on its own read-only LMDB environment, while approvald serves signers on (read_worker.c). */
#ifndef P11GATE_READ_WORKER_H
#define P11GATE_READ_WORKER_H

#include <jansson.h>

#include "approvald/ops.h"

/* The wake ids of requests parked for job J are this + J (operation ids never get there; the
 * verify walks' P11G_VERIFY_WAKE_BASE ids are below). */
#define P11G_READ_WAKE_BASE ((UINT64_C(1) << 62) + (UINT64_C(1) << 61))

/* What the reader process reads: verb "list" (args: all, state, limit, after, as h_list
 * checked them) or "audit" (since, limit; the caller's right to read the audit checked
 * before). */
struct p11g_read_job_args {
	const char *verb;
	json_t *args; /* borrowed */
};

/*
 * First call (*wake_id 0): hands the read to the reader process (started on first use, again
 * after it ended) and returns 1 with *wake_id: park the request until ops->changed names that
 * id, then call again with it (expired: its time is up).  0 when the reader cannot take it
 * (it cannot be started, or its queue is full): the caller reads in the loop, as before.  On
 * the call after the wake: 0 with *frame (malloc'd, a complete reply frame, header included)
 * and *frame_len, or -1 with err (the reader ended, or the time is up).  At most
 * P11G_READ_PER_UID reads per uid wait at a time (limit_exceeded).
 */
#define P11G_READ_PER_UID 4
int p11g_read_job(struct p11g_ops *o, const struct p11g_ident *caller,
                  const struct p11g_read_job_args *a, uint64_t *wake_id, bool expired, char **frame,
                  size_t *frame_len, p11g_err *err);
/* The request parked on wake_id is gone (its client hung up): its page is dropped. */
void p11g_read_job_cancel(struct p11g_ops *o, uint64_t wake_id);
/* Starts the reader now (approvald, before it serves): the first page does not wait for a
 * fork in the loop.  One that cannot start is tried again at the first page. */
void p11g_read_worker_start(struct p11g_ops *o);
/* The descriptor the event loop polls for the reader's answers (-1: none running). */
int p11g_read_worker_fd(struct p11g_ops *o);
/* Its answers, read when p11g_read_worker_fd is readable: their waiters woken. */
void p11g_read_worker_ready(struct p11g_ops *o);
/* SIGCHLD: true when pid was the reader (its waiters answered with an error and woken). */
bool p11g_read_worker_exited(struct p11g_ops *o, pid_t pid, int status);
/* Ends the reader and frees what waits for it (p11g_ops_clear). */
void p11g_read_worker_free(struct p11g_ops *o);

#endif
