/* approvald's side of the web page: the socket, and approvald-web started (and started again)
 * with the socket and a channel of its own.  The channel is a connection of approvald's server
 * like any other, limited to the verbs a page needs, whose requests name their caller
 * (p11g_server_adopt_web): approvald-web read it from the kernel (SO_PEERCRED) or from the
 * trusted proxy's header.  HTTP, HTML and the browser's input never enter approvald. */
#include "approvald/web.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
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

extern char **environ;

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
	char parent[24], proxy[24];
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, deflt;
	pid_t pid;

	w->start_after_us = p11g_mono_us() + (w->backoff_us ? w->backoff_us : BACKOFF_MIN_US);
	if (!w->program[0] && p11g_find_program(P11G_WEB_PROGRAM, w->program, &err) < 0) {
		w->program[0] = '\0';
		p11g_error("web page: %s", err.msg);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		p11g_error("web page: socketpair: %m");
		return;
	}
	snprintf(parent, sizeof(parent), "%ld", (long)getpid());
	snprintf(proxy, sizeof(proxy), "%ld", w->proxy_uid == (uid_t)-1 ? -1L : (long)w->proxy_uid);
	const char *hdr = w->cfg->user_header ? w->cfg->user_header : P11G_WEB_USER_HEADER_DEFAULT;
	const char *argv[] = {w->program, "--parent",      parent, "--proxy-uid",
	                      proxy,      "--user-header", hdr,    NULL};
	sigemptyset(&none);
	sigemptyset(&deflt);
	int sigs[] = {SIGPIPE, SIGCHLD, SIGHUP, SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(sigs); i++)
		sigaddset(&deflt, sigs[i]);
	/* the environment: a test build's sanitizer options, no more */
	static const char *const passed[] = {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"};
	char *envp[P11G_ARRAY_SIZE(passed) + 1];
	size_t ne = 0;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(passed); i++)
		for (char **e = environ; *e; e++)
			if (!strncmp(*e, passed[i], strlen(passed[i])) &&
			    (*e)[strlen(passed[i])] == '=')
				envp[ne++] = *e;
	envp[ne] = NULL;
	int r = posix_spawn_file_actions_init(&fa);
	if (r == 0) {
		r = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) ||
		    posix_spawn_file_actions_adddup2(&fa, w->listener.fd, 3) ||
		    posix_spawn_file_actions_adddup2(&fa, sv[1], 4) || posix_spawnattr_init(&at);
		if (r == 0) {
			r = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
			                                      POSIX_SPAWN_SETSIGDEF) ||
			    posix_spawnattr_setsigmask(&at, &none) ||
			    posix_spawnattr_setsigdefault(&at, &deflt) ||
			    posix_spawn(&pid, w->program, &fa, &at, (char *const *)argv, envp);
			posix_spawnattr_destroy(&at);
		}
		posix_spawn_file_actions_destroy(&fa);
	}
	close(sv[1]);
	if (r != 0) {
		close(sv[0]);
		p11g_error("web page: cannot start %s", w->program);
		return;
	}
	struct ucred peer = {.pid = pid, .uid = geteuid(), .gid = getegid()};
	if (p11g_server_adopt_web(w->server, sv[0], &peer, web_verbs, geteuid(), &err) < 0)
		p11g_error("web page: %s", err.msg); /* it ends when it finds no channel */
	w->pid = pid;
	w->started_us = p11g_mono_us();
}

int p11g_web_start(struct p11g_web *w, const struct p11g_web_config *cfg, struct p11g_server *s,
                   p11g_err *err)
{
	memset(w, 0, sizeof(*w));
	w->listener.fd = -1;
	w->cfg = cfg;
	w->server = s;
	if (!cfg->socket)
		return 0;
	if (resolve_proxy(cfg->proxy_user, &w->proxy_uid, err) < 0)
		return -1;
	if (p11g_listen_path(cfg->socket, 0666, &w->listener, err) < 0)
		return -1;
	p11g_info("serving the web page on %s%s%s", cfg->socket,
	          w->proxy_uid != (uid_t)-1 ? " (proxy: " : "",
	          w->proxy_uid != (uid_t)-1 ? cfg->proxy_user : "");
	if (w->proxy_uid != (uid_t)-1)
		p11g_info("web page: users named in %s by uid %u",
		          cfg->user_header ? cfg->user_header : P11G_WEB_USER_HEADER_DEFAULT,
		          (unsigned)w->proxy_uid);
	start(w);
	return 0;
}

void p11g_web_tick(struct p11g_web *w)
{
	if (w->cfg && w->cfg->socket && w->listener.fd >= 0 && w->pid <= 0 &&
	    p11g_mono_us() >= w->start_after_us)
		start(w);
}

bool p11g_web_exited(struct p11g_web *w, pid_t pid, int status)
{
	if (!w->cfg || pid <= 0 || pid != w->pid)
		return false;
	w->pid = 0;
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
		for (int i = 0; i < 100 && waitpid(w->pid, NULL, WNOHANG) == 0; i++)
			usleep(10000);
		kill(w->pid, SIGKILL);
		waitpid(w->pid, NULL, WNOHANG);
		w->pid = 0;
	}
	if (w->listener.fd >= 0 && w->cfg->socket)
		p11g_listener_close(&w->listener, w->cfg->socket);
	w->listener.fd = -1;
}
