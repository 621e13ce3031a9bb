/*
 * The local verbs in the approvald binary: re-execute approvald-local with the
 * same arguments (local.h says why).  It is looked for beside this binary
 * (a build tree, or an install that keeps both in one directory), then in
 * P11GATE_LIBEXECDIR.
 */
#include <limits.h>
#include <unistd.h>

#include "approvald/cli.h"
#include "approvald/local.h"

#ifndef P11GATE_LIBEXECDIR
#define P11GATE_LIBEXECDIR "/usr/local/libexec/p11gate"
#endif

static char **saved_argv;

void p11g_local_init(int argc, char **argv)
{
	/* getopt reorders argv in place: keep the order we were given. */
	saved_argv = calloc((size_t)argc + 1, sizeof(*saved_argv));
	if (saved_argv)
		memcpy(saved_argv, argv, (size_t)argc * sizeof(*saved_argv));
}

static int run_local(void)
{
	char self[PATH_MAX], beside[PATH_MAX];
	const char *path = P11GATE_LIBEXECDIR "/approvald-local";

	if (!saved_argv) {
		fprintf(stderr, "approvald: out of memory\n");
		return EXIT_REFUSED;
	}
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			int w = snprintf(beside, sizeof(beside), "%s/approvald-local", self);
			if (w > 0 && (size_t)w < sizeof(beside) && access(beside, X_OK) == 0)
				path = beside;
		}
	}
	execv(path, saved_argv);
	fprintf(stderr,
	        "approvald: cannot run %s: %s (serve, policy check, audit --state-dir and "
	        "--export-pubkey run it)\n",
	        path, strerror(errno));
	return EXIT_REFUSED;
}

int p11g_local_serve(const char *config, const char *state_dir, const char *socket,
                     const char *policy_dir)
{
	(void)config;
	(void)state_dir;
	(void)socket;
	(void)policy_dir;
	return run_local();
}

int p11g_local_policy_check(const char *path)
{
	(void)path;
	return run_local();
}

int p11g_local_audit(const char *dir, bool verify, const char *pubkey_file, uint64_t since,
                     p11g_audit_visit_fn visit, void *arg, json_t **ret_report, p11g_err *err)
{
	(void)dir;
	(void)verify;
	(void)pubkey_file;
	(void)since;
	(void)visit;
	(void)arg;
	(void)ret_report;
	(void)err;
	exit(run_local());
}

int p11g_local_export_pubkey(const char *config)
{
	(void)config;
	return run_local();
}
