/* approvald as the HSM's only user: PKCS#11 over p11-kit's RPC, one gated process per client. */
#include "approvald/host.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
/* p11_kit_remote_serve_module is stable in practice: p11-kit server and
 * p11-kit remote are built on it. */
#define P11_KIT_FUTURE_UNSTABLE_API 1
#include <p11-kit/remote.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "approvald/server.h"
#include "approvald/names.h"
#include "module/gate_host.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

/*
 * Why a process per client: the client's sessions, operations and login
 * state live and die with its connection (a client killed mid-operation
 * takes nothing of anyone else's with it), the real module is loaded fresh
 * after fork (SoftHSMv2 does not survive a fork of an initialised module),
 * and a module crash takes one client down, not approvald.  The process
 * never touches the store: every decision is a request on a socketpair
 * approvald serves as a connection of the client's uid and pid, read from
 * SO_PEERCRED on the PKCS#11 socket, so the client cannot claim anyone
 * else's identity.
 */

/* What the link of a PKCS#11 host may ask approvald (server.c refuses and
 * logs anything else): the gate's own requests, module/client.c's. */
static const char *const host_verbs[] = {"key", "use", "request", "wait", NULL};

static struct {
	const struct p11g_host_config *cfg;
	struct p11g_server *server;
	/* P11G_HOST_PIN_MAX bytes of a page of their own (p11g_secret_alloc):
	 * approvald keeps the PIN for the client processes it forks, each of
	 * which wipes its copy of this page once its gate holds the PIN. */
	unsigned char *pin;
	size_t pin_len;
	pid_t parent;
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

static CK_FUNCTION_LIST_3_0 *gate_for(int approvald_fd, const struct ucred *peer, bool object_admin)
{
	const struct p11g_host_config *cfg = host.cfg;
	struct p11g_gate_host_config g = {
	    .module = cfg->module,
	    .approvald_fd = approvald_fd,
	    .socket = cfg->socket,
	    .pin = host.pin,
	    .pin_len = host.pin_len,
	    .token = cfg->token,
	    .wait = cfg->wait,
	    .uid = peer ? peer->uid : geteuid(),
	    .pid = peer ? peer->pid : getpid(),
	    .object_admin = object_admin,
	};
	CK_FUNCTION_LIST_3_0 *l = p11g_gate_host(&g);
	/* The gate has its own copy now: this process's copy of approvald's
	 * page goes (approvald's stays). */
	pin_wipe();
	return l;
}

static int host_prepare(const struct p11g_host_config *cfg, p11g_err *err)
{
	int status;
	pid_t pid;

	host.cfg = cfg;
	host.parent = getpid();
	/* approvald holds the PIN for as long as it runs: no core file of it,
	 * no ptrace by another process of its uid.  Its children inherit this. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "prctl(PR_SET_DUMPABLE): %m");
	if (!cfg->module || !cfg->pin_file)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "pkcs11_socket needs pkcs11_module and pin_file");
	if (cfg->module[0] != '/')
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "pkcs11_module must be an absolute path: %s", cfg->module);
	if (read_pin(cfg->pin_file, err) < 0)
		return -1;
	for (size_t i = 0; i < cfg->n_env; i++)
		if (putenv(cfg->env[i]) != 0)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	/* A log-in in a throw-away child: a wrong PIN, module or token stops
	 * approvald now, not each client later.  The daemon never loads the
	 * module itself. */
	pid = fork();
	if (pid < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "fork: %m");
	if (pid == 0) {
		CK_FUNCTION_LIST_3_0 *l = gate_for(-1, NULL, false);
		CK_RV rv = l->C_Initialize(NULL);
		if (rv == CKR_OK)
			l->C_Finalize(NULL);
		p11g_gate_host_wipe();
		_exit(rv == CKR_OK ? 0 : 1);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return p11g_err_set(err, P11G_E_INTERNAL, "waitpid: %m");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "cannot serve PKCS#11: loading %s and logging in with %s failed "
		    "(the line above says why)",
		    cfg->module, cfg->pin_file);
	return 0;
}

/* Keeps only keep[0..1] open above stderr. */
static void close_others(int a, int b)
{
	int lo = a < b ? a : b, hi = a < b ? b : a;

	if (lo > 3)
		close_range(3, (unsigned)lo - 1, 0);
	if (hi > lo + 1)
		close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
	close_range((unsigned)hi + 1, ~0U, 0);
}

/* ---- the frame check in front of p11-kit ------------------------------------- */

/*
 * p11-kit's RPC reader trusts the lengths in a message header (it allocates
 * what they say and waits for that many bytes, for ever).  A relay thread
 * reads the client first: the protocol byte, then each message's 12-byte
 * header (call code, options length, body length), checks the lengths
 * against the limits, and passes the message on only whole and in time.
 * Between messages a client may stay silent as long as it likes (an
 * application holding its session); a message once begun must arrive
 * within frame_timeout.  A violation closes this client's connection, and
 * only it: its process ends.
 */
#define RPC_HEADER      12
#define RPC_OPTIONS_MAX 4096 /* p11-kit sends none or a few bytes */
#define RELAY_CHUNK     65536

struct relay {
	int client;    /* the client's socket (p11-kit writes replies to it directly) */
	int to_p11kit; /* what p11-kit reads */
	struct ucred peer;
	int frame_ms;
	size_t message_max;
};

/* 1 when n bytes were read, 0 on EOF before the first, -1 on error or when
 * deadline_us (0: none) passed (errno ETIMEDOUT). */
static int read_full(int fd, unsigned char *buf, size_t n, int64_t deadline_us)
{
	size_t got = 0;

	while (got < n) {
		if (deadline_us) {
			int64_t left = deadline_us - p11g_mono_us();
			struct pollfd p = {.fd = fd, .events = POLLIN};
			int r = left > 0 ? poll(&p, 1, (int)((left + 999) / 1000)) : 0;
			if (r < 0 && errno == EINTR)
				continue;
			if (r == 0) {
				errno = ETIMEDOUT;
				return -1;
			}
		}
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			if (got == 0)
				return 0;
			errno = ECONNRESET;
			return -1;
		}
		got += (size_t)r;
	}
	return 1;
}

static int write_full(int fd, const unsigned char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

#define relay_warn(r, fmt, ...)                                                                    \
	p11g_warn("PKCS#11 client uid %u pid %d: " fmt "; connection closed",                      \
	          (unsigned)(r)->peer.uid, (int)(r)->peer.pid, ##__VA_ARGS__)

/* Relays until EOF or a violation; returns after closing p11-kit's input. */
static void *relay_main(void *arg)
{
	struct relay *r = arg;
	unsigned char *chunk = malloc(RELAY_CHUNK);
	unsigned char hdr[RPC_HEADER];
	int got;

	if (!chunk)
		goto violation;
	/* the protocol version byte */
	if ((got = read_full(r->client, hdr, 1, 0)) <= 0 || write_full(r->to_p11kit, hdr, 1) < 0)
		goto end;
	for (;;) {
		/* idle as long as the client likes, then the whole message in time */
		if ((got = read_full(r->client, hdr, 1, 0)) <= 0)
			goto end;
		int64_t deadline = p11g_mono_us() + (int64_t)r->frame_ms * 1000;
		if (read_full(r->client, hdr + 1, RPC_HEADER - 1, deadline) <= 0) {
			relay_warn(r, "message header incomplete (%s)",
			           errno == ETIMEDOUT ? "frame timeout" : strerror(errno));
			goto violation;
		}
		uint32_t olen = p11g_be32_get(hdr + 4), blen = p11g_be32_get(hdr + 8);
		if (olen > RPC_OPTIONS_MAX || blen > r->message_max) {
			relay_warn(
			    r, "message of %u + %u bytes over the limit (%zu; pkcs11_message_max)",
			    olen, blen, r->message_max);
			goto violation;
		}
		if (write_full(r->to_p11kit, hdr, RPC_HEADER) < 0)
			goto end;
		for (size_t left = (size_t)olen + blen; left > 0;) {
			size_t n = left < RELAY_CHUNK ? left : RELAY_CHUNK;
			if (read_full(r->client, chunk, n, deadline) <= 0) {
				relay_warn(r, "message incomplete (%s)",
				           errno == ETIMEDOUT ? "frame timeout" : strerror(errno));
				goto violation;
			}
			if (write_full(r->to_p11kit, chunk, n) < 0)
				goto end;
			left -= n;
		}
	}
violation:
	/* p11-kit may be writing a reply: make that fail too. */
	shutdown(r->client, SHUT_RDWR);
end:
	free(chunk);
	close(r->to_p11kit);
	return NULL;
}

static void serve_child(int client_fd, int link_fd, const struct ucred *peer, bool object_admin)
{
	int fl, pp[2];
	pthread_t relay_thread;
	struct relay relay;

	/* approvald gone: so is its gate (the client sees the connection
	 * drop instead of a gate that can only refuse). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != host.parent)
		_exit(1);
	p11g_server_close_in_child(host.server);
	close_others(client_fd, link_fd);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	fl = fcntl(client_fd, F_GETFL);
	if (fl >= 0)
		fcntl(client_fd, F_SETFL, fl & ~O_NONBLOCK);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pp) < 0) {
		p11g_warn("PKCS#11 client uid %u pid %d: socketpair: %m", (unsigned)peer->uid,
		          (int)peer->pid);
		_exit(1);
	}
	relay = (struct relay){.client = client_fd,
	                       .to_p11kit = pp[1],
	                       .peer = *peer,
	                       .frame_ms = host.cfg->frame_ms,
	                       .message_max = host.cfg->message_max};
	if (pthread_create(&relay_thread, NULL, relay_main, &relay) != 0) {
		p11g_warn("PKCS#11 client uid %u pid %d: cannot start a thread",
		          (unsigned)peer->uid, (int)peer->pid);
		_exit(1);
	}
	CK_FUNCTION_LIST_3_0 *l = gate_for(link_fd, peer, object_admin);
	/* p11-kit calls C_Initialize and C_Finalize as the client does. */
	p11_kit_remote_serve_module((CK_FUNCTION_LIST *)l, pp[0], client_fd);
	/* A client that died or forgot C_Finalize: end the module's state
	 * tidily (CKR_CRYPTOKI_NOT_INITIALIZED otherwise, harmless). */
	l->C_Finalize(NULL);
	p11g_gate_host_wipe();
	_exit(0);
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
	pid = fork();
	if (pid == 0)
		serve_child(fd, sp[1], peer, object_admin);
	if (pid < 0)
		p11g_warn("PKCS#11 client uid %u pid %d: fork: %m; connection closed",
		          (unsigned)peer->uid, (int)peer->pid);
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
	if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
		p11g_warn("PKCS#11 client process %d died of signal %d", (int)pid,
		          WTERMSIG(status));
	else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
		p11g_warn("PKCS#11 client process %d exited %d", (int)pid, WEXITSTATUS(status));
	else
		p11g_debug("PKCS#11 client process %d ended", (int)pid);
}

const struct p11g_host_ops p11g_isolated_host = {
    .prepare = host_prepare,
    .listen = host_listen,
    .child_exited = host_child_exited,
    .end = pin_wipe,
};
