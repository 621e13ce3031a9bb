/* approvald's socket server: accept, peer credentials, framing, limits and verb dispatch. */
#ifndef P11GATE_SERVER_H
#define P11GATE_SERVER_H

#include <jansson.h>
#include <sys/types.h>

#include "p11gate/common.h"
#include "policy/policy.h"

struct p11g_server_config {
	const char *socket_path;
	mode_t socket_mode;         /* 0666 */
	unsigned max_conns;         /* all peers; default 1024 */
	unsigned max_conns_per_uid; /* default 64 */
	int idle_timeout_ms;        /* no request started within this: close; default 60000 */
	int frame_timeout_ms;       /* a started frame must complete within this; default 10000 */
};

/* A parked request (the wait verb): filled by a handler that returns
 * P11G_HANDLER_WAIT; the server keeps it and calls the handler again with
 * resumed = true when p11g_server_wake(op_id) is called or the deadline
 * passes.  The handler must answer (0 or -1) when now >= deadline_us. */
struct p11g_wait {
	uint64_t op_id;
	int64_t deadline_us; /* p11g_mono_us() clock */
	bool resumed;
	/* A handler returning 0 with this set (malloc'd: a whole reply frame, header included,
	 * which the server frees) answers with it instead of *ret_result. */
	char *frame;
	size_t frame_len;
};

#define P11G_HANDLER_WAIT 1

/*
 * A verb handler.  caller is resolved for this request (SO_PEERCRED
 * uid/gid/pid of the connection, groups from the group database now; the
 * requests of one poll round, and resumed ones, share one lookup per uid and
 * gid, checked against the files' changes and at most a second old).
 * Returns 0 with *ret_result (a new object), -1 with err set, or
 * P11G_HANDLER_WAIT with *wait filled.
 */
typedef int (*p11g_handler_fn)(void *app, const struct p11g_ident *caller, const json_t *req,
                               json_t **ret_result, p11g_err *err, struct p11g_wait *wait);

struct p11g_handler {
	const char *verb;
	p11g_handler_fn fn;
	/* reads only: run after the round's commit and replies, outside its batch; heavy ones
	 * (a listing page) after the others */
	bool reader, heavy;
	/* approvald's own helpers' verbs: served only on an adopted connection that lists it
	 * (p11g_server_adopt's verbs); from anyone else an unknown verb */
	bool internal;
};

struct p11g_server_ops {
	const struct p11g_handler *handlers;
	size_t n_handlers;
	void (*tick)(void *app);   /* about once a second (expiry sweeps) */
	void (*reload)(void *app); /* on SIGHUP */
	/* Around the requests of one poll round (group commit): replies made
	 * in between are sent only after round_end returned 0; when it fails
	 * each becomes a store_error reply with its message.  Both optional. */
	void (*round_begin)(void *app);
	int (*round_end)(void *app, p11g_err *err);
	/* A child process ended (reaped on SIGCHLD); NULL: reaped silently. */
	void (*child_exited)(void *app, pid_t pid, int status);
	/* One more descriptor polled for reading (-1: none now), and what to do when it is
	 * readable (before the round's requests are read).  Both optional. */
	int (*app_fd)(void *app);
	void (*app_ready)(void *app);
	/* A parked request's connection closed: what it waited on (wait.op_id) is nobody's. */
	void (*parked_gone)(void *app, uint64_t wake_id);
};

struct ucred;
/* A connection on the second socket: fd (non-blocking, close-on-exec) and
 * its peer's credentials now belong to the callee. */
typedef void (*p11g_accept_fn)(void *app, int fd, const struct ucred *peer);

struct p11g_server;

/* Binds and listens (removing a stale socket file, refusing to start if a
 * live daemon answers on it).  Errors: -1 with err naming the path. */
int p11g_server_new(const struct p11g_server_config *cfg, const struct p11g_server_ops *ops,
                    void *app, struct p11g_server **ret, p11g_err *err);
/* A second listening socket whose connections go to fn (approvald's
 * PKCS#11 socket).  Removed by p11g_server_free. */
int p11g_server_listen_extra(struct p11g_server *s, const char *path, mode_t mode,
                             p11g_accept_fn fn, p11g_err *err);
/* The same with fn called with arg instead of the server's app (at most two more sockets). */
int p11g_server_listen_extra_arg(struct p11g_server *s, const char *path, mode_t mode,
                                 p11g_accept_fn fn, void *arg, p11g_err *err);
/* Serves fd as a connection of peer (identity given, not read from fd: the
 * other end is a process approvald started for that peer).  Counts against
 * the connection limits; no idle timeout.  verbs (NULL-terminated, kept;
 * NULL: all) are the only verbs it may send: any other is refused with
 * P11G_E_FORBIDDEN and a warning naming the peer.  On error fd is closed and
 * err says why (P11G_E_LIMIT for a limit). */
int p11g_server_adopt(struct p11g_server *s, int fd, const struct ucred *peer,
                      const char *const *verbs, p11g_err *err);
/* As p11g_server_adopt, for the channel of one connection to the web page (web.c): peer is
 * that connection's peer, who asks; or, with proxy (peer is the trusted proxy), each request
 * names the user the proxy authenticated in "as": {"user": NAME}, who must have an account here
 * and be neither root nor refused_uid.  Groups come from the group database as for every
 * caller, and the audit records how they came ("via": "web, peer uid N" or "web, proxy uid
 * N"). */
int p11g_server_adopt_web(struct p11g_server *s, int fd, const struct ucred *peer,
                          const char *const *verbs, bool proxy, uid_t refused_uid, p11g_err *err);
/* In a child after fork: closes every descriptor the server holds (sockets,
 * connections, signalfd) without removing files, restores the signal mask. */
void p11g_server_close_in_child(struct p11g_server *s);
/* Serves until SIGTERM or SIGINT; 0 on a clean stop. */
int p11g_server_run(struct p11g_server *s);
/* Re-runs the handlers parked on op_id (after a state change). */
void p11g_server_wake(struct p11g_server *s, uint64_t op_id);
/* Closes every connection and removes the socket file. */
void p11g_server_free(struct p11g_server *s);

#endif
