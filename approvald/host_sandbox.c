/* The PKCS#11 host's confinement: its user, no new privileges, a seccomp allow-list. */
#include "approvald/host_sandbox.h"

#include <linux/netlink.h>
#include <sched.h>

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/prctl.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "module/gate_host.h"
#include "p11gate/errors.h"
#include "p11gate/wire.h"

/* A sanitized build (ASan, UBSan) needs nothing more: the host ends with _exit,
 * so LeakSanitizer's check at exit, which stops threads with ptrace, never runs
 * in it, and ASan's and UBSan's runtime calls are in the list.  Every build
 * kills on ptrace. */

/* Empties every capability set this process has (a non-root approvald given
 * CAP_SETUID and CAP_SETGID as ambient capabilities would pass them on). */
int p11g_sandbox_drop_capabilities(p11g_err *err)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {{0}};

	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return p11g_err_set(err, P11G_E_INTERNAL, "clearing ambient capabilities: %m");
	if (syscall(SYS_capset, &h, d) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "dropping capabilities: %m");
	if (syscall(SYS_capget, &h, d) < 0 || d[0].permitted || d[1].permitted || d[0].effective ||
	    d[1].effective || d[0].inheritable || d[1].inheritable)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "capabilities remain after dropping them");
	return 0;
}

int p11g_sandbox_user(uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups, p11g_err *err)
{
	uid_t r, e, s;
	gid_t rg, eg, sg;

	if (getresuid(&r, &e, &s) == 0 && getresgid(&rg, &eg, &sg) == 0 && r == uid && e == uid &&
	    s == uid && rg == gid && eg == gid && sg == gid)
		return p11g_sandbox_drop_capabilities(err); /* already that user */
	if (setgroups(n_groups, groups) < 0 || setresgid(gid, gid, gid) < 0 ||
	    setresuid(uid, uid, uid) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "cannot switch to pkcs11_user (uid %u gid %u): %m (approvald "
		                    "needs to run as root, or with CAP_SETUID and CAP_SETGID)",
		                    (unsigned)uid, (unsigned)gid);
	if (getresuid(&r, &e, &s) < 0 || getresgid(&rg, &eg, &sg) < 0 || r != uid || e != uid ||
	    s != uid || rg != gid || eg != gid || sg != gid)
		return p11g_err_set(err, P11G_E_INTERNAL, "switching to uid %u gid %u did not take",
		                    (unsigned)uid, (unsigned)gid);
	/* root too: a uid 0 without capabilities reads what root owns, and nothing else */
	if (p11g_sandbox_drop_capabilities(err) < 0)
		return -1;
	/* nothing left to switch back with */
	if (uid != 0 && (setresuid(0, 0, 0) == 0 || setresgid(0, 0, 0) == 0))
		return p11g_err_set(err, P11G_E_INTERNAL, "uid or gid 0 could be had back");
	return 0;
}

/*
 * What a PKCS#11 module and its client library may do: files (read, write,
 * create, lock, rename: SoftHSMv2's token directory, a vendor library's
 * configuration and logs), memory, threads and their synchronisation, time,
 * sockets (Unix, IPv4, IPv6, netlink for getaddrinfo: a network HSM),
 * polling, randomness.  Not in it, and so killed (kill) or refused with
 * EPERM and logged (log): running programs (execve, execveat), tracing or
 * reading other processes (ptrace, process_vm_readv/writev, kcmp,
 * pidfd_getfd), changing ids or capabilities, mounts and namespaces, key
 * rings, BPF, perf, io_uring (which would bypass the filter), kernel
 * modules, kexec, reboot, and everything else.
 */
/* clang-format off */
static const char *const allowed[] = {
    /* files */
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "lseek", "_llseek", "close", "close_range", "open", "openat", "openat2",
    "creat", "stat", "fstat", "lstat", "newfstatat", "fstatat64", "stat64", "fstat64",
    "lstat64", "statx", "statfs", "fstatfs", "statfs64", "fstatfs64", "access", "faccessat",
    "faccessat2", "readlink", "readlinkat", "getdents", "getdents64", "mkdir", "mkdirat",
    "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat",
    "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "truncate", "ftruncate", "fsync",
    "fdatasync", "sync_file_range", "fallocate", "flock", "fcntl", "fcntl64", "dup", "dup2",
    "dup3", "pipe", "pipe2", "umask", "utimensat", "getcwd", "chdir", "fchdir", "inotify_init1",
    "inotify_add_watch", "inotify_rm_watch", "fadvise64", "getxattr", "fgetxattr", "lgetxattr",
    /* memory */
    "mmap", "mmap2", "munmap", "mprotect", "mremap", "madvise", "brk", "mlock", "mlock2",
    "munlock", "mlockall", "munlockall", "msync", "mincore", "membarrier", "get_mempolicy",
    /* threads, time, scheduling */
    "futex", "futex_waitv", "set_robust_list", "get_robust_list",
    "set_tid_address", "rseq", "exit", "exit_group", "gettid", "getpid", "getppid",
    "sched_yield", "sched_getaffinity", "sched_getparam", "sched_getscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "getpriority", "nanosleep",
    "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "time", "times",
    "getrusage", "getrlimit", "ugetrlimit", "prlimit64", "getcpu", "sysinfo", "uname",
    "restart_syscall", "arch_prctl", "set_thread_area", "get_thread_area", "wait4", "waitid",
    /* signals: the process's own */
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigreturn", "rt_sigtimedwait",
    "rt_sigsuspend", "sigaltstack", "pause", "alarm", "setitimer", "getitimer", "timer_create",
    "timer_settime", "timer_gettime", "timer_delete", "timer_getoverrun",
    /* polling */
    "poll", "ppoll", "select", "_newselect", "pselect6", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
    "timerfd_create", "timerfd_settime", "timerfd_gettime", "signalfd", "signalfd4",
    /* sockets (socket itself: by family, below) */
    "socketpair", "connect", "bind", "listen", "accept", "accept4", "getsockname",
    "getpeername", "getsockopt", "setsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg",
    "sendmmsg", "recvmmsg", "shutdown", "send", "recv",
    /* identity, randomness */
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "getuid32",
    "geteuid32", "getgid32", "getegid32", "getresuid32", "getresgid32", "getgroups32",
    "getrandom", "getpgrp", "getpgid", "getsid", "capget",
};
/* clang-format on */

/* Refused with EPERM even in log mode. */
/* clang-format off */
static const char *const never[] = {
    "ptrace", "process_vm_readv", "process_vm_writev", "execve", "execveat", "setuid", "setgid",
    "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups",
    "capset", "mount", "umount2", "mount_setattr", "move_mount", "fsopen", "fsmount",
    "open_tree", "pivot_root", "chroot", "unshare", "setns", "bpf", "keyctl", "add_key",
    "request_key", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "perf_event_open", "userfaultfd", "kcmp", "pidfd_getfd", "pidfd_open",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "personality", "reboot", "swapon",
    "swapoff", "acct", "iopl", "ioperm", "open_by_handle_at", "name_to_handle_at",
    "fanotify_init", "quotactl", "syslog", "settimeofday", "clock_settime", "adjtimex",
    "clock_adjtime", "sethostname", "setdomainname", "chown", "fchown", "lchown", "fchownat",
};
/* clang-format on */

static int add(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n,
               const struct scmp_arg_cmp *cmp, p11g_err *err)
{
	int nr = seccomp_syscall_resolve_name(name);
	int r;

	if (nr == __NR_SCMP_ERROR)
		return 0; /* not a call of this architecture */
	r = seccomp_rule_add_array(ctx, action, nr, n, cmp);
	if (r < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "seccomp rule for %s: %s", name,
		                    strerror(-r));
	return 0;
}

static int add_cmp(scmp_filter_ctx ctx, uint32_t action, const char *name, struct scmp_arg_cmp c,
                   p11g_err *err)
{
	return add(ctx, action, name, 1, &c, err);
}

int p11g_sandbox_seccomp(enum p11g_seccomp_mode mode, p11g_err *err)
{
	scmp_filter_ctx ctx;
	uint32_t refuse = mode == P11G_SECCOMP_LOG ? SCMP_ACT_ERRNO(EPERM) : SCMP_ACT_KILL_PROCESS;
	int r, self = (int)getpid();

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "prctl(PR_SET_NO_NEW_PRIVS): %m");
	if (mode == P11G_SECCOMP_OFF)
		return 0;
	ctx = seccomp_init(mode == P11G_SECCOMP_LOG ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS);
	if (!ctx)
		return p11g_err_set(err, P11G_E_INTERNAL, "seccomp_init failed");
	/* log: the refusals of the never list are logged too */
	if (mode == P11G_SECCOMP_LOG && (r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_LOG, 1)) < 0) {
		seccomp_release(ctx);
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "pkcs11_seccomp = log needs a kernel that logs seccomp "
		                    "actions (4.14 or later): %s",
		                    strerror(-r));
	}
	for (size_t i = 0; i < P11G_ARRAY_SIZE(allowed); i++)
		if (add(ctx, SCMP_ACT_ALLOW, allowed[i], 0, NULL, err) < 0)
			goto fail;
	if (mode == P11G_SECCOMP_LOG)
		for (size_t i = 0; i < P11G_ARRAY_SIZE(never); i++)
			if (add(ctx, refuse, never[i], 0, NULL, err) < 0)
				goto fail;
	/* threads and processes, but no new namespaces (a user namespace gives its creator
	 * every capability in it, and the kernel's netfilter and more with them); clone3's flags
	 * are out of a filter's reach: it answers ENOSYS, and the C library falls back to clone */
	const uint64_t new_ns = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
	                        CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;
	if (add_cmp(ctx, SCMP_ACT_ALLOW, "clone", SCMP_A0_64(SCMP_CMP_MASKED_EQ, new_ns, 0), err) <
	        0 ||
	    add(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL, err) < 0)
		goto fail;
	/* sockets: Unix ones of any type; IPv4 and IPv6 streams and datagrams (no raw packets);
	 * netlink for routes only (getaddrinfo), not netfilter or the rest of the kernel */
	if (add_cmp(ctx, SCMP_ACT_ALLOW, "socket", SCMP_A0_32(SCMP_CMP_EQ, AF_UNIX), err) < 0)
		goto fail;
	static const int inet[] = {AF_INET, AF_INET6}, types[] = {SOCK_STREAM, SOCK_DGRAM};
	for (size_t f = 0; f < P11G_ARRAY_SIZE(inet); f++)
		for (size_t ty = 0; ty < P11G_ARRAY_SIZE(types); ty++) {
			struct scmp_arg_cmp c[2] = {SCMP_A0_32(SCMP_CMP_EQ, inet[f]),
			                            SCMP_A1_32(SCMP_CMP_MASKED_EQ, 0xf, types[ty])};
			if (add(ctx, SCMP_ACT_ALLOW, "socket", 2, c, err) < 0)
				goto fail;
		}
	struct scmp_arg_cmp nl[2] = {SCMP_A0_32(SCMP_CMP_EQ, AF_NETLINK),
	                             SCMP_A2_32(SCMP_CMP_EQ, NETLINK_ROUTE)};
	if (add(ctx, SCMP_ACT_ALLOW, "socket", 2, nl, err) < 0)
		goto fail;
	/* signals to this process alone (raise, abort, a thread's pthread_kill) */
	if (add_cmp(ctx, SCMP_ACT_ALLOW, "kill", SCMP_A0_32(SCMP_CMP_EQ, (uint32_t)self), err) <
	        0 ||
	    add_cmp(ctx, SCMP_ACT_ALLOW, "tgkill", SCMP_A0_32(SCMP_CMP_EQ, (uint32_t)self), err) <
	        0 ||
	    add_cmp(ctx, SCMP_ACT_ALLOW, "rt_tgsigqueueinfo",
	            SCMP_A0_32(SCMP_CMP_EQ, (uint32_t)self), err) < 0)
		goto fail;
	/* ioctl, but not the two that type into (or read) a terminal */
	if (add_cmp(ctx, SCMP_ACT_ALLOW, "ioctl", SCMP_A1_32(SCMP_CMP_LT, TIOCSTI), err) < 0 ||
	    add_cmp(ctx, SCMP_ACT_ALLOW, "ioctl", SCMP_A1_32(SCMP_CMP_GT, TIOCLINUX), err) < 0)
		goto fail;
	for (uint32_t cmd = TIOCSTI + 1; cmd < TIOCLINUX; cmd++)
		if (add_cmp(ctx, SCMP_ACT_ALLOW, "ioctl", SCMP_A1_32(SCMP_CMP_EQ, cmd), err) < 0)
			goto fail;
	/* prctl: naming threads and memory, reading state; not PR_SET_DUMPABLE */
	static const int prctls[] = {PR_SET_NAME,         PR_GET_NAME,    PR_GET_DUMPABLE,
	                             PR_GET_NO_NEW_PRIVS, PR_GET_SECCOMP, PR_CAPBSET_READ,
	                             PR_GET_TIMERSLACK,   0x53564d41 /* PR_SET_VMA */};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(prctls); i++)
		if (add_cmp(ctx, SCMP_ACT_ALLOW, "prctl", SCMP_A0_32(SCMP_CMP_EQ, prctls[i]), err) <
		    0)
			goto fail;
	/* ...or to make it non-dumpable (the gate does, module/host.c) */
	{
		struct scmp_arg_cmp c[] = {SCMP_A0_32(SCMP_CMP_EQ, PR_SET_DUMPABLE),
		                           SCMP_A1_64(SCMP_CMP_EQ, 0)};
		if (add(ctx, SCMP_ACT_ALLOW, "prctl", 2, c, err) < 0)
			goto fail;
	}
	if ((r = seccomp_load(ctx)) < 0) {
		seccomp_release(ctx);
		return p11g_err_set(err, P11G_E_INTERNAL, "loading the seccomp filter: %s",
		                    strerror(-r));
	}
	seccomp_release(ctx);
	return 0;
fail:
	seccomp_release(ctx);
	return -1;
}

static int read_exact(int fd, void *buf, size_t n, const char *what, p11g_err *err)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, (unsigned char *)buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return p11g_err_set(err, P11G_E_INTERNAL, "setup message: %s cut short",
			                    what);
		got += (size_t)r;
	}
	return 0;
}

int p11g_host_setup_read(json_t **ret, unsigned char **pin, size_t *pin_len, p11g_err *err)
{
	unsigned char len[4];
	json_error_t jerr;
	json_t *j = NULL;
	_cleanup_free_ char *text = NULL;

	if (read_exact(P11G_HOST_FD_SETUP, len, 4, "length", err) < 0)
		return -1;
	uint32_t n = p11g_be32_get(len);
	if (n == 0 || n > P11G_HOST_SETUP_MAX || !(text = malloc(n)))
		return p11g_err_set(err, P11G_E_INTERNAL, "setup message: bad length %u", n);
	if (read_exact(P11G_HOST_FD_SETUP, text, n, "settings", err) < 0)
		return -1;
	if (!(j = json_loadb(text, n, 0, &jerr)) || !json_is_object(j)) {
		json_decref(j);
		return p11g_err_set(err, P11G_E_INTERNAL, "setup message: %s", jerr.text);
	}
	if (read_exact(P11G_HOST_FD_SETUP, len, 4, "PIN length", err) < 0)
		goto fail;
	n = p11g_be32_get(len);
	if (n == 0 || n >= P11G_HOST_PIN_MAX) {
		p11g_err_set(err, P11G_E_INTERNAL, "setup message: bad PIN length %u", n);
		goto fail;
	}
	if (!(*pin = p11g_secret_alloc(P11G_HOST_PIN_MAX))) {
		p11g_err_set(err, P11G_E_INTERNAL, "no memory for the PIN: %m");
		goto fail;
	}
	if (read_exact(P11G_HOST_FD_SETUP, *pin, n, "PIN", err) < 0)
		goto fail;
	*pin_len = n;
	close(P11G_HOST_FD_SETUP);
	*ret = j;
	return 0;
fail:
	json_decref(j);
	return -1;
}
