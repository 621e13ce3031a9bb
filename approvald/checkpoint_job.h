/* A checkpoint signed on a token without holding up approvald: the signature is made in a child
 * process, and appended when it comes (checkpoint_job.c). */
#ifndef P11GATE_CHECKPOINT_JOB_H
#define P11GATE_CHECKPOINT_JOB_H

#include <sys/types.h>

#include "approvald/checkpoint.h"

/* A checkpoint is appended at most this many records after the record it signs (records are
 * appended while the token signs); a signature that comes later is dropped, and the next one
 * signs the head then.  The verifier (audit_state.c) remembers as many records' hashes. */
#define P11G_CHECKPOINT_LAG_MAX 65536

struct p11g_checkpoint_job {
	pid_t pid; /* the child signing; 0: none */
	int fd;    /* its answer; -1: none */
	uint64_t through;
	char head[2 * P11G_AUDIT_HASH_LEN + 1];
	int64_t signed_time;
	int64_t started_us; /* p11g_mono_us() */
};

/* A child still signing this long after it started is given up (the signer's own limit is
 * 30 s; a signer stuck where SIGKILL does not reach keeps its parent waiting). */
#define P11G_CHECKPOINT_JOB_MAX_US (45 * 1000000LL)

/* Starts signing the chain's head with sign in a child (in_child, optional, runs there first:
 * approvald's listening sockets and connections closed); nothing when the head is a
 * checkpoint.  1 started, 0 nothing to sign, -1 with err. */
int p11g_checkpoint_job_start(p11g_store *s, p11g_checkpoint_sign_fn sign, void *sign_arg,
                              void (*in_child)(void *arg), void *child_arg,
                              struct p11g_checkpoint_job *j, p11g_err *err);
/* The child j->pid ended with status: its signature read, checked with pub and appended with
 * the record and hash it signs (a checkpoint later in the chain than the record).  0 with
 * *ret_through (0: dropped, as another checkpoint covers it or it came too late), or -1 with
 * err (nothing appended).  j is reset. */
int p11g_checkpoint_job_finish(p11g_store *s, EVP_PKEY *pub, struct p11g_checkpoint_job *j,
                               int status, uint64_t *ret_through, p11g_err *err);
/* Kills the child, if any, and resets j (its end is reaped as any other's). */
void p11g_checkpoint_job_cancel(struct p11g_checkpoint_job *j);

#endif
