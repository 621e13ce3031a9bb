/* approvald's socket server: one poll() loop, peer credentials, framing, limits, dispatch. */
#include "approvald/server.h"

#include "approvald/idcache.h"

#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <fcntl.h>

#include "approvald/listen.h"
#include "approvald/names.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define DEFAULT_SOCKET_MODE 0666
#define DEFAULT_MAX_CONNS   1024
#define DEFAULT_MAX_PER_UID 64
#define DEFAULT_IDLE_MS     60000
#define DEFAULT_FRAME_MS    10000
#define EXTRA_MAX           2               /* more listening sockets: PKCS#11's, the web page's */
#define FIXED_FDS           (3 + EXTRA_MAX) /* signalfd, the socket, the app's, the extras */
#define TICK_US             1000000
#define ACCEPT_BATCH        64      /* per wakeup, so a connect storm cannot starve readers */
#define ACCEPT_PAUSE_US     100000  /* after EMFILE & co: the listener would spin otherwise */
#define LOG_INTERVAL_US     1000000 /* one line per second for floods of the same event */

enum conn_state {
	CONN_READ,
	CONN_PARKED, /* a handler returned P11G_HANDLER_WAIT: nothing is read meanwhile */
	CONN_WRITE,
};

struct conn {
	int fd;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	bool adopted;             /* p11g_server_adopt: identity given, no idle timeout */
	const char *const *verbs; /* adopted: the only verbs it may send */
	/* p11g_server_adopt_web: one web page connection's channel; through the proxy, each
	 * request names its user ("as"), kept here while it runs */
	bool web, web_proxy;
	json_t *as;
	char via[48];
	bool deferred; /* a reply made in this round, sent once the round's commit is done */
	enum conn_state state;
	bool dead;
	/* Whichever applies to the state: idle, frame, write or wait deadline. */
	int64_t deadline_us;

	struct p11g_frame_reader in;

	char *out;
	size_t out_len, out_sent;

	json_t *parked_req;
	const struct p11g_handler *parked_handler;
	struct p11g_wait wait;
	bool woken;
	bool reader_waits; /* parked_req is a reader's, run after the round's commit */
};

/* Flood-prone warnings (limit hits, accept failures) go out at most once a
 * second, with a count of what was left out. */
struct ratelimit {
	int64_t last_us;
	unsigned suppressed;
};

struct p11g_server {
	char *socket_path;
	mode_t socket_mode;
	unsigned max_conns, max_per_uid;
	int idle_ms, frame_ms;
	struct p11g_server_ops ops;
	void *app;

	struct p11g_listener primary; /* on socket_path */
	int signal_fd;
	sigset_t old_mask;
	bool mask_saved;
	struct sigaction old_sigpipe;
	bool sigpipe_saved;

	struct conn **conns;
	size_t n_conns, cap_conns;
	struct pollfd *pfds;
	struct conn **pconns; /* pfds[i + FIXED_FDS] belongs to pconns[i] */
	size_t cap_pfds;

	/* More sockets (p11g_server_listen_extra): their connections are
	 * handed to their fn, never read here. */
	struct {
		struct p11g_listener l;
		char *path;
		p11g_accept_fn fn;
		void *arg;
	} extra[EXTRA_MAX];
	size_t n_extra;

	bool stop, any_woken, any_reader;
	bool in_round; /* between ops.round_begin and ops.round_end */
	struct p11g_idcache
	    ids; /* the callers of recent rounds (usable in a round, its readers, resumed ones) */
	uid_t web_refused_uid; /* p11g_server_adopt_web: a user the proxy may not name */
	int64_t next_tick_us, accept_paused_until_us;
	struct ratelimit rl_limit, rl_accept;
};

/* json_decrefp comes with jansson (>= 2.11). */
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

#define conn_log(level, c, fmt, ...)                                                               \
	p11g_log(level, "client uid %u pid %d: " fmt, (unsigned)(c)->uid, (int)(c)->pid,           \
	         ##__VA_ARGS__)

static bool ratelimit_ok(struct ratelimit *rl, int64_t now, unsigned *ret_suppressed)
{
	if (rl->last_us && now - rl->last_us < LOG_INTERVAL_US) {
		rl->suppressed++;
		return false;
	}
	*ret_suppressed = rl->suppressed;
	rl->suppressed = 0;
	rl->last_us = now;
	return true;
}

static const char *suppressed_note(unsigned suppressed, char *buf, size_t size)
{
	if (!suppressed)
		return "";
	snprintf(buf, size, " (%u more like it in the last second)", suppressed);
	return buf;
}

static int setup_signals(struct p11g_server *s, p11g_err *err)
{
	struct sigaction ign = {.sa_handler = SIG_IGN};
	sigset_t set;

	/* Belt and braces: every send already uses MSG_NOSIGNAL. */
	if (sigaction(SIGPIPE, &ign, &s->old_sigpipe) == 0)
		s->sigpipe_saved = true;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	/* Blocked from here on, so a SIGTERM between new and run is not lost
	 * (and does not kill us with the socket file left behind). */
	if (sigprocmask(SIG_BLOCK, &set, &s->old_mask) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot block signals: %m");
	s->mask_saved = true;
	s->signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s->signal_fd < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot create a signalfd: %m");
	return 0;
}

int p11g_server_new(const struct p11g_server_config *cfg, const struct p11g_server_ops *ops,
                    void *app, struct p11g_server **ret, p11g_err *err)
{
	struct p11g_server *s;

	if (!cfg || !ops || !ret)
		return p11g_err_set(err, P11G_E_INTERNAL, "p11g_server_new: missing argument");
	s = calloc(1, sizeof(*s));
	if (!s)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	s->primary.fd = -1;
	s->signal_fd = -1;
	for (size_t i = 0; i < EXTRA_MAX; i++)
		s->extra[i].l.fd = -1;
	s->ops = *ops;
	s->app = app;
	s->socket_mode = cfg->socket_mode ? cfg->socket_mode : DEFAULT_SOCKET_MODE;
	s->max_conns = cfg->max_conns ? cfg->max_conns : DEFAULT_MAX_CONNS;
	s->max_per_uid = cfg->max_conns_per_uid ? cfg->max_conns_per_uid : DEFAULT_MAX_PER_UID;
	s->idle_ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : DEFAULT_IDLE_MS;
	s->frame_ms = cfg->frame_timeout_ms > 0 ? cfg->frame_timeout_ms : DEFAULT_FRAME_MS;
	s->socket_path = strdup(cfg->socket_path ? cfg->socket_path : P11G_DEFAULT_SOCKET);
	if (!s->socket_path) {
		p11g_server_free(s);
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	if (setup_signals(s, err) < 0 ||
	    p11g_listen_path(s->socket_path, s->socket_mode, &s->primary, err) < 0) {
		p11g_server_free(s);
		return -1;
	}
	*ret = s;
	return 0;
}

/* ---- connections ------------------------------------------------------- */

static void conn_close(struct conn *c)
{
	if (c->dead)
		return;
	close(c->fd);
	c->fd = -1;
	p11g_frame_reader_clear(&c->in);
	free(c->out);
	c->out = NULL;
	json_decref(c->parked_req);
	c->parked_req = NULL;
	json_decref(c->as);
	c->as = NULL;
	c->dead = true;
}

/* Dead connections leave the table here, never while it is being walked. */
static void sweep_dead(struct p11g_server *s)
{
	size_t j = 0;

	for (size_t i = 0; i < s->n_conns; i++) {
		if (s->conns[i]->dead && s->conns[i]->state == CONN_PARKED && s->ops.parked_gone)
			s->ops.parked_gone(s->app, s->conns[i]->wait.op_id);
		if (s->conns[i]->dead)
			free(s->conns[i]);
		else
			s->conns[j++] = s->conns[i];
	}
	s->n_conns = j;
}

static unsigned conns_of_uid(const struct p11g_server *s, uid_t uid)
{
	unsigned n = 0;

	for (size_t i = 0; i < s->n_conns; i++)
		if (!s->conns[i]->dead && s->conns[i]->uid == uid)
			n++;
	return n;
}

static void set_idle(struct p11g_server *s, struct conn *c, int64_t now)
{
	c->state = CONN_READ;
	c->deadline_us = c->adopted ? INT64_MAX : now + (int64_t)s->idle_ms * 1000;
}

static void conn_flush(struct p11g_server *s, struct conn *c, int64_t now)
{
	while (c->out_sent < c->out_len) {
		ssize_t r = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r >= 0) {
			c->out_sent += (size_t)r;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		conn_log(P11G_LOG_DEBUG, c, "gone before reading its reply: %m");
		conn_close(c);
		return;
	}
	free(c->out);
	c->out = NULL;
	set_idle(s, c, now);
}

/* Queues rep (consumed) and starts writing it; the write timeout runs from
 * here so a client that stops reading cannot hold its buffers forever. */
/* Sends out (a whole frame, taken) once the round's writes are durable. */
static void conn_reply_frame(struct p11g_server *s, struct conn *c, char *out, size_t len,
                             int64_t now)
{
	c->out = out;
	c->out_len = len;
	c->out_sent = 0;
	c->state = CONN_WRITE;
	c->deadline_us = now + (int64_t)s->frame_ms * 1000;
	if (s->in_round) {
		/* Not before the round's writes are durable. */
		c->deferred = true;
		return;
	}
	conn_flush(s, c, now);
}

static void conn_reply(struct p11g_server *s, struct conn *c, json_t *rep, int64_t now)
{
	size_t len = 0;
	char *out = rep ? p11g_frame_encode(rep, &len) : NULL;

	json_decref(rep);
	if (!out) {
		conn_log(P11G_LOG_ERROR, c, "reply too large for a frame or out of memory");
		json_t *fallback =
		    p11g_wire_reply_error(P11G_E_INTERNAL, "the reply could not be encoded "
		                                           "(too large or out of memory)");
		out = fallback ? p11g_frame_encode(fallback, &len) : NULL;
		json_decref(fallback);
		if (!out) {
			conn_close(c);
			return;
		}
	}
	conn_reply_frame(s, c, out, len, now);
}

static void conn_reply_error(struct p11g_server *s, struct conn *c, const char *code,
                             const char *message, int64_t now)
{
	conn_reply(s, c, p11g_wire_reply_error(code, message), now);
}

/* Ends a round: commits its writes, then sends its replies (or, when the
 * commit failed, an error in place of each). */
static void round_end(struct p11g_server *s)
{
	p11g_err err = {0};
	int64_t now;
	int r;

	s->in_round = false;
	r = s->ops.round_end ? s->ops.round_end(s->app, &err) : 0;
	now = p11g_mono_us();
	for (size_t i = 0; i < s->n_conns; i++) {
		struct conn *c = s->conns[i];
		if (c->dead || !c->deferred)
			continue;
		c->deferred = false;
		if (r < 0) {
			free(c->out);
			c->out = NULL;
			conn_reply_error(s, c, err.code ? err.code : P11G_E_STORE,
			                 err.msg[0] ? err.msg : "could not record", now);
			continue;
		}
		conn_flush(s, c, now);
	}
}

/* The caller of c's request: user name and groups from the databases, shared by the requests
 * of a round (idcache.h): a group change applies from the next round. */
static int caller_of(struct p11g_server *s, const struct conn *c, struct p11g_ident *ret,
                     bool *ret_owned)
{
	return p11g_idcache_get(&s->ids, c->uid, c->gid, c->pid, ret, ret_owned);
}

/*
 * The caller of a web page connection's request (p11g_server_adopt_web): its peer's, from the
 * kernel, as for every connection; or, on a connection from the trusted proxy, the user the
 * request names in "as": {"user": NAME}, which approvald-web read from the proxy's header.
 * Such a user is a local account (the name service's, as for every principal and group here),
 * never root nor approvald's own: approvals count people by uid, and the proxy vouches for
 * names, not for the host's administrators.
 */
static int web_caller_of(struct p11g_server *s, const struct conn *c, struct p11g_ident *ret,
                         bool *ret_owned, p11g_err *err)
{
	uid_t uid = c->uid;
	gid_t gid = c->gid;
	pid_t pid = c->pid;

	if (!c->web_proxy && c->as)
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "only the trusted proxy's connections name their user");
	if (c->web_proxy) {
		const char *name = json_string_value(json_object_get(c->as, "user"));
		struct passwd pw, *found = NULL;
		char buf[4096];
		if (!json_is_object(c->as) || json_object_size(c->as) != 1 || !name || !*name ||
		    strlen(name) >= sizeof(ret->user))
			return p11g_err_set(err, P11G_E_FORBIDDEN,
			                    "a request through the proxy names its user");
		int r = getpwnam_r(name, &pw, buf, sizeof(buf), &found);
		if (r != 0)
			return p11g_err_set(err, P11G_E_INTERNAL,
			                    "cannot look up the user the proxy named: %s",
			                    strerror(r));
		if (!found)
			return p11g_err_set(err, P11G_E_FORBIDDEN,
			                    "the proxy named a user who has no account on this "
			                    "host");
		if (pw.pw_uid == 0 || pw.pw_uid == s->web_refused_uid)
			return p11g_err_set(err, P11G_E_FORBIDDEN,
			                    "the proxy may not name root or approvald's own user");
		uid = pw.pw_uid;
		gid = pw.pw_gid;
		pid = 0;
	}
	if (p11g_idcache_get(&s->ids, uid, gid, pid, ret, ret_owned) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "approvald could not resolve your identity");
	snprintf(ret->via, sizeof(ret->via), "%s", c->via);
	return 0;
}

/* Runs h for req (first call or resumed) and answers, or parks. */
static void run_handler(struct p11g_server *s, struct conn *c, const struct p11g_handler *h,
                        json_t *req, int64_t now)
{
	struct p11g_ident caller;
	bool owned = false;
	p11g_err err = {0};
	json_t *result = NULL;
	int rc;

	memset(&caller, 0, sizeof(caller));
	if (c->web && web_caller_of(s, c, &caller, &owned, &err) < 0) {
		conn_reply_error(s, c, err.code, err.msg, now);
		return;
	}
	if (!c->web && caller_of(s, c, &caller, &owned) < 0) {
		conn_log(P11G_LOG_ERROR, c, "cannot resolve the caller's identity");
		conn_reply_error(s, c, P11G_E_INTERNAL, "approvald could not resolve your identity",
		                 now);
		return;
	}
	rc = h->fn(s->app, &caller, req, &result, &err, &c->wait);
	if (owned)
		p11g_ident_clear(&caller);
	now = p11g_mono_us();

	char *frame = c->wait.frame;
	c->wait.frame = NULL;
	if (rc == 0 && frame) {
		json_decref(result);
		conn_reply_frame(s, c, frame, c->wait.frame_len, now);
		return;
	}
	free(frame);
	if (rc == 0) {
		conn_reply(s, c, p11g_wire_reply_ok(result ? result : json_object()), now);
		return;
	}
	json_decref(result);
	if (rc == P11G_HANDLER_WAIT) {
		/* A handler that keeps waiting past its deadline would never
		 * answer; that is a bug, and the client gets told. */
		if (c->wait.resumed && c->wait.deadline_us <= now) {
			p11g_error("handler for \"%s\" asked to wait past its deadline", h->verb);
			conn_reply_error(s, c, P11G_E_INTERNAL, "internal error while waiting",
			                 now);
			return;
		}
		c->parked_req = json_incref(req);
		c->parked_handler = h;
		c->woken = false;
		c->state = CONN_PARKED;
		c->deadline_us = c->wait.deadline_us;
		return;
	}
	if (rc != -1)
		p11g_error("handler for \"%s\" returned %d", h->verb, rc);
	conn_reply_error(s, c, err.code ? err.code : P11G_E_INTERNAL,
	                 err.msg[0] ? err.msg : "internal error", now);
}

static const struct p11g_handler *handler_for(const struct p11g_server *s, const char *verb)
{
	for (size_t i = 0; i < s->ops.n_handlers; i++)
		if (s->ops.handlers[i].verb && !strcmp(s->ops.handlers[i].verb, verb))
			return &s->ops.handlers[i];
	return NULL;
}

static bool verb_listed(const char *const *verbs, const char *verb)
{
	for (; *verbs; verbs++)
		if (!strcmp(*verbs, verb))
			return true;
	return false;
}

static void dispatch(struct p11g_server *s, struct conn *c, int64_t now)
{
	_cleanup_json_ json_t *req = NULL;
	_cleanup_free_ char *body = NULL;
	p11g_err err = {0};
	const struct p11g_handler *h = NULL;
	const char *verb;
	size_t len;

	body = p11g_frame_reader_take(&c->in, &len);
	req = p11g_wire_decode(body, len, &err);
	if (!req) {
		/* err.msg is our own sentence, never payload bytes. */
		conn_log(P11G_LOG_WARN, c, "%s; closing the connection", err.msg);
		conn_close(c);
		return;
	}
	if (c->web) {
		/* who asks: kept for the handler (and a parked request's resumption) */
		json_decref(c->as);
		c->as = json_incref(json_object_get(req, "as"));
		json_object_del(req, "as");
	}
	/* From here on the frame was sound: errors are replies, the
	 * connection stays. */
	verb = p11g_wire_request_verb(req, &err);
	if (verb && (!(h = handler_for(s, verb)) ||
	             (h->internal && !(c->verbs && verb_listed(c->verbs, verb))))) {
		h = NULL;
		p11g_err_set(&err, P11G_E_UNKNOWN_VERB, "unknown verb \"%.64s\"", verb);
	}
	if (verb && c->verbs && !verb_listed(c->verbs, verb)) {
		conn_log(P11G_LOG_WARN, c,
		         "its %s process sent \"%.64s\", which it may not; refused",
		         c->web ? "web" : "PKCS#11 host", verb);
		p11g_err_set(&err, P11G_E_FORBIDDEN, "\"%.64s\" is not served to a %s", verb,
		             c->web ? "web page" : "PKCS#11 host");
		h = NULL;
	}
	if (!verb || !h) {
		conn_reply_error(s, c, err.code, err.msg, now);
		return;
	}
	memset(&c->wait, 0, sizeof(c->wait));
	if (s->in_round && h->reader) {
		/* Readers run once the round's writes are committed and answered: a use read in
		 * the same round as a listing page does not wait for the page. */
		c->parked_req = json_incref(req);
		c->parked_handler = h;
		c->reader_waits = s->any_reader = true;
		return;
	}
	run_handler(s, c, h, req, now);
}

static void run_readers(struct p11g_server *s)
{
	for (int heavy = 0; heavy < 2; heavy++)
		for (size_t i = 0; s->any_reader && i < s->n_conns; i++) {
			struct conn *c = s->conns[i];
			if (!c->reader_waits || c->parked_handler->heavy != heavy)
				continue;
			/* the request is ours before the handler runs: a reply that cannot be
			 * sent closes the connection, which frees what it still holds */
			_cleanup_json_ json_t *req = c->parked_req;
			c->parked_req = NULL;
			c->reader_waits = false;
			if (!c->dead)
				run_handler(s, c, c->parked_handler, req, p11g_mono_us());
		}
	s->any_reader = false;
}

static void conn_read(struct p11g_server *s, struct conn *c, int64_t now)
{
	for (;;) {
		bool started = p11g_frame_reader_started(&c->in);
		size_t want;
		void *dst = p11g_frame_reader_next(&c->in, &want);
		ssize_t r = recv(c->fd, dst, want, MSG_DONTWAIT);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			conn_log(P11G_LOG_DEBUG, c, "read failed: %m");
			conn_close(c);
			return;
		}
		if (r == 0) {
			if (!started)
				conn_log(P11G_LOG_DEBUG, c, "disconnected");
			else
				conn_log(P11G_LOG_INFO, c, "disconnected in the middle of a frame");
			conn_close(c);
			return;
		}
		/* The first byte starts the frame clock: a trickling client
		 * cannot hold a connection past it. */
		if (!started)
			c->deadline_us = now + (int64_t)s->frame_ms * 1000;
		switch (p11g_frame_reader_add(&c->in, (size_t)r)) {
		case 0:
			continue;
		case 1:
			dispatch(s, c, now);
			/* One request per wakeup; poll reports pipelined ones. */
			return;
		case -EMSGSIZE:
			conn_log(P11G_LOG_WARN, c,
			         "frame length %u outside 1..%u; closing the connection", c->in.len,
			         P11G_FRAME_MAX);
			break;
		default:
			conn_log(P11G_LOG_ERROR, c, "out of memory for a %u-byte frame", c->in.len);
			break;
		}
		conn_close(c);
		return;
	}
}

/* A reply to a connection we will not keep: one non-blocking send of a small
 * frame into an empty socket buffer, then close. */
static void refuse(struct p11g_server *s, int fd, const struct ucred *uc, const char *message,
                   int64_t now)
{
	_cleanup_json_ json_t *rep = p11g_wire_reply_error(P11G_E_LIMIT, message);
	_cleanup_free_ char *out = NULL;
	size_t len = 0;
	unsigned suppressed;
	char note[64];

	if (rep && (out = p11g_frame_encode(rep, &len)))
		(void)send(fd, out, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
	if (ratelimit_ok(&s->rl_limit, now, &suppressed))
		p11g_warn("client uid %u pid %d: %s; connection refused%s", (unsigned)uc->uid,
		          (int)uc->pid, message, suppressed_note(suppressed, note, sizeof(note)));
}

/* 0, or -1 with the limit's sentence in msg (P11G_E_LIMIT) or an internal error. */
static int check_limits(const struct p11g_server *s, uid_t uid, p11g_err *msg)
{
	if (s->n_conns >= s->max_conns)
		return p11g_err_set(msg, P11G_E_LIMIT,
		                    "approvald is serving its maximum of %u connections; try again "
		                    "later",
		                    s->max_conns);
	if (conns_of_uid(s, uid) >= s->max_per_uid)
		return p11g_err_set(msg, P11G_E_LIMIT,
		                    "uid %u already has %u connections open to approvald, the "
		                    "limit; close one and retry",
		                    (unsigned)uid, s->max_per_uid);
	return 0;
}

/* Takes fd into the table (closing it on failure). */
static int add_conn(struct p11g_server *s, int fd, const struct ucred *uc, bool adopted,
                    int64_t now, p11g_err *err)
{
	if (s->n_conns == s->cap_conns) {
		size_t cap = s->cap_conns ? 2 * s->cap_conns : 16;
		struct conn **v = reallocarray(s->conns, cap, sizeof(*v));
		if (!v) {
			close(fd);
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		}
		s->conns = v;
		s->cap_conns = cap;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	c->fd = fd;
	c->uid = uc->uid;
	c->gid = uc->gid;
	c->pid = uc->pid;
	c->adopted = adopted;
	set_idle(s, c, now);
	s->conns[s->n_conns++] = c;
	conn_log(P11G_LOG_DEBUG, c, "connected%s", adopted ? " (through the PKCS#11 socket)" : "");
	return 0;
}

int p11g_server_adopt(struct p11g_server *s, int fd, const struct ucred *peer,
                      const char *const *verbs, p11g_err *err)
{
	int fl = fcntl(fd, F_GETFL);

	if (check_limits(s, peer->uid, err) < 0) {
		close(fd);
		return -1;
	}
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		close(fd);
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot set up a connection: %m");
	}
	if (add_conn(s, fd, peer, true, p11g_mono_us(), err) < 0)
		return -1;
	s->conns[s->n_conns - 1]->verbs = verbs;
	return 0;
}

int p11g_server_adopt_web(struct p11g_server *s, int fd, const struct ucred *peer,
                          const char *const *verbs, bool proxy, uid_t refused_uid, p11g_err *err)
{
	if (p11g_server_adopt(s, fd, peer, verbs, err) < 0)
		return -1;
	struct conn *c = s->conns[s->n_conns - 1];
	c->web = true;
	c->web_proxy = proxy;
	snprintf(c->via, sizeof(c->via), "web, %s uid %u", proxy ? "proxy" : "peer",
	         (unsigned)peer->uid);
	s->web_refused_uid = refused_uid;
	return 0;
}

/* accept4 on a listener; -1 when there is nothing (more) to take. */
static int accept_one(struct p11g_server *s, int lfd, struct ucred *uc, int64_t now)
{
	unsigned suppressed;
	char note[64];

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return -1;
			if (ratelimit_ok(&s->rl_accept, now, &suppressed))
				p11g_warn("accept failed: %m%s",
				          suppressed_note(suppressed, note, sizeof(note)));
			/* Out of fds or memory: the listener stays readable, so
			 * rest it briefly instead of spinning. */
			s->accept_paused_until_us = now + ACCEPT_PAUSE_US;
			return -1;
		}
		socklen_t uclen = sizeof(*uc);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, uc, &uclen) < 0 ||
		    uclen != sizeof(*uc)) {
			p11g_warn("cannot read the credentials of a new connection: %m");
			close(fd);
			continue;
		}
		return fd;
	}
}

static void accept_clients(struct p11g_server *s, int64_t now)
{
	p11g_err msg;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct ucred uc;
		int fd = accept_one(s, s->primary.fd, &uc, now);
		if (fd < 0)
			return;
		if (check_limits(s, uc.uid, &msg) < 0) {
			refuse(s, fd, &uc, msg.msg, now);
			continue;
		}
		if (add_conn(s, fd, &uc, false, now, &msg) < 0)
			return;
	}
}

static void accept_extra(struct p11g_server *s, size_t x, int64_t now)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct ucred uc;
		int fd = accept_one(s, s->extra[x].l.fd, &uc, now);
		if (fd < 0)
			return;
		s->extra[x].fn(s->extra[x].arg ? s->extra[x].arg : s->app, fd, &uc);
	}
}

int p11g_server_listen_extra(struct p11g_server *s, const char *path, mode_t mode,
                             p11g_accept_fn fn, p11g_err *err)
{
	return p11g_server_listen_extra_arg(s, path, mode, fn, NULL, err);
}

int p11g_server_listen_extra_arg(struct p11g_server *s, const char *path, mode_t mode,
                                 p11g_accept_fn fn, void *arg, p11g_err *err)
{
	if (s->n_extra == EXTRA_MAX)
		return p11g_err_set(err, P11G_E_INTERNAL, "no more sockets can be served");
	size_t x = s->n_extra;
	if (!(s->extra[x].path = strdup(path)))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	s->extra[x].fn = fn;
	s->extra[x].arg = arg;
	s->n_extra++;
	if (p11g_listen_path(path, mode, &s->extra[x].l, err) < 0) {
		p11g_listener_close(&s->extra[x].l, s->extra[x].path);
		return -1;
	}
	return 0;
}

void p11g_server_close_in_child(struct p11g_server *s)
{
	/* Nothing is freed or unlinked: the parent still owns all of it. */
	if (s->primary.fd >= 0)
		close(s->primary.fd);
	for (size_t i = 0; i < s->n_extra; i++)
		if (s->extra[i].l.fd >= 0)
			close(s->extra[i].l.fd);
	if (s->signal_fd >= 0)
		close(s->signal_fd);
	for (size_t i = 0; i < s->n_conns; i++)
		if (!s->conns[i]->dead)
			close(s->conns[i]->fd);
	if (s->mask_saved)
		sigprocmask(SIG_SETMASK, &s->old_mask, NULL);
}

/* Parked requests whose operation changed or whose deadline came.  Their callers' identities
 * come from the cache, as a round's do: a listing page resumes its request once a page, and a
 * fresh lookup each time (the user and group files read) held every signer behind it. */
static void resume_parked(struct p11g_server *s, int64_t now)
{
	bool cached = false;
	s->any_woken = false;
	/* n_conns is read each round but cannot change: handlers do not accept. */
	for (size_t i = 0; i < s->n_conns; i++) {
		struct conn *c = s->conns[i];
		if (c->dead || c->state != CONN_PARKED || (!c->woken && now < c->deadline_us))
			continue;
		if (!cached) {
			/* no handler runs, so nothing borrows a cached identity (idcache.h) */
			p11g_idcache_refresh(&s->ids, now);
			s->ids.usable = cached = true;
		}
		json_t *req = c->parked_req;
		c->parked_req = NULL;
		c->woken = false;
		c->wait.resumed = true;
		run_handler(s, c, c->parked_handler, req, now);
		json_decref(req);
	}
	s->ids.usable = false;
}

static void expire(struct p11g_server *s, int64_t now)
{
	for (size_t i = 0; i < s->n_conns; i++) {
		struct conn *c = s->conns[i];
		if (c->dead || c->state == CONN_PARKED || now < c->deadline_us)
			continue;
		if (c->state == CONN_WRITE)
			conn_log(P11G_LOG_WARN, c,
			         "did not read its reply within %d ms; closing the connection",
			         s->frame_ms);
		else if (p11g_frame_reader_started(&c->in))
			conn_log(P11G_LOG_WARN, c,
			         "did not complete a frame within %d ms; closing the connection",
			         s->frame_ms);
		else
			conn_log(P11G_LOG_DEBUG, c, "idle for %d ms; closing the connection",
			         s->idle_ms);
		conn_close(c);
	}
}

static void handle_signals(struct p11g_server *s)
{
	struct signalfd_siginfo si;

	while (read(s->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			p11g_info("stopping on %s", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
			s->stop = true;
			break;
		case SIGCHLD:
			for (;;) {
				int status;
				pid_t pid = waitpid(-1, &status, WNOHANG);
				if (pid <= 0)
					break;
				if (s->ops.child_exited)
					s->ops.child_exited(s->app, pid, status);
			}
			break;
		case SIGHUP:
			p11g_info("SIGHUP: reloading");
			if (s->ops.reload)
				s->ops.reload(s->app);
			break;
		}
	}
}

static int grow_pfds(struct p11g_server *s, size_t need)
{
	if (need <= s->cap_pfds)
		return 0;
	size_t cap = need < 64 ? 64 : 2 * need;
	struct pollfd *p = reallocarray(s->pfds, cap, sizeof(*p));
	if (!p)
		return -ENOMEM;
	s->pfds = p;
	struct conn **pc = reallocarray(s->pconns, cap, sizeof(*pc));
	if (!pc)
		return -ENOMEM;
	s->pconns = pc;
	s->cap_pfds = cap;
	return 0;
}

static int poll_timeout_ms(const struct p11g_server *s, int64_t now)
{
	int64_t next = s->next_tick_us;

	if (s->any_woken)
		return 0;
	for (size_t i = 0; i < s->n_conns; i++)
		if (s->conns[i]->deadline_us < next)
			next = s->conns[i]->deadline_us;
	if (s->accept_paused_until_us > now && s->accept_paused_until_us < next)
		next = s->accept_paused_until_us;
	if (next <= now)
		return 0;
	/* Rounded up: waking a millisecond early would only spin. */
	int64_t ms = (next - now + 999) / 1000;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

int p11g_server_run(struct p11g_server *s)
{
	s->stop = false;
	s->next_tick_us = p11g_mono_us() + TICK_US;

	while (!s->stop) {
		int64_t now = p11g_mono_us();
		size_t n = FIXED_FDS;

		resume_parked(s, now);
		sweep_dead(s);
		if (grow_pfds(s, s->n_conns + FIXED_FDS) < 0) {
			/* Serve what fits rather than die: retry next round. */
			p11g_error("out of memory for the poll set");
			poll(NULL, 0, 10);
			continue;
		}
		s->pfds[0] = (struct pollfd){.fd = s->signal_fd, .events = POLLIN};
		s->pfds[1] = (struct pollfd){
		    .fd = s->accept_paused_until_us > now ? -1 : s->primary.fd,
		    .events = POLLIN,
		};
		s->pfds[2] = (struct pollfd){.fd = s->ops.app_fd ? s->ops.app_fd(s->app) : -1,
		                             .events = POLLIN};
		for (size_t x = 0; x < EXTRA_MAX; x++)
			s->pfds[3 + x] = (struct pollfd){
			    .fd = s->accept_paused_until_us > now || x >= s->n_extra
			              ? -1
			              : s->extra[x].l.fd,
			    .events = POLLIN,
			};
		for (size_t i = 0; i < s->n_conns; i++) {
			struct conn *c = s->conns[i];
			short ev = c->state == CONN_WRITE    ? POLLOUT
			           : c->state == CONN_PARKED ? 0 /* HUP still reported */
			                                     : POLLIN;
			s->pfds[n] = (struct pollfd){.fd = c->fd, .events = ev};
			s->pconns[n - FIXED_FDS] = c;
			n++;
		}

		int r = poll(s->pfds, n, poll_timeout_ms(s, now));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOMEM) {
				poll(NULL, 0, 10);
				continue;
			}
			p11g_error("poll failed: %m");
			return -1;
		}
		now = p11g_mono_us();
		if (s->pfds[0].revents)
			handle_signals(s);
		if (s->pfds[1].revents & POLLIN)
			accept_clients(s, now);
		for (size_t x = 0; x < s->n_extra; x++)
			if (s->pfds[3 + x].revents & POLLIN)
				accept_extra(s, x, now);
		if (s->pfds[2].revents && s->ops.app_ready)
			s->ops.app_ready(s->app);
		if (s->ops.round_begin)
			s->ops.round_begin(s->app);
		p11g_idcache_refresh(&s->ids, now);
		s->in_round = s->ids.usable = true;
		for (size_t i = FIXED_FDS; i < n; i++) {
			struct conn *c = s->pconns[i - FIXED_FDS];
			short rev = s->pfds[i].revents;
			if (!rev || c->dead)
				continue;
			switch (c->state) {
			case CONN_PARKED:
				if (rev & (POLLHUP | POLLERR)) {
					conn_log(P11G_LOG_DEBUG, c, "hung up while waiting");
					conn_close(c);
				}
				break;
			case CONN_WRITE:
				conn_flush(s, c, now);
				break;
			case CONN_READ:
				conn_read(s, c, now);
				break;
			}
		}
		round_end(s);
		run_readers(s);
		s->ids.usable = false;
		expire(s, now);
		if (now >= s->next_tick_us) {
			if (s->ops.tick)
				s->ops.tick(s->app);
			s->next_tick_us = now + TICK_US;
		}
	}
	return 0;
}

void p11g_server_wake(struct p11g_server *s, uint64_t op_id)
{
	/* Only marks: the handlers run from the loop, not inside whatever
	 * handler changed the operation. */
	for (size_t i = 0; i < s->n_conns; i++) {
		struct conn *c = s->conns[i];
		if (!c->dead && c->state == CONN_PARKED && c->wait.op_id == op_id) {
			c->woken = true;
			s->any_woken = true;
		}
	}
}

void p11g_server_free(struct p11g_server *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_conns; i++) {
		conn_close(s->conns[i]);
		free(s->conns[i]);
	}
	free(s->conns);
	free(s->pfds);
	free(s->pconns);
	p11g_idcache_clear(&s->ids);
	for (size_t i = 0; i < s->n_extra; i++) {
		p11g_listener_close(&s->extra[i].l, s->extra[i].path);
		free(s->extra[i].path);
	}
	p11g_listener_close(&s->primary, s->socket_path);
	if (s->signal_fd >= 0) {
		/* Drained first: a SIGHUP still pending would kill us (its
		 * default action) the moment the mask is restored. */
		struct signalfd_siginfo si;
		while (read(s->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			;
		close(s->signal_fd);
	}
	if (s->mask_saved)
		sigprocmask(SIG_SETMASK, &s->old_mask, NULL);
	if (s->sigpipe_saved)
		sigaction(SIGPIPE, &s->old_sigpipe, NULL);
	free(s->socket_path);
	free(s);
}
