/* A hostile PKCS#11 module: from inside approvald's PKCS#11 host it attacks approvald, then
 * forwards to a real module (SoftHSMv2) like a working one. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

/*
 * Environment (approvald's pkcs11_env):
 *   HOSTILE_MODULE  the real module (required)
 *   HOSTILE_DIR     a directory the host's user can write: the attacks run in C_Initialize
 *                   while HOSTILE_DIR/armed exists, which says what to do:
 *                     "probe OPID"  open HOSTILE_STATE and its data.mdb; find the link to
 *                                   approvald (the socket whose peer is the parent) and send
 *                                   it approve, revoke and audit for operation OPID; then
 *                                   ptrace(PTRACE_ATTACH) the parent
 *                     "keyctl"      call keyctl (outside any PKCS#11 library's needs)
 *                     "userns"      clone into a new user and network namespace
 *                     "netfilter"   open a netlink socket to netfilter
 *                   Each step's outcome is a line of HOSTILE_DIR/result-PID, written before
 *                   the next step starts ("NAME start", then "NAME OUTCOME"): a step that
 *                   kills the process leaves its start line alone.
 *   HOSTILE_STATE   approvald's state directory
 */

#define EXPORT __attribute__((visibility("default")))

static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST list;
static FILE *out;

static void note(const char *fmt, ...)
{
	va_list ap;

	if (!out)
		return;
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
	fflush(out);
}

static const char *outcome(int ok)
{
	static char buf[64];
	if (ok)
		return "ok";
	snprintf(buf, sizeof(buf), "errno:%s", strerrorname_np(errno));
	return buf;
}

static void try_open(const char *name, const char *path, int flags)
{
	note("%s start", name);
	int fd = open(path, flags | O_RDONLY | O_CLOEXEC);
	note("%s %s", name, outcome(fd >= 0));
	if (fd >= 0)
		close(fd);
}

/* The socket whose peer is this process's parent (approvald): the host's link. */
static int find_link(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int found = -1;

	if (!d)
		return -1;
	while ((e = readdir(d)) && found < 0) {
		int fd = atoi(e->d_name);
		struct stat st;
		struct ucred uc;
		socklen_t len = sizeof(uc);
		if (e->d_name[0] == '.' || fd == dirfd(d) || fstat(fd, &st) < 0 ||
		    !S_ISSOCK(st.st_mode))
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == 0 && uc.pid == getppid())
			found = fd;
	}
	closedir(d);
	return found;
}

/* Sends one request in approvald's framing (4-byte big-endian length, JSON) and notes the
 * reply. */
static void try_verb(int link, const char *verb, const char *opid)
{
	char req[256];
	unsigned char hdr[4], body[4096];
	int n = snprintf(req, sizeof(req), "{\"v\":1,\"verb\":\"%s\",\"id\":%s}", verb, opid);
	uint32_t len = (uint32_t)n, got = 0;
	struct pollfd p = {.fd = link, .events = POLLIN};

	note("%s start", verb);
	hdr[0] = (unsigned char)(len >> 24);
	hdr[1] = (unsigned char)(len >> 16);
	hdr[2] = (unsigned char)(len >> 8);
	hdr[3] = (unsigned char)len;
	if (write(link, hdr, 4) != 4 || write(link, req, len) != (ssize_t)len) {
		note("%s write-%s", verb, outcome(0));
		return;
	}
	for (size_t have = 0; have < 4;) {
		if (poll(&p, 1, 5000) != 1) {
			note("%s no-reply", verb);
			return;
		}
		ssize_t r = read(link, hdr + have, 4 - have);
		if (r <= 0) {
			note("%s closed", verb);
			return;
		}
		have += (size_t)r;
	}
	len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (len >= sizeof(body)) {
		note("%s reply-too-long", verb);
		return;
	}
	while (got < len) {
		if (poll(&p, 1, 5000) != 1) {
			note("%s reply-cut", verb);
			return;
		}
		ssize_t r = read(link, body + got, len - got);
		if (r <= 0) {
			note("%s closed", verb);
			return;
		}
		got += (uint32_t)r;
	}
	note("%s reply %.*s", verb, (int)len, body);
}

static void attack(void)
{
	const char *dir = getenv("HOSTILE_DIR"), *state = getenv("HOSTILE_STATE");
	char path[PATH_MAX], what[64] = "", opid[32] = "0";
	FILE *armed;

	if (!dir)
		return;
	snprintf(path, sizeof(path), "%s/armed", dir);
	if (!(armed = fopen(path, "re")))
		return;
	if (fscanf(armed, "%63s %31s", what, opid) < 1)
		what[0] = 0;
	fclose(armed);
	snprintf(path, sizeof(path), "%s/result-%d", dir, (int)getpid());
	if (!(out = fopen(path, "we")))
		return;
	note("uid %u ppid %d", (unsigned)getuid(), (int)getppid());
	if (!strcmp(what, "probe")) {
		if (state) {
			try_open("state_dir", state, O_DIRECTORY);
			snprintf(path, sizeof(path), "%s/data.mdb", state);
			try_open("data_mdb", path, 0);
		}
		int link = find_link();
		note("link %d", link);
		if (link >= 0) {
			try_verb(link, "approve", opid);
			try_verb(link, "revoke", opid);
			try_verb(link, "audit", opid);
		}
		note("ptrace start");
		pid_t parent = getppid();
		long r = ptrace(PTRACE_ATTACH, parent, NULL, NULL);
		note("ptrace %s", outcome(r == 0));
		if (r == 0) {
			waitpid(parent, NULL, __WALL);
			ptrace(PTRACE_DETACH, parent, NULL, NULL);
		}
	} else if (!strcmp(what, "keyctl")) {
		note("keyctl start");
		/* KEYCTL_GET_KEYRING_ID of the session keyring */
		long r = syscall(SYS_keyctl, 0, -3, 0);
		note("keyctl %s", outcome(r >= 0));
	} else if (!strcmp(what, "userns")) {
		/* a user namespace would give the process every capability inside it */
		note("userns start");
		long r = syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0);
		if (r == 0)
			_exit(0);
		if (r > 0)
			waitpid((pid_t)r, NULL, 0);
		note("userns %s", outcome(r >= 0));
	} else if (!strcmp(what, "netfilter")) {
		/* the kernel's netfilter (and raw packets) are no PKCS#11 library's business */
		note("netfilter start");
		int fd = socket(AF_NETLINK, SOCK_RAW, 12 /* NETLINK_NETFILTER */);
		note("netfilter %s", outcome(fd >= 0));
		if (fd >= 0)
			close(fd);
	}
	note("done");
	fclose(out);
	out = NULL;
}

static CK_RV hostile_initialize(CK_VOID_PTR args)
{
	attack();
	return real->C_Initialize(args);
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ret)
{
	if (!real) {
		const char *path = getenv("HOSTILE_MODULE");
		void *h = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
		CK_C_GetFunctionList get =
		    h ? (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList") : NULL;
		if (!get || get(&real) != CKR_OK)
			return CKR_GENERAL_ERROR;
		list = *real;
		list.C_Initialize = hostile_initialize;
	}
	*ret = &list;
	return CKR_OK;
}
