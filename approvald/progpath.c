/* Where approvald's helper programs are (progpath.h). */
#include "approvald/progpath.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "p11gate/errors.h"

#ifndef P11GATE_LIBEXECDIR
#define P11GATE_LIBEXECDIR "/usr/local/libexec/p11gate"
#endif

int p11g_find_program(const char *name, char *out, p11g_err *err)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			int w = snprintf(out, PATH_MAX, "%s/%s", self, name);
			if (w > 0 && w < PATH_MAX && access(out, X_OK) == 0)
				return 0;
		}
	}
	snprintf(out, PATH_MAX, "%s/%s", P11GATE_LIBEXECDIR, name);
	if (access(out, X_OK) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "%s: %m (installed with approvald-local)",
		                    out);
	return 0;
}

extern char **environ;

int p11g_spawn_helper(const char *program, const char *const *argv, const int (*moves)[2],
                      size_t n_moves, pid_t *ret_pid)
{
	static const char *const passed[] = {"https_proxy", "HTTPS_PROXY",  "no_proxy",
	                                     "NO_PROXY",    "ASAN_OPTIONS", "UBSAN_OPTIONS",
	                                     "LSAN_OPTIONS"};
	char *envp[P11G_ARRAY_SIZE(passed) + 1] = {0};
	size_t ne = 0;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(passed); i++) {
		size_t len = strlen(passed[i]);
		for (char **e = environ; e && *e; e++)
			if (!strncmp(*e, passed[i], len) && (*e)[len] == '=') {
				envp[ne++] = *e;
				break;
			}
	}
	sigset_t none, deflt;
	sigemptyset(&none);
	sigemptyset(&deflt);
	static const int sigs[] = {SIGPIPE, SIGCHLD, SIGHUP, SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(sigs); i++)
		sigaddset(&deflt, sigs[i]);
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	int r = posix_spawn_file_actions_init(&fa);
	if (r)
		return r;
	r = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	for (size_t i = 0; !r && i < n_moves; i++)
		r = posix_spawn_file_actions_adddup2(&fa, moves[i][0], moves[i][1]);
	if (!r && !(r = posix_spawnattr_init(&at))) {
		r = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
		if (!r)
			r = posix_spawnattr_setsigmask(&at, &none);
		if (!r)
			r = posix_spawnattr_setsigdefault(&at, &deflt);
		if (!r)
			r = posix_spawn(ret_pid, program, &fa, &at, (char *const *)argv, envp);
		posix_spawnattr_destroy(&at);
	}
	posix_spawn_file_actions_destroy(&fa);
	return r;
}
