/* approvald-notify's start: two socket pairs whose approvald ends are connections of its server
 * limited to notify_take and notify_done (internal verbs nobody else may send), the other ends
 * its descriptors 3 and 4.  When it ends, what it held is handed out again (at least once) and
 * it is started again after a backoff. */
#include "approvald/notify_sender.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "approvald/notify.h"
#include "approvald/ops.h"
#include "approvald/progpath.h"
#include "p11gate/log.h"

#define BACKOFF_MIN_US 500000
#define BACKOFF_MAX_US 30000000
#define STABLE_US      60000000

static const char *const take_verbs[] = {"notify_take", NULL};
static const char *const done_verbs[] = {"notify_done", NULL};

static void start(struct p11g_notify_sender *s)
{
	p11g_err err = {0};
	int a[2] = {-1, -1}, b[2] = {-1, -1};
	char parent[24];
	pid_t pid;

	/* a start that fails waits longer each time (a missing program is logged that often) */
	s->backoff_us = s->backoff_us ? s->backoff_us * 2 : BACKOFF_MIN_US;
	if (s->backoff_us > BACKOFF_MAX_US)
		s->backoff_us = BACKOFF_MAX_US;
	s->start_after_us = p11g_mono_us() + s->backoff_us;
	if (!s->program[0] && p11g_find_program(P11G_NOTIFY_PROGRAM, s->program, &err) < 0) {
		s->program[0] = '\0';
		p11g_error("notifications: %s", err.msg);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b) < 0) {
		p11g_error("notifications: socketpair: %m");
		if (a[0] >= 0) {
			close(a[0]);
			close(a[1]);
		}
		return;
	}
	snprintf(parent, sizeof(parent), "%ld", (long)getpid());
	const char *argv[] = {s->program, "--parent", parent, NULL};
	const int moves[][2] = {{a[1], 3}, {b[1], 4}};
	int r = p11g_spawn_helper(s->program, argv, moves, 2, &pid);
	close(a[1]);
	close(b[1]);
	if (r != 0) {
		close(a[0]);
		close(b[0]);
		p11g_error("notifications: cannot start %s", s->program);
		return;
	}
	struct ucred peer = {.pid = pid, .uid = geteuid(), .gid = getegid()};
	if (p11g_server_adopt(s->server, a[0], &peer, take_verbs, &err) < 0) {
		close(b[0]); /* a[0] is closed by the server */
		p11g_error("notifications: %s", err.msg);
		kill(pid, SIGKILL); /* reaped, and started again after the backoff */
	} else if (p11g_server_adopt(s->server, b[0], &peer, done_verbs, &err) < 0) {
		p11g_error("notifications: %s", err.msg);
		kill(pid, SIGKILL);
	}
	s->pid = pid;
	s->started_us = p11g_mono_us();
}

void p11g_notify_sender_tick(struct p11g_notify_sender *s)
{
	if (s->server && s->pid <= 0 && s->ops->policy && s->ops->policy->n_notifiers &&
	    p11g_mono_us() >= s->start_after_us)
		start(s);
}

bool p11g_notify_sender_exited(struct p11g_notify_sender *s, pid_t pid, int status)
{
	if (pid <= 0 || pid != s->pid)
		return false;
	s->pid = 0;
	p11g_notify_sender_gone(s->ops);
	if (p11g_mono_us() - s->started_us > STABLE_US)
		s->backoff_us = 0;
	else
		s->backoff_us = s->backoff_us ? s->backoff_us * 2 : BACKOFF_MIN_US;
	if (s->backoff_us > BACKOFF_MAX_US)
		s->backoff_us = BACKOFF_MAX_US;
	s->start_after_us = p11g_mono_us() + s->backoff_us;
	p11g_warn("notifications: %s ended (%s %d); started again in %lld ms", P11G_NOTIFY_PROGRAM,
	          WIFSIGNALED(status) ? "signal" : "status",
	          WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
	          (long long)s->backoff_us / 1000);
	return true;
}

void p11g_notify_sender_stop(struct p11g_notify_sender *s)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, SIGTERM);
	/* SIGKILL only to a child not reaped yet (a reaped pid may be someone else's) */
	bool reaped = false;
	for (int i = 0; i < 100 && !reaped; i++)
		if (!(reaped = waitpid(s->pid, NULL, WNOHANG) == s->pid))
			usleep(10000);
	if (!reaped) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
	}
	s->pid = 0;
}
