/* audit --verify in a child process (verify_job.c): the event loop never walks the chain. */
#ifndef P11GATE_VERIFY_JOB_H
#define P11GATE_VERIFY_JOB_H

#include <openssl/evp.h>

#include "approvald/ops.h"

/* The wake ids of verify requests parked for walk G are this + G (operation ids never get
 * there). */
#define P11G_VERIFY_WAKE_BASE (UINT64_C(1) << 62)

/*
 * The verify verb.  First call (*wake_id 0): starts a walk (or joins the next one when a walk
 * is under way) and returns 1 with *wake_id: park the request until ops->changed names that
 * id, then call again with it (expired: its time is up).  A walk starts after the last record
 * this daemon verified (an in-memory mark, whose record must still carry the hash it had),
 * or at record 1 when full or none was.  pubkey (borrowed; optional): a walk from record 1
 * that checks every checkpoint with it.  One request per uid at a time (limit_exceeded).  0
 * with the report (audit_state.h), or -1 with err.
 */
int p11g_ops_verify(struct p11g_ops *o, const struct p11g_ident *caller, bool full,
                    EVP_PKEY *pubkey, uint64_t *wake_id, bool expired, json_t **ret_result,
                    p11g_err *err);
/* SIGCHLD: true when pid was the walk (its answer read, its waiters woken). */
bool p11g_verify_job_exited(struct p11g_ops *o, pid_t pid, int status);
/* Ends a walk under way and frees the job (p11g_ops_clear). */
void p11g_verify_job_free(struct p11g_ops *o);

#endif
