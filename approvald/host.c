/* approvald as the HSM's only user: PKCS#11 over p11-kit's RPC, one gated process per client. */
#include "approvald/host.h"
#include "approvald/progpath.h"

#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "approvald/host_proto.h"
#include "approvald/names.h"
#include "approvald/server.h"
#include "approvald/textsafe.h"
#include "module/gate_host.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

/*
 * Why a process per client: the client's sessions, operations and login
 * state live and die with its connection (a client killed mid-operation
 * takes nothing of anyone else's with it), the real module is loaded fresh
 * in each process (SoftHSMv2 does not survive a fork of an initialised
 * module), and a module crash takes one client down, not approvald.  The
 * process never touches the store: every decision is a request on a
 * socketpair approvald serves as a connection of the client's uid and pid,
 * read from SO_PEERCRED on the PKCS#11 socket, so the client cannot claim
 * anyone else's identity.
 *
 * Privilege separation (OpenSSH's): the process is not a fork of approvald
 * but approvald-pkcs11-host (pkcs11_host.c), executed fresh, so it holds
 * nothing of approvald's (no LMDB mapping, no store descriptor, no other
 * client's connection, no policy): its client's connection, its link and a
 * pipe with the settings and the PIN (host_proto.h).  It becomes
 * pkcs11_user, sets no-new-privileges, stays non-dumpable and loads a
 * seccomp allow-list before it loads the module or reads the client; its
 * link accepts only the gate's verbs (host_verbs).
 */

/* What the link of a PKCS#11 host may ask approvald (server.c refuses and
 * logs anything else): the gate's own requests, module/client.c's. */
static const char *const host_verbs[] = {"key", "use", "request", "wait", NULL};

static struct {
	const struct p11g_host_config *cfg;
	struct p11g_server *server;
	/* P11G_HOST_PIN_MAX bytes of a page of their own (p11g_secret_alloc):
	 * approvald keeps the PIN for the host processes it starts, and writes
	 * it into each one's setup pipe (the fork's copy of this page goes
	 * with the exec). */
	unsigned char *pin;
	size_t pin_len;
	char program[PATH_MAX];    /* approvald-pkcs11-host */
	char signer[PATH_MAX];     /* approvald-audit-signer */
	bool prepared;             /* prepare_common ran */
	gid_t groups[NGROUPS_MAX]; /* pkcs11_user's supplementary groups */
	int n_groups;
	char **env; /* the host's whole environment (pkcs11_env, sanitizer options) */
} host;

static void pin_wipe(void)
{
	p11g_secret_free(host.pin, P11G_HOST_PIN_MAX);
	host.pin = NULL;
	host.pin_len = 0;
}

/* Reads the PIN straight into its page: no other buffer ever holds it. */
static int read_pin(const char *path, p11g_err *err)
{
	struct stat st;
	ssize_t n;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "pin_file %s: %m", path);
	if (fstat(fd, &st) < 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "pin_file %s: %m", path);
	if (!S_ISREG(st.st_mode))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "pin_file %s is not a regular file",
		                    path);
	/* Like ssh with a private key: a PIN others can read is no secret. */
	if (st.st_uid != geteuid() || (st.st_mode & 077))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "pin_file %s must belong to approvald's user (uid %u) and be "
		                    "readable by it alone (chmod 0600); it is uid %u mode %04o",
		                    path, (unsigned)geteuid(), (unsigned)st.st_uid,
		                    (unsigned)(st.st_mode & 07777));
	pin_wipe();
	host.pin = p11g_secret_alloc(P11G_HOST_PIN_MAX);
	if (!host.pin)
		return p11g_err_set(err, P11G_E_INTERNAL, "pin_file %s: no memory for it: %m",
		                    path);
	n = read(fd, host.pin, P11G_HOST_PIN_MAX);
	if (n < 0) {
		int e = errno;
		pin_wipe();
		errno = e;
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "pin_file %s: %m", path);
	}
	if ((size_t)n == P11G_HOST_PIN_MAX) {
		pin_wipe();
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "pin_file %s: longer than %d bytes",
		                    path, P11G_HOST_PIN_MAX - 1);
	}
	while (n > 0 && (host.pin[n - 1] == '\n' || host.pin[n - 1] == '\r'))
		host.pin[--n] = '\0';
	if (n == 0) {
		pin_wipe();
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "pin_file %s is empty", path);
	}
	host.pin_len = (size_t)n;
	return 0;
}

/* name beside this binary or in P11GATE_LIBEXECDIR (progpath.h), for PKCS#11. */
static int find_program(const char *name, char *out, p11g_err *err)
{
	p11g_err e = {0};
	if (p11g_find_program(name, out, &e) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot use PKCS#11: %s", e.msg);
	return 0;
}

/* The host's whole environment: pkcs11_env, and the sanitizer runtimes'
 * options of a test build.  Nothing else of approvald's. */
static int build_env(const struct p11g_host_config *cfg, p11g_err *err)
{
	static const char *const passed[] = {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"};
	size_t n = 0;

	host.env = calloc(cfg->n_env + P11G_ARRAY_SIZE(passed) + 1, sizeof(*host.env));
	if (!host.env)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	for (size_t i = 0; i < cfg->n_env; i++)
		host.env[n++] = cfg->env[i];
	for (size_t i = 0; i < P11G_ARRAY_SIZE(passed); i++) {
		const char *v = getenv(passed[i]);
		if (v && asprintf(&host.env[n], "%s=%s", passed[i], v) >= 0)
			n++;
	}
	return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* json_decrefp comes with jansson (>= 2.11). */
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

/* A pipe holding the setup message (host_proto.h), its write end closed;
 * the read end, or -1 with err.  audit_key (and text): approvald-audit-signer's. */
static int setup_pipe(const struct ucred *peer, bool object_admin, const char *audit_key,
                      const char *text, p11g_err *err)
{
	const struct p11g_host_config *cfg = host.cfg;
	static const char *const modes[] = {"kill", "log", "off"};
	_cleanup_json_ json_t *j = NULL, *env = json_array(), *user = NULL;
	_cleanup_free_ char *setup = NULL;
	unsigned char len[4];
	int p[2];

	if (!env)
		goto oom;
	for (char **e = host.env; *e; e++)
		if (json_array_append_new(env, json_string(*e)) < 0)
			goto oom;
	if (cfg->user) {
		json_t *g = json_array();
		for (int i = 0; g && i < host.n_groups; i++)
			json_array_append_new(g, json_integer(host.groups[i]));
		user = json_pack("{s:I, s:I, s:o?}", "uid", (json_int_t)cfg->user_uid, "gid",
		                 (json_int_t)cfg->user_gid, "groups", g);
		if (!user)
			goto oom;
	}
	j = json_pack("{s:s, s:s?, s:s?, s:I, s:I, s:I, s:O, s:O?, s:s, s:I}", "module",
	              cfg->module, "socket", cfg->socket, "token", cfg->token, "wait",
	              (json_int_t)cfg->wait, "frame_ms", (json_int_t)cfg->frame_ms, "message_max",
	              (json_int_t)cfg->message_max, "env", env, "user", user, "seccomp",
	              modes[cfg->seccomp], "parent", (json_int_t)getpid());
	if (!j)
		goto oom;
	if (peer && json_object_set_new(j, "client_uid", json_integer(peer->uid)) |
	                json_object_set_new(j, "client_pid", json_integer(peer->pid)) |
	                json_object_set_new(j, "object_admin", json_boolean(object_admin)))
		goto oom;
	if (audit_key && json_object_set_new(j, "audit_key", json_string(audit_key)) |
	                     json_object_set_new(j, "text", text ? json_string(text) : json_null()))
		goto oom;
	if (!(setup = json_dumps(j, JSON_COMPACT)))
		goto oom;
	if (strlen(setup) > P11G_HOST_SETUP_MAX)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "the PKCS#11 host's settings are too long");
	if (pipe2(p, O_CLOEXEC) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "pipe: %m");
	/* All of it fits (64 KiB) before the host reads: approvald never waits
	 * on it. */
	(void)fcntl(p[1], F_SETPIPE_SZ, 65536);
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	p11g_be32_put(len, (uint32_t)strlen(setup));
	int bad = write_all(p[1], len, 4) < 0 || write_all(p[1], setup, strlen(setup)) < 0;
	p11g_be32_put(len, (uint32_t)host.pin_len);
	bad = bad || write_all(p[1], len, 4) < 0 || write_all(p[1], host.pin, host.pin_len) < 0;
	close(p[1]);
	if (bad) {
		close(p[0]);
		return p11g_err_set(err, P11G_E_INTERNAL, "writing the PKCS#11 host's setup: %m");
	}
	return p[0];
oom:
	return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
}

/* In the child of fork: /dev/null as stdin and stdout, fds to 3, 4, 5
 * (host_proto.h), nothing else open above stderr, default signals, then the
 * program. */
static void exec_host(const char *program, const char *arg, int client_fd, int link_fd,
                      int setup_fd)
{
	/* argv[0]: its name alone, as ps shows it */
	const char *name = strrchr(program, '/') ? strrchr(program, '/') + 1 : program;
	char *argv[] = {(char *)name, (char *)arg, NULL};
	int fds[3] = {client_fd, link_fd, setup_fd};
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	/* stdin and stdout: not approvald's (stderr stays: the host's log lines) */
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0)
		_exit(127);
	/* above any target first, so no dup2 overwrites a source */
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0 && (fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10)) < 0)
			_exit(127);
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0 ? dup2(fds[i], P11G_HOST_FD_CLIENT + i) < 0
		                : (close(P11G_HOST_FD_CLIENT + i), false))
			_exit(127);
	close_range(P11G_HOST_FD_SETUP + 1, ~0U, 0);
	execve(program, argv, host.env);
	p11g_error("cannot run %s: %m", program);
	_exit(127);
}

/* Forks and executes the host; its pid, or -1 with err. */
static pid_t spawn(int client_fd, int link_fd, const struct ucred *peer, bool object_admin,
                   p11g_err *err)
{
	int setup_fd = setup_pipe(peer, object_admin, NULL, NULL, err);
	pid_t pid;

	if (setup_fd < 0)
		return -1;
	pid = fork();
	if (pid == 0)
		exec_host(host.program, peer ? NULL : "--check", client_fd, link_fd, setup_fd);
	close(setup_fd);
	if (pid < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "fork: %m");
	return pid;
}

static int user_prepare(const struct p11g_host_config *cfg, p11g_err *err)
{
	if (!cfg->user) {
		if (geteuid() == 0 && cfg->socket)
			p11g_warn("pkcs11_user is not set: each PKCS#11 client's process runs as "
			          "root, which could read approvald's state directory; set "
			          "pkcs11_user to an unprivileged user that can read the token");
		return 0;
	}
	/* Whether approvald may switch to it (root, or CAP_SETUID and
	 * CAP_SETGID) the start-up check shows. */
	if (cfg->user_uid == 0)
		p11g_warn("pkcs11_user %s is uid 0: each PKCS#11 client's process runs as root",
		          cfg->user);
	host.n_groups = NGROUPS_MAX;
	if (getgrouplist(cfg->user, cfg->user_gid, host.groups, &host.n_groups) < 0)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "pkcs11_user %s is in more than %d groups", cfg->user,
		                    NGROUPS_MAX);
	return 0;
}

/* What the PKCS#11 host and the audit signer both need: the PIN, the user, the
 * environment.  Once. */
static int prepare_common(const struct p11g_host_config *cfg, const char *what, p11g_err *err)
{
	if (host.prepared)
		return 0;
	host.cfg = cfg;
	/* approvald holds the PIN for as long as it runs: no core file of it,
	 * no ptrace by another process of its uid. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "prctl(PR_SET_DUMPABLE): %m");
	if (!cfg->module || !cfg->pin_file)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "%s needs pkcs11_module and pin_file",
		                    what);
	if (cfg->module[0] != '/')
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "pkcs11_module must be an absolute path: %s", cfg->module);
	if (user_prepare(cfg, err) < 0 || build_env(cfg, err) < 0 ||
	    read_pin(cfg->pin_file, err) < 0)
		return -1;
	host.prepared = true;
	return 0;
}

/* "killed by signal N" (and whether by its seccomp filter) or "exit N", for a process that
 * did not end well. */
static void how_it_ended(int status, char *how, size_t n)
{
	if (WIFSIGNALED(status))
		snprintf(how, n, "killed by signal %d%s", WTERMSIG(status),
		         WTERMSIG(status) == SIGSYS ? ", its seccomp filter" : "");
	else
		snprintf(how, n, "exit %d", WEXITSTATUS(status));
}

static int host_prepare(const struct p11g_host_config *cfg, p11g_err *err)
{
	int status;
	pid_t pid;

	if (prepare_common(cfg, "pkcs11_socket", err) < 0 ||
	    find_program(P11G_HOST_PROGRAM, host.program, err) < 0)
		return -1;
	/* A log-in by the host as it runs for a client (its user, its filter):
	 * a wrong PIN, module, token or a pkcs11_user that cannot read the
	 * token stops approvald now, not each client later.  The daemon never
	 * loads the module itself. */
	if ((pid = spawn(-1, -1, NULL, false, err)) < 0)
		return -1;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return p11g_err_set(err, P11G_E_INTERNAL, "waitpid: %m");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char how[64];
		how_it_ended(status, how, sizeof(how));
		return p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "cannot serve PKCS#11: loading %s and logging in with %s failed (%s; the "
		    "line above says why)",
		    cfg->module, cfg->pin_file, how);
	}
	return 0;
}

/* Whether the client is in pkcs11_object_admins.  -1 when its identity
 * cannot be resolved (out of memory). */
static int object_admin_of(const struct ucred *peer, bool *ret)
{
	struct p11g_ident id;

	*ret = false;
	if (host.cfg->object_admins.n == 0)
		return 0;
	if (p11g_ident_resolve(peer->uid, peer->gid, peer->pid, &id) < 0)
		return -1;
	*ret = p11g_principals_match(&host.cfg->object_admins, &id);
	p11g_ident_clear(&id);
	return 0;
}

static void on_accept(void *app, int fd, const struct ucred *peer)
{
	int sp[2];
	pid_t pid;
	p11g_err err = {0};
	bool object_admin;

	(void)app;
	/* Decided here, from the client's uid and its groups now: the client's
	 * process cannot change it, and a failed look-up grants nothing. */
	if (object_admin_of(peer, &object_admin) < 0) {
		p11g_warn("PKCS#11 client uid %u pid %d: cannot resolve its identity; connection "
		          "closed",
		          (unsigned)peer->uid, (int)peer->pid);
		close(fd);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
		p11g_warn("PKCS#11 client uid %u pid %d: socketpair: %m; connection closed",
		          (unsigned)peer->uid, (int)peer->pid);
		close(fd);
		return;
	}
	/* Limits first: the client's gate counts as one of its connections. */
	if (p11g_server_adopt(host.server, sp[0], peer, host_verbs, &err) < 0) {
		p11g_warn("PKCS#11 client uid %u pid %d: %s; connection closed",
		          (unsigned)peer->uid, (int)peer->pid, err.msg);
		close(sp[1]);
		close(fd);
		return;
	}
	pid = spawn(fd, sp[1], peer, object_admin, &err);
	if (pid < 0)
		p11g_warn("PKCS#11 client uid %u pid %d: %s; connection closed",
		          (unsigned)peer->uid, (int)peer->pid, err.msg);
	else
		p11g_debug("PKCS#11 client uid %u pid %d: served by process %d",
		           (unsigned)peer->uid, (int)peer->pid, (int)pid);
	/* The adopted end closes when the child's end does. */
	close(sp[1]);
	close(fd);
}

static int host_listen(const struct p11g_host_config *cfg, struct p11g_server *server,
                       p11g_err *err)
{
	host.cfg = cfg;
	host.server = server;
	return p11g_server_listen_extra(server, cfg->socket, cfg->socket_mode, on_accept, err);
}

static void host_child_exited(pid_t pid, int status)
{
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
		p11g_warn("PKCS#11 client process %d was killed by its seccomp filter (signal %d, "
		          "SIGSYS): it made a system call outside pkcs11_seccomp's allow-list; "
		          "pkcs11_seccomp = log names the calls a module needs",
		          (int)pid, SIGSYS);
	else if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
		p11g_warn("PKCS#11 client process %d died of signal %d", (int)pid,
		          WTERMSIG(status));
	else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
		p11g_warn("PKCS#11 client process %d exited %d", (int)pid, WEXITSTATUS(status));
	else
		p11g_debug("PKCS#11 client process %d ended", (int)pid);
}

static void host_end(void)
{
	pin_wipe();
	if (host.env)
		for (size_t i = host.cfg ? host.cfg->n_env : 0; host.env[i]; i++)
			free(host.env[i]);
	free(host.env);
	host.env = NULL;
	host.prepared = false;
}

/* ---- the audit key on a token (approvald-audit-signer) ------------------- */

#define SIGNER_ANSWER_MAX 16384
#define SIGNER_TIMEOUT_MS 30000

/* Runs approvald-audit-signer (--sign with text, else --pubkey) and reads its
 * answer (malloc'd).  0, or -1 with err. */
static int run_signer(const struct p11g_host_config *cfg, const char *uri, const char *text,
                      unsigned char **ret, size_t *ret_len, p11g_err *err)
{
	_cleanup_free_ unsigned char *buf = NULL;
	size_t got = 0;
	int ans[2], status, setup_fd;
	bool timed_out = false;
	pid_t pid;

	*ret = NULL;
	*ret_len = 0;
	if (prepare_common(cfg, "audit_key", err) < 0)
		return -1;
	if (!host.signer[0] && find_program(P11G_AUDIT_SIGNER_PROGRAM, host.signer, err) < 0) {
		host.signer[0] = 0;
		return -1;
	}
	if (!(buf = malloc(SIGNER_ANSWER_MAX)))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if ((setup_fd = setup_pipe(NULL, false, uri, text, err)) < 0)
		return -1;
	if (pipe2(ans, O_CLOEXEC) < 0) {
		close(setup_fd);
		return p11g_err_set(err, P11G_E_INTERNAL, "pipe: %m");
	}
	pid = fork();
	if (pid == 0)
		exec_host(host.signer, text ? "--sign" : "--pubkey", -1, ans[1], setup_fd);
	close(setup_fd);
	close(ans[1]);
	if (pid < 0) {
		close(ans[0]);
		return p11g_err_set(err, P11G_E_INTERNAL, "fork: %m");
	}
	int64_t deadline = p11g_mono_us() + SIGNER_TIMEOUT_MS * 1000LL;
	for (;;) {
		struct pollfd pfd = {.fd = ans[0], .events = POLLIN};
		int64_t left = deadline - p11g_mono_us();
		int r = left > 0 ? poll(&pfd, 1, (int)((left + 999) / 1000)) : 0;
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			timed_out = true;
			kill(pid, SIGKILL);
			break;
		}
		ssize_t n = read(ans[0], buf + got, SIGNER_ANSWER_MAX - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || (got += (size_t)n) == SIGNER_ANSWER_MAX)
			break;
	}
	close(ans[0]);
	/* the signer ends within the same time limit: a token whose C_Finalize never returns
	 * must not hold approvald for ever */
	bool killed_late = false;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			return p11g_err_set(err, P11G_E_INTERNAL, "waitpid: %m");
		if (p11g_mono_us() >= deadline) {
			kill(pid, SIGKILL);
			killed_late = !timed_out;
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			break;
		}
		poll(NULL, 0, 2);
	}
	if (killed_late)
		p11g_warn("audit_key %s: %s answered but did not end within %d s; killed", uri,
		          P11G_AUDIT_SIGNER_PROGRAM, SIGNER_TIMEOUT_MS / 1000);
	if (timed_out)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "audit_key %s: %s did not answer within %d s; killed", uri,
		                    P11G_AUDIT_SIGNER_PROGRAM, SIGNER_TIMEOUT_MS / 1000);
	/* the signer's own words: one line, the token's text escaped */
	if (got > 1 && buf[0] == 1) {
		_cleanup_free_ char *why = p11g_text_escaped((char *)buf + 1, got - 1);
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "audit_key %s: %s (%s with %s)", uri,
		                    why ? why : "out of memory",
		                    text ? "signing a checkpoint" : "reading the public key",
		                    cfg->module);
	}
	if (!killed_late && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
		char how[64];
		how_it_ended(status, how, sizeof(how));
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "audit_key %s: %s with %s and %s failed (%s; the line above "
		                    "says why)",
		                    uri, text ? "signing a checkpoint" : "reading the public key",
		                    cfg->module, cfg->pin_file, how);
	}
	if (got <= 1 || got == SIGNER_ANSWER_MAX || buf[0] != 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "audit_key %s: %s gave %s answer", uri,
		                    P11G_AUDIT_SIGNER_PROGRAM, got > 1 ? "a malformed" : "no");
	*ret_len = got - 1;
	memmove(buf, buf + 1, *ret_len);
	*ret = buf;
	buf = NULL;
	return 0;
}

static int host_audit_pubkey(const struct p11g_host_config *cfg, const char *uri,
                             unsigned char **der, size_t *der_len, p11g_err *err)
{
	return run_signer(cfg, uri, NULL, der, der_len, err);
}

static int host_audit_sign(const struct p11g_host_config *cfg, const char *uri, const char *text,
                           unsigned char **sig, size_t *sig_len, p11g_err *err)
{
	return run_signer(cfg, uri, text, sig, sig_len, err);
}

const struct p11g_host_ops p11g_isolated_host = {
    .prepare = host_prepare,
    .listen = host_listen,
    .child_exited = host_child_exited,
    .end = host_end,
    .forget = pin_wipe,
    .audit_pubkey = host_audit_pubkey,
    .audit_sign = host_audit_sign,
};
