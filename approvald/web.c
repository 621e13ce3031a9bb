/* approvald's side of the web page.  approvald accepts the connections of web_socket itself
 * and reads each one's peer from the kernel, as on its own socket.  For each it makes a channel,
 * a connection of approvald's server limited to the verbs a page needs and whose caller is that
 * peer (p11g_server_adopt_web), and hands the connection and the channel's other end to
 * approvald-web (SCM_RIGHTS), which speaks HTTP on the one and asks on the other.  Only a
 * connection from the trusted proxy's uid may name its user (the proxy's header).  So even an
 * approvald-web that ran someone else's code could act only as the peers connected to it, and
 * HTTP, HTML and the browser's input never enter approvald. */
#include "approvald/web.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "approvald/progpath.h"
#include "p11gate/errors.h"
#include "p11gate/log.h"

#define BACKOFF_MIN_US 500000
#define BACKOFF_MAX_US 30000000
#define STABLE_US      60000000 /* a process that lived this long starts again at once */

/* What a page asks: read, and decide.  Never request, use, revoke or the audit. */
static const char *const web_verbs[] = {"list", "show", "approve", "reject", "status", NULL};

void p11g_web_config_clear(struct p11g_web_config *cfg)
{
	free(cfg->socket);
	free(cfg->proxy_user);
	free(cfg->user_header);
	memset(cfg, 0, sizeof(*cfg));
}

static int resolve_proxy(const char *name, uid_t *ret, p11g_err *err)
{
	struct passwd pw, *found = NULL;
	char buf[4096], *end;
	unsigned long n;

	*ret = (uid_t)-1;
	if (!name)
		return 0;
	errno = 0;
	n = strtoul(name, &end, 10);
	if (*name >= '0' && *name <= '9' && !*end && !errno && n < UINT32_MAX) {
		*ret = (uid_t)n;
		return 0;
	}
	int r = getpwnam_r(name, &pw, buf, sizeof(buf), &found);
	if (r || !found)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "web_proxy_user: no user \"%s\" on this host%s%s", name,
		                    r ? ": " : "", r ? strerror(r) : "");
	*ret = pw.pw_uid;
	return 0;
}

static void start(struct p11g_web *w)
{
	p11g_err err = {0};
	int sv[2] = {-1, -1};
	char parent[24];
	pid_t pid;

	w->start_after_us = p11g_mono_us() + (w->backoff_us ? w->backoff_us : BACKOFF_MIN_US);
	if (!w->program[0] && p11g_find_program(P11G_WEB_PROGRAM, w->program, &err) < 0) {
		w->program[0] = '\0';
		p11g_error("web page: %s", err.msg);
		return;
	}
	/* connections handed over one message each, with their descriptors */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		p11g_error("web page: socketpair: %m");
		return;
	}
	snprintf(parent, sizeof(parent), "%ld", (long)getpid());
	const char *hdr = w->cfg->user_header ? w->cfg->user_header : P11G_WEB_USER_HEADER_DEFAULT;
	const char *argv[] = {w->program, "--parent", parent, "--user-header", hdr, NULL};
	const int moves[][2] = {{sv[1], 3}};
	int r = p11g_spawn_helper(w->program, argv, moves, 1, &pid);
	close(sv[1]);
	if (r != 0) {
		close(sv[0]);
		p11g_error("web page: cannot start %s", w->program);
		return;
	}
	w->ctl = sv[0];
	w->pid = pid;
	w->started_us = p11g_mono_us();
}

/* A connection approvald-web cannot take now: a short answer, then closed. */
static void busy(struct p11g_web *w, int fd, const char *why)
{
	static const char reply[] = "HTTP/1.1 503 Service Unavailable\r\n"
	                            "Content-Type: text/plain; charset=utf-8\r\n"
	                            "Content-Length: 45\r\nConnection: close\r\n\r\n"
	                            "approvald's web page is busy; try it again.\r\n";
	(void)send(fd, reply, sizeof(reply) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	close(fd);
	int64_t now = p11g_mono_us();
	w->dropped++;
	if (now - w->last_log_us >= 1000000) {
		p11g_warn("web page: %u connection(s) answered 503: %s", w->dropped, why);
		w->dropped = 0;
		w->last_log_us = now;
	}
}

/* A connection to web_socket: its channel adopted, both handed to approvald-web. */
static void on_accept(void *arg, int fd, const struct ucred *peer)
{
	struct p11g_web *w = arg;
	p11g_err err = {0};
	int sv[2];

	if (w->pid <= 0 || w->ctl < 0)
		return busy(w, fd, "approvald-web is not running");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return busy(w, fd, "no socket pair for a channel");
	bool proxy = w->proxy_uid != (uid_t)-1 && peer->uid == w->proxy_uid;
	if (p11g_server_adopt_web(w->server, sv[0], peer, web_verbs, proxy, geteuid(), &err) < 0) {
		close(sv[1]);
		return busy(w, fd, err.msg);
	}
	/* one byte: whether the proxy names the user; the connection and the channel's end */
	unsigned char flag = proxy ? 'P' : 'U';
	struct iovec iov = {.iov_base = &flag, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = {.msg_iov = &iov,
	                   .msg_iovlen = 1,
	                   .msg_control = u.buf,
	                   .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(2 * sizeof(int));
	memcpy(CMSG_DATA(cm), (int[]){fd, sv[1]}, 2 * sizeof(int));
	ssize_t n;
	do
		n = sendmsg(w->ctl, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	close(sv[1]); /* approvald's end sees the hang-up when the page is done */
	if (n != 1)
		return busy(w, fd, "approvald-web takes no more connections now");
	close(fd);
}

int p11g_web_start(struct p11g_web *w, const struct p11g_web_config *cfg, struct p11g_server *s,
                   p11g_err *err)
{
	memset(w, 0, sizeof(*w));
	w->ctl = -1;
	w->cfg = cfg;
	w->server = s;
	if (!cfg->socket)
		return 0;
	if (resolve_proxy(cfg->proxy_user, &w->proxy_uid, err) < 0 ||
	    p11g_server_listen_extra_arg(s, cfg->socket, 0666, on_accept, w, err) < 0)
		return -1;
	p11g_info("serving the web page on %s", cfg->socket);
	if (w->proxy_uid != (uid_t)-1)
		p11g_info("web page: users named in %s by the proxy, uid %u",
		          cfg->user_header ? cfg->user_header : P11G_WEB_USER_HEADER_DEFAULT,
		          (unsigned)w->proxy_uid);
	start(w);
	return 0;
}

void p11g_web_tick(struct p11g_web *w)
{
	if (w->cfg && w->cfg->socket && w->pid <= 0 && p11g_mono_us() >= w->start_after_us)
		start(w);
}

bool p11g_web_exited(struct p11g_web *w, pid_t pid, int status)
{
	if (!w->cfg || pid <= 0 || pid != w->pid)
		return false;
	w->pid = 0;
	if (w->ctl >= 0)
		close(w->ctl);
	w->ctl = -1;
	if (p11g_mono_us() - w->started_us > STABLE_US)
		w->backoff_us = 0;
	else
		w->backoff_us = w->backoff_us ? w->backoff_us * 2 : BACKOFF_MIN_US;
	if (w->backoff_us > BACKOFF_MAX_US)
		w->backoff_us = BACKOFF_MAX_US;
	w->start_after_us = p11g_mono_us() + w->backoff_us;
	if (WIFSIGNALED(status))
		p11g_warn("web page: %s ended by signal %d; started again in %lld ms",
		          P11G_WEB_PROGRAM, WTERMSIG(status), (long long)w->backoff_us / 1000);
	else
		p11g_warn("web page: %s exited with status %d; started again in %lld ms",
		          P11G_WEB_PROGRAM, WEXITSTATUS(status), (long long)w->backoff_us / 1000);
	return true;
}

void p11g_web_stop(struct p11g_web *w)
{
	if (!w->cfg)
		return;
	if (w->pid > 0) {
		kill(w->pid, SIGTERM);
		/* SIGKILL only to a child not reaped yet (a reaped pid may be someone else's) */
		bool reaped = false;
		for (int i = 0; i < 100 && !reaped; i++)
			if (!(reaped = waitpid(w->pid, NULL, WNOHANG) == w->pid))
				usleep(10000);
		if (!reaped) {
			kill(w->pid, SIGKILL);
			waitpid(w->pid, NULL, 0);
		}
		w->pid = 0;
	}
	if (w->ctl >= 0)
		close(w->ctl);
	w->ctl = -1;
}
