/* Where a client finds the pipeline's ID token (p11gate/idtoken_src.h). */
#include "p11gate/idtoken_src.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "p11gate/errors.h"

void p11g_id_token_free(char *tok)
{
	if (tok) {
		explicit_bzero(tok, strlen(tok));
		free(tok);
	}
}

char *p11g_id_token_load(const char *path, const char *env, p11g_err *err)
{
	char buf[P11G_ID_TOKEN_MAX + 2];
	size_t len = 0;
	const char *where = path ? path : env;
	char what[300];

	snprintf(what, sizeof(what), "%s%s", path ? "ID token file " : "ID token variable $",
	         where ? where : "?");
	if (path) {
		FILE *f = strcmp(path, "-") ? fopen(path, "re") : stdin;
		if (!f) {
			p11g_err_set(err, P11G_E_BAD_REQUEST, "%s: %s", what, strerror(errno));
			return NULL;
		}
		len = fread(buf, 1, sizeof(buf) - 1, f);
		bool bad = ferror(f);
		if (f != stdin)
			fclose(f);
		if (bad) {
			explicit_bzero(buf, sizeof(buf));
			p11g_err_set(err, P11G_E_BAD_REQUEST, "%s: cannot read it", what);
			return NULL;
		}
	} else {
		const char *v = env ? getenv(env) : NULL;
		if (!v) {
			p11g_err_set(err, P11G_E_BAD_REQUEST, "%s is not set", what);
			return NULL;
		}
		len = strnlen(v, sizeof(buf) - 1);
		memcpy(buf, v, len);
	}
	size_t start = 0;
	while (len && isspace((unsigned char)buf[len - 1]))
		len--;
	while (start < len && isspace((unsigned char)buf[start]))
		start++;
	char *tok = NULL;
	if (len - start > P11G_ID_TOKEN_MAX)
		p11g_err_set(err, P11G_E_BAD_REQUEST, "%s: longer than 16 KiB", what);
	else if (len == start || memchr(buf + start, '\0', len - start))
		p11g_err_set(err, P11G_E_BAD_REQUEST, "%s: %s", what,
		             len == start ? "empty" : "holds a NUL byte");
	else if (!(tok = strndup(buf + start, len - start)))
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	explicit_bzero(buf, sizeof(buf));
	return tok;
}

#ifndef P11GATE_LIBEXECDIR
#define P11GATE_LIBEXECDIR "/usr/local/libexec/p11gate"
#endif

extern char **environ;

/* Up to n - 1 bytes of fd from its start, NUL-terminated; its length, or -1. */
static ssize_t read_back(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got < n - 1) {
		ssize_t r = pread(fd, buf + got, n - 1 - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	buf[got] = '\0';
	return (ssize_t)got;
}

char *p11g_id_token_github(const char *audience, bool beside_self, p11g_err *err)
{
	const char *helper = secure_getenv("P11GATE_FETCH");
	char prog[4096], parent[24];
	char *tok = NULL;
	int out = memfd_create("id-token", MFD_CLOEXEC), errfd = memfd_create("why", MFD_CLOEXEC);
	posix_spawn_file_actions_t fa;
	pid_t pid = -1;
	int status = 0;

	/* $P11GATE_FETCH, else beside this program (approvald's build tree or install; not for a
	 * module, whose program is anyone's), else in the libexec directory */
	ssize_t sn = beside_self ? readlink("/proc/self/exe", prog, sizeof(prog) - 1) : -1;
	char *slash = sn > 0 ? (prog[sn] = '\0', strrchr(prog, '/')) : NULL;
	if (helper && *helper)
		snprintf(prog, sizeof(prog), "%s", helper);
	else if (!slash || (size_t)(slash - prog) + sizeof("/approvald-fetch") > sizeof(prog) ||
	         (strcpy(slash, "/approvald-fetch"), access(prog, X_OK) != 0))
		snprintf(prog, sizeof(prog), "%s", P11GATE_LIBEXECDIR "/approvald-fetch");
	snprintf(parent, sizeof(parent), "%ld", (long)getpid());
	if (out < 0 || errfd < 0 || posix_spawn_file_actions_init(&fa) != 0) {
		p11g_err_set(err, P11G_E_INTERNAL, "cannot ask for the GitHub ID token: %m");
		goto done;
	}
	const char *argv[] = {prog, "--parent", parent, "--github-id-token", audience, NULL};
	int r = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (!r)
		r = posix_spawn_file_actions_adddup2(&fa, out, 1);
	if (!r)
		r = posix_spawn_file_actions_adddup2(&fa, errfd, 2);
	if (!r)
		r = posix_spawn(&pid, prog, &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "cannot run %s: %s", prog, strerror(r));
		pid = -1;
		goto done;
	}
	/* the helper gives up after 20 s; 30 s is its end, however it ends.  A program that
	 * ignores SIGCHLD (or reaps every child) leaves no status to wait for: then what the
	 * helper wrote decides (it writes a token only when it succeeds). */
	bool unknown = false;
	for (int waited = 0;; waited += 10) {
		pid_t w = waitpid(pid, &status, waited >= 30000 ? 0 : WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno == ECHILD) {
			unknown = true;
			break;
		}
		if (w < 0 && errno != EINTR) {
			kill(pid, SIGKILL);
			(void)waitpid(pid, NULL, 0);
			p11g_err_set(err, P11G_E_INTERNAL, "waitpid: %m");
			goto done;
		}
		if (waited >= 30000 - 10)
			kill(pid, SIGKILL);
		nanosleep(&(struct timespec){.tv_nsec = 10 * 1000000}, NULL);
	}
	if (unknown) {
		char probe[2];
		status = read_back(out, probe, sizeof(probe)) > 0 ? 0 : 1 << 8;
	}
	pid = -1;
	char buf[P11G_ID_TOKEN_MAX + 2];
	ssize_t n;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char why[300];
		n = read_back(errfd, why, sizeof(why));
		if (n > 0)
			why[strcspn(why, "\n")] = '\0';
		p11g_err_set(err, P11G_E_BAD_REQUEST, "GitHub ID token: %s",
		             n > 0 ? why : "approvald-fetch failed");
	} else if ((n = read_back(out, buf, sizeof(buf))) <= 0 || n > P11G_ID_TOKEN_MAX) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "GitHub ID token: %s",
		             n <= 0 ? "empty" : "longer than 16 KiB");
	} else if (!(tok = strndup(buf, (size_t)n))) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	explicit_bzero(buf, sizeof(buf));
done:
	if (out >= 0)
		close(out);
	if (errfd >= 0)
		close(errfd);
	return tok;
}
