/* approvald's web page (issue 20): approvald accepts on web_socket and hands each connection,
 * with a channel of its own to approvald, to approvald-web, which speaks HTTP (web.c). */
#ifndef P11GATE_WEB_H
#define P11GATE_WEB_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "approvald/listen.h"
#include "approvald/server.h"

#define P11G_WEB_PROGRAM             "approvald-web"
#define P11G_WEB_USER_HEADER_DEFAULT "X-Remote-User"

struct p11g_web_config {
	char *socket;      /* NULL: no web page */
	char *proxy_user;  /* the proxy's account (name or uid), or NULL */
	char *user_header; /* NULL: X-Remote-User */
};

struct p11g_web {
	const struct p11g_web_config *cfg;
	struct p11g_server *server;
	int ctl;         /* to approvald-web: connections handed over; -1: none */
	uid_t proxy_uid; /* (uid_t)-1: no proxy */
	int64_t last_log_us;
	unsigned dropped;
	char program[4096];
	pid_t pid;
	int64_t start_after_us; /* after an exit: not before this */
	int64_t backoff_us;
	int64_t started_us;
};

void p11g_web_config_clear(struct p11g_web_config *cfg);
/* Listens on web_socket (a socket of s) and starts approvald-web.  0 (also when no web_socket
 * is set), or -1 with err. */
int p11g_web_start(struct p11g_web *w, const struct p11g_web_config *cfg, struct p11g_server *s,
                   p11g_err *err);
/* About once a second: starts approvald-web again when it ended. */
void p11g_web_tick(struct p11g_web *w);
/* true when pid was approvald-web (then started again later). */
bool p11g_web_exited(struct p11g_web *w, pid_t pid, int status);
/* Stops approvald-web (the server removes the socket). */
void p11g_web_stop(struct p11g_web *w);

#endif
