/* approvald-pkcs11-host: one PKCS#11 client's gated module, in a process that holds nothing of
 * approvald's. */
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
/* p11_kit_remote_serve_module is stable in practice: p11-kit server and
 * p11-kit remote are built on it. */
#define P11_KIT_FUTURE_UNSTABLE_API 1
#include <p11-kit/remote.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#if HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#include "approvald/host_frames.h"
#include "approvald/host_proto.h"
#include "approvald/host_sandbox.h"
#include "module/gate_host.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

/*
 * approvald (host.c) starts this program for each client of its PKCS#11
 * socket, fork and exec: it begins with none of approvald's memory (no
 * LMDB mapping, no store, no other client's connection), only the
 * descriptors and the setup message host_proto.h describes.  Before it reads
 * a byte from the client or loads the module it becomes pkcs11_user, sets
 * PR_SET_NO_NEW_PRIVS and loads its seccomp filter (host_sandbox.c); it was
 * made non-dumpable before it read the PIN.  Its link to approvald answers
 * the gate's verbs only (key, use, request, wait): the process can ask for
 * what its client could ask for, nothing more.
 */

struct setup {
	json_t *j;
	unsigned char *pin; /* P11G_HOST_PIN_MAX bytes of p11g_secret_alloc */
	size_t pin_len;
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	p11g_error("PKCS#11 host: %s", msg);
	_exit(1);
}

static const char *str_of(const json_t *j, const char *key)
{
	const json_t *v = json_object_get(j, key);
	if (json_is_null(v))
		return NULL;
	if (!json_is_string(v))
		die("setup message: \"%s\" is not a string", key);
	return json_string_value(v);
}

static json_int_t int_of(const json_t *j, const char *key)
{
	const json_t *v = json_object_get(j, key);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		die("setup message: \"%s\" is not a number", key);
	return json_integer_value(v);
}

/* The environment: pkcs11_env's entries and nothing else. */
static void set_env(const json_t *env)
{
	size_t i;
	const json_t *v;

	if (clearenv() != 0)
		die("clearenv failed");
	/* the setup's strings live as long as the process */
	json_array_foreach(env, i, v)
	{
		char *e = json_is_string(v) ? (char *)json_string_value(v) : NULL;
		if (!e || !strchr(e, '=') || putenv(e) != 0)
			die("setup message: a bad environment entry");
	}
}

static void become_user(const json_t *user)
{
	gid_t groups[NGROUPS_MAX];
	size_t i, n = 0;
	const json_t *g, *list = json_object_get(user, "groups");
	p11g_err err = {0};

	if (json_is_null(user)) {
		/* pkcs11_user unset: approvald's own user, but none of its capabilities */
		if (p11g_sandbox_drop_capabilities(&err) < 0)
			die("%s", err.msg);
		return;
	}
	json_array_foreach(list, i, g)
	{
		if (n == NGROUPS_MAX || !json_is_integer(g))
			die("setup message: bad group list");
		groups[n++] = (gid_t)json_integer_value(g);
	}
	if (p11g_sandbox_user((uid_t)int_of(user, "uid"), (gid_t)int_of(user, "gid"), groups, n,
	                      &err) < 0)
		die("%s", err.msg);
}

static enum p11g_seccomp_mode seccomp_of(const char *s)
{
	if (s && !strcmp(s, "kill"))
		return P11G_SECCOMP_KILL;
	if (s && !strcmp(s, "log"))
		return P11G_SECCOMP_LOG;
	if (s && !strcmp(s, "off"))
		return P11G_SECCOMP_OFF;
	die("setup message: bad \"seccomp\"");
}

static CK_FUNCTION_LIST_3_0 *gate_for(const json_t *j, struct setup *s, int approvald_fd,
                                      const struct ucred *peer, bool object_admin)
{
	struct p11g_gate_host_config g = {
	    .module = str_of(j, "module"),
	    .approvald_fd = approvald_fd,
	    .socket = str_of(j, "socket"),
	    .pin = s->pin,
	    .pin_len = s->pin_len,
	    .token = str_of(j, "token"),
	    .wait = (unsigned)int_of(j, "wait"),
	    .uid = peer ? peer->uid : geteuid(),
	    .pid = peer ? peer->pid : getpid(),
	    .object_admin = object_admin,
	};
	if (!g.module)
		die("setup message: no module");
	CK_FUNCTION_LIST_3_0 *l = p11g_gate_host(&g);
	/* The gate has its own copy now. */
	p11g_secret_free(s->pin, P11G_HOST_PIN_MAX);
	s->pin = NULL;
	s->pin_len = 0;
	return l;
}

/* --check: log in once and out, to prove the configuration at start-up. */
static int check(const json_t *j, struct setup *s)
{
	CK_FUNCTION_LIST_3_0 *l = gate_for(j, s, -1, NULL, false);
	CK_RV rv = l->C_Initialize(NULL);

	if (rv == CKR_OK)
		l->C_Finalize(NULL);
	p11g_gate_host_wipe();
	return rv == CKR_OK ? 0 : 1;
}

static int serve(const json_t *j, struct setup *s)
{
	int fl, in_fd, client_fd = P11G_HOST_FD_CLIENT, link_fd = P11G_HOST_FD_LINK;
	struct ucred peer = {.uid = (uid_t)int_of(j, "client_uid"),
	                     .pid = (pid_t)int_of(j, "client_pid")};
	const json_t *admin = json_object_get(j, "object_admin");

	fl = fcntl(client_fd, F_GETFL);
	if (fl < 0 || fcntl(link_fd, F_GETFL) < 0)
		die("started without its client connection and link to approvald");
	fcntl(client_fd, F_SETFL, fl & ~O_NONBLOCK);
	fcntl(client_fd, F_SETFD, FD_CLOEXEC);
	fcntl(link_fd, F_SETFD, FD_CLOEXEC);
	/* p11-kit reads the client through the frame check (host_frames.c) and
	 * writes its replies to the client directly. */
	in_fd = p11g_frames_start(
	    &(struct p11g_frames){.client = client_fd,
	                          .peer = peer,
	                          .frame_ms = (int)int_of(j, "frame_ms"),
	                          .message_max = (size_t)int_of(j, "message_max")});
	if (in_fd < 0)
		die("PKCS#11 client uid %u pid %d: socketpair: %m", (unsigned)peer.uid,
		    (int)peer.pid);
	CK_FUNCTION_LIST_3_0 *l = gate_for(j, s, link_fd, &peer, json_is_true(admin));
	/* p11-kit calls C_Initialize and C_Finalize as the client does. */
	p11_kit_remote_serve_module((CK_FUNCTION_LIST *)l, in_fd, client_fd);
	if (!p11g_frames_used())
		p11g_error("PKCS#11 client uid %u pid %d: p11-kit did not read the client through "
		           "the frame check (read(2) not interposed?); connection closed",
		           (unsigned)peer.uid, (int)peer.pid);
	/* A client that died or forgot C_Finalize: end the module's state
	 * tidily (CKR_CRYPTOKI_NOT_INITIALIZED otherwise, harmless). */
	l->C_Finalize(NULL);
	p11g_gate_host_wipe();
	return 0;
}

int main(int argc, char **argv)
{
	struct setup s = {0};
	bool checking = argc == 2 && !strcmp(argv[1], "--check");
	p11g_err err = {0};

	p11g_log_ident = "approvald";
	/* Before the PIN is read: no core file, no ptrace by approvald's uid
	 * (exec made this process dumpable again). */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		die("prctl(PR_SET_DUMPABLE): %m");
	if (argc > 2 || (argc == 2 && !checking))
		die("usage: %s [--check] (approvald starts it; see host_proto.h)", argv[0]);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	p11g_err serr = {0};
	if (p11g_host_setup_read(&s.j, &s.pin, &s.pin_len, &serr) < 0)
		die("%s", serr.msg);
	set_env(json_object_get(s.j, "env"));
	become_user(json_object_get(s.j, "user"));
	/* After the switch (a change of uid clears both): approvald gone, so is
	 * its gate; and non-dumpable again. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		die("prctl: %m");
	if (getppid() != (pid_t)int_of(s.j, "parent"))
		_exit(1);
	enum p11g_seccomp_mode mode = seccomp_of(str_of(s.j, "seccomp"));
#if HAVE_VALGRIND_H
	/* valgrind cannot run a process under a seccomp filter (it has no
	 * seccomp(2)): a memcheck run of the tests goes without. */
	if (RUNNING_ON_VALGRIND && mode != P11G_SECCOMP_OFF) {
		p11g_warn("PKCS#11 host: under valgrind, which cannot run a seccomp filter: "
		          "pkcs11_seccomp is off in this process");
		mode = P11G_SECCOMP_OFF;
	}
#endif
	if (p11g_sandbox_seccomp(mode, &err) < 0)
		die("%s", err.msg);
	/* Nothing of the setup is freed: the settings outlive the gate (its
	 * module path, its socket's name), and the process ends with _exit. */
	_exit(checking ? check(s.j, &s) : serve(s.j, &s));
}
