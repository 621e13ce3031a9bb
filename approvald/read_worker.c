/* Listing pages away from the event loop.  A `list` or `audit` page reads up to a few hundred
 * stored operations or records and encodes them: done in approvald's one event loop, every
 * `use` and `status` that arrived meanwhile waited for it.  One child process, started on the
 * first page, reads them instead, on its own read-only LMDB environment (the parent's may not
 * be used after fork) at SCHED_IDLE, and answers with the reply frame itself, which the loop
 * sends on unparsed.  It decides nothing the policy says: a page shows what the caller may see
 * by the rule snapshots of the operations, as in the loop, and the right to read the audit is
 * checked before a page is asked for. */
#include "approvald/read_worker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "p11gate/log.h"
#include "p11gate/wire.h"

#define JOBS_MAX 64
#define MSG_MAX  (8 + 4 + P11G_FRAME_MAX) /* the job id, then the reply frame */
/* A reader that ended before it answered anything is not started again for this long: the
 * pages are read in the loop meanwhile (a child that cannot run, say). */
#define RESTART_PAUSE_US 5000000
/* Backstops (a request whose client hung up cancels its page: p11g_read_job_cancel): a page
 * answered and not taken this long after it was asked for, or not answered (handlers.c waits
 * 30 s for it), is dropped. */
#define UNTAKEN_US    40000000
#define UNANSWERED_US 60000000

#ifndef _cleanup_json_
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))
#endif

struct job {
	uint64_t id; /* 0: the slot is free */
	uid_t uid;
	bool done;
	int64_t since_us; /* when it was handed over */
	char *frame;
	size_t len;
};

struct p11g_read_worker {
	pid_t pid; /* 0: none (or reaped) */
	int fd;    /* -1: none */
	int64_t no_start_until_us;
	uint64_t answered; /* by the one running */
	uint64_t next_id;
	struct job jobs[JOBS_MAX];
	unsigned char *buf; /* MSG_MAX + 1 */
};

static struct p11g_read_worker *worker_of(struct p11g_ops *o)
{
	if (!o->reader && (o->reader = calloc(1, sizeof(*o->reader)))) {
		o->reader->fd = -1;
		o->reader->next_id = 1;
	}
	return o->reader;
}

/* ---- the child -------------------------------------------------------------------- */

static json_t *child_read(struct p11g_ops *o, const json_t *msg)
{
	const char *verb = json_string_value(json_object_get(msg, "verb"));
	const json_t *args = json_object_get(msg, "args");
	struct p11g_ident caller = {0};
	json_t *result = NULL;
	p11g_err err = {0};
	int r = -1;

	if (!verb || !json_is_object(args) ||
	    p11g_ident_from_json(json_object_get(msg, "caller"), &caller) < 0) {
		p11g_err_set(&err, P11G_E_INTERNAL, "the reading process got a malformed request");
	} else if (!strcmp(verb, "list")) {
		struct p11g_list_args a = {
		    .all = json_is_true(json_object_get(args, "all")),
		    .state = json_string_value(json_object_get(args, "state")),
		    .after = (uint64_t)json_integer_value(json_object_get(args, "after")),
		    .limit = (unsigned)json_integer_value(json_object_get(args, "limit")),
		    .desc = json_is_true(json_object_get(args, "desc"))};
		r = p11g_ops_list(o, &caller, &a, &result, &err);
	} else if (!strcmp(verb, "audit")) {
		r = p11g_ops_audit_page(
		    o, (uint64_t)json_integer_value(json_object_get(args, "since")),
		    (unsigned)json_integer_value(json_object_get(args, "limit")), &result, &err);
	} else {
		p11g_err_set(&err, P11G_E_INTERNAL, "the reading process got an unknown verb");
	}
	p11g_ident_clear(&caller);
	if (r == 0)
		return p11g_wire_reply_ok(result ? result : json_object());
	json_decref(result);
	return p11g_wire_reply_error(err.code ? err.code : P11G_E_INTERNAL,
	                             err.msg[0] ? err.msg : "internal error");
}

/* One answer: the job id (8 bytes, host order), then the reply frame. */
static bool child_answer(int fd, uint64_t job, json_t *rep, unsigned char *buf)
{
	size_t len = 0;
	char *frame = rep ? p11g_frame_encode(rep, &len) : NULL;
	if (!frame) {
		json_t *e = p11g_wire_reply_error(P11G_E_INTERNAL, "the reply could not be encoded "
		                                                   "(too large or out of memory)");
		frame = e ? p11g_frame_encode(e, &len) : NULL;
		json_decref(e);
		if (!frame)
			return false;
	}
	memcpy(buf, &job, 8);
	memcpy(buf + 8, frame, len);
	free(frame);
	for (;;) {
		ssize_t n = send(fd, buf, 8 + len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EMSGSIZE && len > 4096) {
			/* a socket buffer smaller than a frame: this page is answered with that */
			json_t *e = p11g_wire_reply_error(
			    P11G_E_INTERNAL, "the page did not fit the listing process's "
			                     "socket; ask with a smaller limit");
			bool ok = e && child_answer(fd, job, e, buf);
			json_decref(e);
			return ok;
		}
		return n == (ssize_t)(8 + len);
	}
}

static void __attribute__((noreturn))
child_main(const char *dir, uid_t daemon_uid, void (*forget)(void), pid_t parent, int fd)
{
	struct p11g_store_options so = {.read_only = true};
	struct p11g_ops o = {.daemon_uid = daemon_uid};
	p11g_err open_err = {0};
	unsigned char *buf = malloc(MSG_MAX + 1);
	int rc = 0;

	if (forget)
		forget();
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent || !buf)
		_exit(1);
	prctl(PR_SET_NAME, "approvald-read");
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL); /* approvald's, blocked for its signalfd */
	if (fd > 3)
		close_range(3, (unsigned)fd - 1, 0);
	close_range((unsigned)fd + 1, ~0U, 0);
	/* a store it cannot open: it ends, and approvald reads the pages itself for a while */
	if (p11g_store_open(dir, &so, &o.store, &open_err) < 0) {
		p11g_error("listing process: %s", open_err.msg);
		_exit(1);
	}
	/* Pages yield the CPU to approvald and everything else: signers must not wait for them.
	 * SCHED_IDLE, not nice 19: a nice-19 process that wakes for a page may keep a CPU for
	 * its slice while a signer, or approvald's loop, that woke on it waits (EEVDF); an
	 * idle-class one yields it as soon as the kernel lets it.  Set once the store is open:
	 * its reads renew the transaction the open began (store.c, kept_read), so it does not
	 * hold the reader-table lock, which approvald's loop shares, while it waits for a CPU. */
	struct sched_param sp = {0};
	if (sched_setscheduler(0, SCHED_IDLE, &sp) < 0 && nice(19) < 0)
		p11g_debug("listing pages: SCHED_IDLE and nice: %m");
	for (;;) {
		ssize_t n = recv(fd, buf, MSG_MAX, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		json_error_t jerr;
		_cleanup_json_ json_t *msg = json_loadb((char *)buf, (size_t)n, 0, &jerr);
		json_int_t job = json_integer_value(json_object_get(msg, "job"));
		if (job <= 0) {
			rc = 1;
			break;
		}
		_cleanup_json_ json_t *rep = child_read(&o, msg);
		if (!child_answer(fd, (uint64_t)job, rep, buf)) {
			rc = 1;
			break;
		}
	}
	/* everything of the child's own goes before it ends (valgrind counts it) */
	p11g_ops_clear(&o);
	p11g_store_close(o.store);
	free(buf);
	_exit(rc);
}

/* ---- the parent ------------------------------------------------------------------- */

static void wake(struct p11g_ops *o, uint64_t id)
{
	if (o->changed)
		o->changed(o->changed_arg, P11G_READ_WAKE_BASE + id);
}

static void job_answer_error(struct job *j, const char *code, const char *msg)
{
	json_t *e = p11g_wire_reply_error(code, msg);
	free(j->frame);
	j->frame = e ? p11g_frame_encode(e, &j->len) : NULL;
	json_decref(e);
	j->done = true;
}

/* The reader is gone, or must go: what waited for it is answered with why. */
static void worker_lost(struct p11g_ops *o, struct p11g_read_worker *w, const char *why)
{
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	if (w->pid > 0)
		kill(w->pid, SIGKILL); /* reaped on SIGCHLD */
	if (!w->answered)
		w->no_start_until_us = p11g_mono_us() + RESTART_PAUSE_US;
	for (size_t i = 0; i < JOBS_MAX; i++) {
		struct job *j = &w->jobs[i];
		if (!j->id || j->done)
			continue;
		job_answer_error(j, P11G_E_INTERNAL, why);
		wake(o, j->id);
	}
}

static int start(struct p11g_ops *o, struct p11g_read_worker *w)
{
	int sv[2], size = 4 * MSG_MAX;
	/* the one killed is reaped first (SIGCHLD): its end checks the store's reader table */
	if (w->pid > 0)
		return -1;
	if (!w->buf && !(w->buf = malloc(MSG_MAX + 1)))
		return -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		p11g_warn("listing pages are read in the event loop: socketpair: %m");
		return -1;
	}
	for (int i = 0; i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
		setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	}
	pid_t parent = getpid(), pid = fork();
	if (pid < 0) {
		p11g_warn("listing pages are read in the event loop: fork: %m");
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		close(sv[0]);
		child_main(p11g_store_dir(o->store), o->daemon_uid, o->forget_secrets, parent,
		           sv[1]);
	}
	close(sv[1]);
	if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
		close(sv[0]);
		kill(pid, SIGKILL);
		return -1;
	}
	w->pid = pid;
	w->fd = sv[0];
	w->answered = 0;
	p11g_debug("listing pages read by process %d", (int)pid);
	return 0;
}

static struct job *job_find(struct p11g_read_worker *w, uint64_t id)
{
	for (size_t i = 0; id && i < JOBS_MAX; i++)
		if (w->jobs[i].id == id)
			return &w->jobs[i];
	return NULL;
}

static void job_free(struct job *j)
{
	free(j->frame);
	memset(j, 0, sizeof(*j));
}

/* A new read handed to the reader: 1, 0 when it cannot take it, -1 with err. */
static int submit(struct p11g_ops *o, struct p11g_read_worker *w, const struct p11g_ident *caller,
                  const struct p11g_read_job_args *a, uint64_t *wake_id, p11g_err *err)
{
	struct job *slot = NULL;
	unsigned mine = 0;
	int64_t now = p11g_mono_us();
	for (size_t i = 0; i < JOBS_MAX; i++) {
		struct job *j = &w->jobs[i];
		if (j->id && !j->done && now - j->since_us > UNANSWERED_US) {
			p11g_warn("listing process %d did not answer in time; ended", (int)w->pid);
			worker_lost(
			    o, w, "approvald's listing process did not answer in time; ask again");
		}
		if (j->id && j->done && now - j->since_us > UNTAKEN_US)
			job_free(j);
		if (!j->id)
			slot = slot ? slot : j;
		else if (j->uid == caller->uid)
			mine++;
	}
	if (mine >= P11G_READ_PER_UID)
		return p11g_err_set(err, P11G_E_LIMIT,
		                    "%d listings of yours are under way; wait for them",
		                    P11G_READ_PER_UID);
	if (!slot)
		return p11g_err_set(err, P11G_E_LIMIT, "%d listings are under way; ask again later",
		                    JOBS_MAX);
	if (w->fd < 0 && (p11g_mono_us() < w->no_start_until_us || start(o, w) < 0))
		return 0;

	uint64_t id = w->next_id;
	_cleanup_json_ json_t *msg =
	    json_pack("{s:I, s:s, s:o, s:O}", "job", (json_int_t)id, "verb", a->verb, "caller",
	              p11g_ident_to_json(caller), "args", a->args);
	_cleanup_free_ char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
	if (!text)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	size_t len = strlen(text);
	ssize_t n = len < MSG_MAX ? send(w->fd, text, len, MSG_DONTWAIT | MSG_NOSIGNAL) : -1;
	if (n < 0 && (len >= MSG_MAX || errno == EMSGSIZE))
		return 0; /* a caller in very many groups: read in the loop */
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS))
		return p11g_err_set(err, P11G_E_LIMIT,
		                    "approvald's listing process is busy; ask again later");
	if (n != (ssize_t)len) {
		worker_lost(o, w, "approvald's listing process ended; ask again");
		return 0;
	}
	w->next_id++;
	*slot = (struct job){.id = id, .uid = caller->uid, .since_us = now};
	*wake_id = P11G_READ_WAKE_BASE + id;
	return 1;
}

int p11g_read_job(struct p11g_ops *o, const struct p11g_ident *caller,
                  const struct p11g_read_job_args *a, uint64_t *wake_id, bool expired, char **frame,
                  size_t *frame_len, p11g_err *err)
{
	struct p11g_read_worker *w = worker_of(o);
	if (!w)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (!*wake_id)
		return submit(o, w, caller, a, wake_id, err);

	struct job *j =
	    *wake_id > P11G_READ_WAKE_BASE ? job_find(w, *wake_id - P11G_READ_WAKE_BASE) : NULL;
	if (!j)
		return p11g_err_set(err, P11G_E_INTERNAL, "the listing was lost; ask again");
	if (!j->done) {
		if (!expired)
			return 1;
		/* a page takes milliseconds of CPU: a reader that took this long is stuck, or (at
		 * SCHED_IDLE) got no CPU on a host kept busy; either way it is replaced */
		p11g_warn("listing process %d did not answer in time (stuck or starved); ended",
		          (int)w->pid);
		job_free(j);
		worker_lost(o, w, "approvald's listing process did not answer in time; ask again");
		return p11g_err_set(err, P11G_E_TIMEOUT,
		                    "the listing did not complete in time; ask again later");
	}
	char *f = j->frame;
	size_t len = j->len;
	j->frame = NULL;
	job_free(j);
	if (!f)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	*frame = f;
	*frame_len = len;
	return 0;
}

void p11g_read_job_cancel(struct p11g_ops *o, uint64_t wake_id)
{
	struct job *j = o->reader && wake_id > P11G_READ_WAKE_BASE
	                    ? job_find(o->reader, wake_id - P11G_READ_WAKE_BASE)
	                    : NULL;
	if (j)
		job_free(j); /* an answer still to come is dropped */
}

void p11g_read_worker_start(struct p11g_ops *o)
{
	struct p11g_read_worker *w = worker_of(o);
	if (w && w->fd < 0)
		start(o, w);
}

int p11g_read_worker_fd(struct p11g_ops *o)
{
	return o->reader ? o->reader->fd : -1;
}

void p11g_read_worker_ready(struct p11g_ops *o)
{
	struct p11g_read_worker *w = o->reader;
	while (w && w->fd >= 0) {
		ssize_t n = recv(w->fd, w->buf, MSG_MAX + 1, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			worker_lost(o, w, "approvald's listing process ended; ask again");
			return;
		}
		uint64_t id;
		uint32_t flen;
		memcpy(&id, w->buf, 8);
		if (n >= 12)
			memcpy(&flen, w->buf + 8, 4);
		if (n < 12 || n > MSG_MAX || ntohl(flen) != (uint32_t)(n - 12) || id == 0 ||
		    id >= w->next_id) {
			p11g_error("listing process %d answered nonsense; ended", (int)w->pid);
			worker_lost(o, w, "approvald's listing process failed; ask again");
			return;
		}
		struct job *j = job_find(w, id);
		char *f;
		if (!j || j->done)
			continue; /* its request gave up waiting */
		if ((f = malloc((size_t)n - 8)))
			memcpy(f, w->buf + 8, (size_t)n - 8);
		j->frame = f;
		j->len = (size_t)n - 8;
		j->done = true;
		w->answered++;
		wake(o, id);
	}
}

bool p11g_read_worker_exited(struct p11g_ops *o, pid_t pid, int status)
{
	struct p11g_read_worker *w = o->reader;
	if (!w || w->pid <= 0 || pid != w->pid)
		return false;
	w->pid = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		p11g_store_reader_check(o->store);
		p11g_warn("listing process %d ended (%s %d); the next page starts another",
		          (int)pid, WIFSIGNALED(status) ? "signal" : "exit",
		          WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	}
	/* its answers already sent are read first */
	p11g_read_worker_ready(o);
	if (w->fd >= 0)
		worker_lost(o, w, "approvald's listing process ended; ask again");
	return true;
}

void p11g_read_worker_free(struct p11g_ops *o)
{
	struct p11g_read_worker *w = o->reader;
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (w->pid > 0) {
		kill(w->pid, SIGKILL);
		while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	for (size_t i = 0; i < JOBS_MAX; i++)
		free(w->jobs[i].frame);
	free(w->buf);
	free(w);
	o->reader = NULL;
}
