/* A checkpoint signed on a token without holding up approvald (checkpoint_job.h).  Signing on a
 * token means a process that loads the module, logs in and signs: tens of milliseconds with
 * SoftHSMv2, up to the signer's 30 s time limit with a token that hangs.  In the event loop,
 * every use waited that long at each checkpoint.  The child makes the signature; approvald
 * goes on serving, and appends the checkpoint when the child has ended: it names the record it
 * signs ("through") and that record's hash, which may by then be some records back. */
#include "approvald/checkpoint_job.h"

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <syslog.h>

#include <openssl/evp.h>

#include "approvald/store_internal.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))
#define ANSWER_MAX     2048 /* 0 and the signature, or 1 and why not */

struct start_ctx {
	struct p11g_checkpoint_job *j;
	bool nothing;
};

static int start_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct start_ctx *c = arg;
	struct p11g_audit_head head;
	_cleanup_json_ json_t *last = NULL;

	if (p11g_store_audit_head(t, &head, err) < 0)
		return -1;
	if (!head.present || p11g_txn_audit_get(t, head.seq, &last, err) < 0) {
		c->nothing = !head.present;
		return head.present ? -1 : 0;
	}
	if (p11g_checkpoint_covers_head(last, head.seq)) {
		c->nothing = true;
		return 0;
	}
	c->j->through = head.seq;
	p11g_hex_encode(head.hash, sizeof(head.hash), c->j->head);
	return 0;
}

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

int p11g_checkpoint_job_start(p11g_store *s, p11g_checkpoint_sign_fn sign, void *sign_arg,
                              void (*in_child)(void *arg), void *child_arg,
                              struct p11g_checkpoint_job *j, p11g_err *err)
{
	struct start_ctx c = {.j = j};
	char text[300];
	int p[2];

	if (p11g_store_read(s, start_body, &c, err) < 0)
		return -1;
	if (c.nothing)
		return 0;
	j->signed_time = p11g_now();
	int len = p11g_checkpoint_text(text, sizeof(text), j->through, j->head, j->signed_time);
	if (len < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot sign an audit checkpoint");
	if (pipe2(p, O_CLOEXEC) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "pipe: %m");
	pid_t parent = getpid(), pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return p11g_err_set(err, P11G_E_INTERNAL, "fork: %m");
	}
	if (pid == 0) {
		/* the store is the parent's (LMDB's environment is not used after fork) */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		close(p[0]);
		if (in_child)
			in_child(child_arg);
		unsigned char *sig = NULL;
		size_t siglen = 0;
		p11g_err e = {0};
		unsigned char answer[ANSWER_MAX];
		size_t n;
		if (sign(sign_arg, text, &sig, &siglen, &e) == 0 && siglen < sizeof(answer) - 1) {
			answer[0] = 0;
			memcpy(answer + 1, sig, siglen);
			n = 1 + siglen;
		} else {
			answer[0] = 1;
			n = 1 + (size_t)snprintf((char *)answer + 1, sizeof(answer) - 1, "%s",
			                         e.msg[0] ? e.msg : "the signature is too long");
			if (n > sizeof(answer) - 1)
				n = sizeof(answer) - 1;
		}
		free(sig);
		write_all(p[1], answer, n);
		_exit(0);
	}
	close(p[1]);
	j->pid = pid;
	j->fd = p[0];
	j->started_us = p11g_mono_us();
	return 1;
}

struct append_ctx {
	const json_t *rec;
	uint64_t through;
	bool dropped;
	char line[4096];
};

static int append_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct append_ctx *c = arg;
	struct p11g_audit_head head;
	_cleanup_json_ json_t *last = NULL;

	c->dropped = false;
	if (p11g_store_audit_head(t, &head, err) < 0)
		return -1;
	if (!head.present || head.seq < c->through)
		return p11g_err_set(err, P11G_E_AUDIT_BROKEN,
		                    "the audit log's head moved back behind the checkpoint signed");
	/* another checkpoint came first (the one approvald signs as it stops), or the records
	 * since are too many for a verifier to look back */
	if (p11g_txn_audit_get(t, head.seq, &last, err) < 0)
		return -1;
	const char *ev = json_string_value(json_object_get(last, "event"));
	json_int_t lt = json_integer_value(json_object_get(last, "through"));
	if ((ev && !strcmp(ev, "checkpoint") && lt >= (json_int_t)c->through) ||
	    head.seq - c->through >= P11G_CHECKPOINT_LAG_MAX) {
		c->dropped = true;
		return 0;
	}
	return p11g_txn_audit_append(t, c->rec, NULL, err);
}

int p11g_checkpoint_job_finish(p11g_store *s, EVP_PKEY *pub, struct p11g_checkpoint_job *j,
                               int status, uint64_t *ret_through, p11g_err *err)
{
	unsigned char answer[ANSWER_MAX];
	size_t got = 0;
	struct p11g_checkpoint_job done = *j;

	*ret_through = 0;
	j->pid = 0;
	j->fd = -1;
	for (;;) {
		ssize_t n = read(done.fd, answer + got, sizeof(answer) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || (got += (size_t)n) == sizeof(answer))
			break;
	}
	close(done.fd);
	if (got > 1 && answer[0] == 1)
		return p11g_err_set(err, P11G_E_INTERNAL, "%.*s", (int)(got - 1),
		                    (const char *)answer + 1);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got <= 1 || answer[0] != 0 ||
	    got == sizeof(answer))
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "the process signing the checkpoint failed (%s %d)",
		                    WIFSIGNALED(status) ? "signal" : "exit",
		                    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	char b64[4 * ((ANSWER_MAX + 2) / 3) + 1], id[80];
	EVP_EncodeBlock((unsigned char *)b64, answer + 1, (int)(got - 1));
	if (p11g_checkpoint_key_id(pub, id) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot sign an audit checkpoint");
	_cleanup_json_ json_t *rec =
	    json_pack("{s:s, s:I, s:s, s:I, s:s, s:s}", "event", "checkpoint", "through",
	              (json_int_t)done.through, "head", done.head, "signed",
	              (json_int_t)done.signed_time, "key", id, "sig", b64);
	if (!rec)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	const char *why = NULL;
	if (p11g_checkpoint_check(pub, rec, &why) != 0)
		return p11g_err_set(
		    err, P11G_E_INTERNAL,
		    "a signature by the audit key does not verify with the public key found for it "
		    "(%s; do the token's private and public key objects match?)",
		    why ? why : "?");
	struct append_ctx c = {.rec = rec, .through = done.through};
	if (p11g_store_write(s, append_body, &c, err) < 0)
		return -1;
	if (c.dropped) {
		p11g_debug("audit checkpoint through=%" PRIu64 " dropped: another covers it, or it "
		           "came too late",
		           done.through);
		return 0;
	}
	*ret_through = done.through;
	snprintf(c.line, sizeof(c.line),
	         "audit checkpoint through=%" PRIu64 " head=%s time=%" PRId64 " key=%s sig=%s",
	         done.through, done.head, done.signed_time, id, b64);
	syslog(LOG_AUTHPRIV | LOG_NOTICE, "%s", c.line);
	p11g_info("%s", c.line);
	return 0;
}

void p11g_checkpoint_job_cancel(struct p11g_checkpoint_job *j)
{
	if (j->pid > 0)
		kill(j->pid, SIGKILL);
	if (j->fd >= 0)
		close(j->fd);
	j->pid = 0;
	j->fd = -1;
}
