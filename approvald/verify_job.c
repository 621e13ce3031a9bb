/* audit --verify away from the event loop: a child process walks a read-only snapshot of the
 * store while approvald serves on; requests join the walk under way or the next one. */
#include "approvald/verify_job.h"

#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "approvald/audit_state.h"
#include "approvald/authz.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define INFLIGHT_MAX 64

#ifndef _cleanup_json_
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))
#endif

struct p11g_verify_job {
	pid_t pid; /* the walk under way; 0: none */
	int fd;    /* its report */
	uint64_t gen_running, gen_done;
	bool next_wanted, next_full; /* someone asked while a walk was under way */
	EVP_PKEY *next_pubkey;       /* and with this audit key: the next walk checks checkpoints */
	/* verified through here in this daemon's life: walks start after it */
	struct p11g_audit_mark mark;
	/* the last walk's answer: report or error */
	json_t *report;
	p11g_err error;
	struct {
		uid_t uid;
		uint64_t gen;
	} inflight[INFLIGHT_MAX];
	size_t n_inflight;
};

static struct p11g_verify_job *job_of(struct p11g_ops *o)
{
	if (!o->verify) {
		o->verify = calloc(1, sizeof(*o->verify));
		if (o->verify)
			o->verify->fd = -1;
	}
	return o->verify;
}

void p11g_verify_job_free(struct p11g_ops *o)
{
	struct p11g_verify_job *j = o->verify;
	if (!j)
		return;
	if (j->pid > 0)
		kill(j->pid, SIGKILL);
	if (j->fd >= 0)
		close(j->fd);
	EVP_PKEY_free(j->next_pubkey);
	json_decref(j->report);
	free(j);
	o->verify = NULL;
}

struct walk {
	struct p11g_audit_mark from, known;
	EVP_PKEY *pubkey;
	json_t *report;
};

/* In the child: the walk on its own read-only environment (LMDB's of the parent must not be
 * used after fork), its answer as one JSON text on fd. */
static void __attribute__((noreturn))
child_walk(const char *dir, struct p11g_audit_mark from, struct p11g_audit_mark known,
           EVP_PKEY *pubkey, pid_t parent, int fd)
{
	struct p11g_store_options so = {.read_only = true};
	p11g_store *s = NULL;
	p11g_err err = {0};
	struct walk w = {.from = from, .known = known, .pubkey = pubkey};

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	if (fd > 3)
		close_range(3, (unsigned)fd - 1, 0);
	close_range((unsigned)fd + 1, ~0U, 0);
	int r = p11g_store_open(dir, &so, &s, &err);
	/* The walk yields the CPU to approvald and everything else: it may take a while, the
	 * signers waiting on approvald may not.  Set once the store is open: its reads renew the
	 * transaction the open began (store.c, kept_read), and take no lock approvald shares. */
	struct sched_param sp = {0};
	if (sched_setscheduler(0, SCHED_IDLE, &sp) < 0)
		p11g_debug("audit verification: SCHED_IDLE: %m");
	if (r == 0)
		r = p11g_audit_check(s, &w.from, &w.known, w.pubkey, &w.report, &err);
	json_t *out = r == 0 ? json_pack("{s:o}", "report", w.report)
	                     : json_pack("{s:s, s:s}", "code",
	                                 err.code ? err.code : P11G_E_INTERNAL, "message", err.msg);
	char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
	size_t len = text ? strlen(text) : 0, off = 0;
	bool ok = text != NULL;
	while (ok && off < len) {
		ssize_t n = write(fd, text + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		ok = n > 0;
		off += ok ? (size_t)n : 0;
	}
	/* everything of the walk's own goes before it ends (valgrind counts it) */
	free(text);
	json_decref(out);
	if (s)
		p11g_store_close(s);
	_exit(ok ? 0 : 1);
}

static int start(struct p11g_ops *o, struct p11g_verify_job *j, bool full, EVP_PKEY *pubkey,
                 p11g_err *err)
{
	int p[2];
	struct p11g_audit_mark from = full || pubkey ? (struct p11g_audit_mark){0} : j->mark;

	if (pipe2(p, O_CLOEXEC) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot verify: pipe: %m");
	pid_t parent = getpid(), pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot verify: fork: %m");
	}
	if (pid == 0) {
		close(p[0]);
		if (o->forget_secrets)
			o->forget_secrets();
		child_walk(p11g_store_dir(o->store), from, j->mark, pubkey, parent, p[1]);
	}
	close(p[1]);
	j->pid = pid;
	j->fd = p[0];
	j->gen_running = j->gen_done + 1;
	p11g_debug("audit verification %" PRIu64 " from record %" PRIu64 " in process %d",
	           j->gen_running, from.seq + 1, (int)pid);
	return 0;
}

bool p11g_verify_job_exited(struct p11g_ops *o, pid_t pid, int status)
{
	struct p11g_verify_job *j = o->verify;
	if (!j || !j->pid || pid != j->pid)
		return false;

	char *text = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len + 4096 > cap) {
			char *t = realloc(text, cap = cap ? cap * 2 : 8192);
			if (!t)
				break;
			text = t;
		}
		ssize_t n = read(j->fd, text + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(j->fd);
	j->fd = -1;
	j->pid = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		p11g_store_reader_check(o->store);
	json_decref(j->report);
	j->report = NULL;
	json_error_t jerr;
	_cleanup_json_ json_t *out = WIFEXITED(status) && WEXITSTATUS(status) == 0 && text
	                                 ? json_loadb(text, len, 0, &jerr)
	                                 : NULL;
	free(text);
	json_t *report = json_object_get(out, "report");
	const char *code = json_string_value(json_object_get(out, "code")),
	           *message = json_string_value(json_object_get(out, "message"));
	if (json_is_object(report)) {
		const char *hex = json_string_value(json_object_get(report, "hash"));
		json_int_t seq = json_integer_value(json_object_get(report, "records"));
		struct p11g_audit_mark m = {.seq = (uint64_t)seq};
		if (hex && strlen(hex) == 2 * P11G_AUDIT_HASH_LEN &&
		    p11g_hex_decode(hex, strlen(hex), m.hash, sizeof(m.hash)) ==
		        P11G_AUDIT_HASH_LEN &&
		    seq >= (json_int_t)j->mark.seq) {
			j->mark = m;
			j->report = json_incref(report);
		} else {
			p11g_err_set(&j->error, P11G_E_INTERNAL,
			             "the verifying process answered nonsense");
		}
	} else if (code && message) {
		/* a broken chain stays broken: the mark stays where it was */
		p11g_err_set(&j->error,
		             !strcmp(code, P11G_E_AUDIT_BROKEN) ? P11G_E_AUDIT_BROKEN
		             : !strcmp(code, P11G_E_STORE)      ? P11G_E_STORE
		                                                : P11G_E_INTERNAL,
		             "%s", message);
	} else {
		p11g_err_set(&j->error, P11G_E_INTERNAL,
		             "the verifying process failed (%s %d); the log above says why",
		             WIFSIGNALED(status) ? "signal" : "exit",
		             WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	}
	if (!j->report)
		p11g_warn("audit verification %" PRIu64 ": %s", j->gen_running, j->error.msg);
	j->gen_done = j->gen_running;
	/* the waiters of this walk are answered; those of the next start it */
	size_t keep = 0;
	for (size_t i = 0; i < j->n_inflight; i++)
		if (j->inflight[i].gen > j->gen_done)
			j->inflight[keep++] = j->inflight[i];
	j->n_inflight = keep;
	if (o->changed)
		o->changed(o->changed_arg, P11G_VERIFY_WAKE_BASE + j->gen_done);
	if (j->next_wanted) {
		bool full = j->next_full;
		EVP_PKEY *pubkey = j->next_pubkey;
		p11g_err err = {0};
		j->next_wanted = j->next_full = false;
		j->next_pubkey = NULL;
		int r = start(o, j, full, pubkey, &err);
		EVP_PKEY_free(pubkey);
		if (r < 0) {
			j->error = err;
			json_decref(j->report);
			j->report = NULL;
			j->gen_done = j->gen_done + 1;
			j->n_inflight = 0;
			if (o->changed)
				o->changed(o->changed_arg, P11G_VERIFY_WAKE_BASE + j->gen_done);
		}
	}
	return true;
}

static void inflight_drop(struct p11g_verify_job *j, uid_t uid, uint64_t gen)
{
	for (size_t i = 0; i < j->n_inflight; i++)
		if (j->inflight[i].uid == uid && j->inflight[i].gen == gen) {
			j->inflight[i] = j->inflight[--j->n_inflight];
			return;
		}
}

int p11g_ops_verify(struct p11g_ops *o, const struct p11g_ident *caller, bool full,
                    EVP_PKEY *pubkey, uint64_t *wake_id, bool expired, json_t **ret_result,
                    p11g_err *err)
{
	struct p11g_verify_job *j;

	if (!p11g_authz_may_read_audit(o->policy, o->daemon_uid, caller))
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "the audit log is for root, approvers and admins");
	if (!(j = job_of(o)))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");

	if (*wake_id) {
		/* resumed: the walk this request waited for ended, or its time is up */
		uint64_t gen = *wake_id - P11G_VERIFY_WAKE_BASE;
		if (j->gen_done < gen) {
			if (!expired)
				return 1;
			inflight_drop(j, caller->uid, gen);
			return p11g_err_set(
			    err, P11G_E_TIMEOUT,
			    "the audit verification is still under way; ask again later");
		}
		inflight_drop(j, caller->uid, gen);
		if (!j->report) {
			*err = j->error;
			return -1;
		}
		*ret_result = json_deep_copy(j->report);
		return *ret_result ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}

	/* One walk at a time for everyone, and one request at a time per uid: a client looping
	 * verify costs a walk of what is new since the last, never a queue of walks. */
	for (size_t i = 0; i < j->n_inflight; i++)
		if (j->inflight[i].uid == caller->uid)
			return p11g_err_set(
			    err, P11G_E_LIMIT,
			    "an audit verification of yours is under way; wait for it");
	if (j->n_inflight == INFLIGHT_MAX)
		return p11g_err_set(err, P11G_E_LIMIT,
		                    "%d audit verifications are waiting; ask again later",
		                    INFLIGHT_MAX);
	uint64_t gen;
	if (!j->pid) {
		if (start(o, j, full || j->mark.seq == 0, pubkey, err) < 0)
			return -1;
		gen = j->gen_running;
	} else {
		/* the walk under way started before this request: the next one covers it */
		if (pubkey && j->next_pubkey && EVP_PKEY_eq(pubkey, j->next_pubkey) != 1)
			return p11g_err_set(err, P11G_E_LIMIT,
			                    "a verification with another audit key is waiting; ask "
			                    "again later");
		if (pubkey && !j->next_pubkey) {
			if (EVP_PKEY_up_ref(pubkey) != 1)
				return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
			j->next_pubkey = pubkey;
		}
		j->next_wanted = true;
		j->next_full |= full;
		gen = j->gen_running + 1;
	}
	j->inflight[j->n_inflight].uid = caller->uid;
	j->inflight[j->n_inflight].gen = gen;
	j->n_inflight++;
	*wake_id = P11G_VERIFY_WAKE_BASE + gen;
	return 1;
}
