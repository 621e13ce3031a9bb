/* The PKCS#11 host's check of each RPC message's header, in p11-kit's own reads. */

/* This file defines read(2): no fortified inline read from <unistd.h> beside it. */
#undef _FORTIFY_SOURCE
#include "approvald/host_frames.h"

#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "p11gate/common.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

/*
 * p11-kit's RPC reader trusts the lengths in a message header (it allocates
 * what they say and waits for that many bytes, for ever).  So p11-kit does
 * not read the client's socket: p11_kit_remote_serve_module is given another
 * descriptor as its input, and this program's read(2), which the dynamic
 * linker binds libp11-kit's calls to before libc's, answers reads of that
 * descriptor from the client's socket, checked: the protocol byte, then for
 * each message its 12-byte header (call code, options length, body length)
 * read whole and its lengths checked against the limits before p11-kit sees a
 * byte of it, then the options and body, no further than the header said and
 * only until the message's deadline.  Between messages a client may stay
 * silent as long as it likes (an application holding its session); a message
 * once begun must arrive within frame_timeout.  A violation closes this
 * client's connection, and only it: p11-kit reads end of file and returns,
 * and the process ends.
 *
 * The check runs in p11-kit's thread, in the reads it makes anyway: no relay
 * thread, no second copy of each message (the relay thread that did this
 * before cost 7-30% of an ECDSA signature: HISTORY.md).  Every other
 * descriptor's read goes straight to the next read(2) (libc's, or a
 * sanitizer's).  Should libp11-kit ever read its input some other way (recv,
 * readv, __read_chk), it would read the descriptor itself, which only ever
 * gives end of file: the client is hung up on, nothing unchecked is served,
 * and p11g_frames_used() says so.
 */
#define RPC_HEADER      12
#define RPC_OPTIONS_MAX 4096 /* p11-kit sends none or a few bytes */

typedef ssize_t (*read_fn)(int, void *, size_t);

static read_fn next_read; /* set by the constructor, before any thread */
static int input_fd = -1; /* what p11-kit reads; -1 until p11g_frames_start */
static struct p11g_frames cfg;
static struct {
	bool used;         /* p11-kit has read through the check */
	bool version_done; /* the protocol byte was passed on */
	bool ended;        /* end of file, an error or a violation: EOF from now */
	unsigned char hdr[RPC_HEADER];
	size_t hdr_served;   /* RPC_HEADER between messages and in a body */
	uint64_t body_left;  /* options and body bytes of this message not yet read */
	int64_t deadline_us; /* this message's */
} st = {.hdr_served = RPC_HEADER};

__attribute__((constructor)) static void find_next_read(void)
{
	next_read = (read_fn)dlsym(RTLD_NEXT, "read");
}

static ssize_t pass_read(int fd, void *buf, size_t n)
{
	/* a library's constructor that reads, before ours ran */
	if (!next_read)
		return syscall(SYS_read, fd, buf, n);
	return next_read(fd, buf, n);
}

/* One read of the client, at most n bytes, waiting no later than deadline_us
 * (0: for ever): >0 bytes read, 0 at end of file, -1 with errno (ETIMEDOUT
 * when the deadline passed).  Within a message the bytes are most often there
 * already: a read that does not wait comes first, and poll only when it would
 * have to (a poll before each read of a message cost 8-10% of an ECDSA
 * signature on the bench's VM: HISTORY.md). */
static ssize_t client_read(void *buf, size_t n, int64_t deadline_us)
{
	ssize_t r;

	if (!deadline_us) {
		while ((r = pass_read(cfg.client, buf, n)) < 0 && errno == EINTR)
			;
		return r;
	}
	for (;;) {
		int64_t left = deadline_us - p11g_mono_us();
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		r = recv(cfg.client, buf, n, MSG_DONTWAIT);
		if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			return r;
		struct pollfd p = {.fd = cfg.client, .events = POLLIN};
		if (poll(&p, 1, (int)((left + 999) / 1000)) < 0 && errno != EINTR)
			return -1;
	}
}

#define frames_warn(fmt, ...)                                                                      \
	p11g_warn("PKCS#11 client uid %u pid %d: " fmt "; connection closed",                      \
	          (unsigned)cfg.peer.uid, (int)cfg.peer.pid, ##__VA_ARGS__)

/* What p11-kit reads after an end: end of file (at a message boundary it
 * returns quietly; within one it logs a truncated message). */
static ssize_t end(bool violation)
{
	/* p11-kit may be writing a reply: make that fail too. */
	if (violation)
		shutdown(cfg.client, SHUT_RDWR);
	st.ended = true;
	return 0;
}

static const char *why(ssize_t r)
{
	return r == 0               ? "connection closed"
	       : errno == ETIMEDOUT ? "frame timeout"
	                            : strerror(errno);
}

/* The next message's header, read whole and checked; false at the end. */
static bool next_header(void)
{
	/* idle as long as the client likes, then the whole message in time */
	ssize_t r = client_read(st.hdr, RPC_HEADER, 0);
	if (r <= 0) {
		end(false);
		return false;
	}
	st.deadline_us = p11g_mono_us() + (int64_t)cfg.frame_ms * 1000;
	for (size_t got = (size_t)r; got < RPC_HEADER; got += (size_t)r) {
		r = client_read(st.hdr + got, RPC_HEADER - got, st.deadline_us);
		if (r <= 0) {
			frames_warn("message header incomplete (%s)", why(r));
			end(true);
			return false;
		}
	}
	uint32_t olen = p11g_be32_get(st.hdr + 4), blen = p11g_be32_get(st.hdr + 8);
	if (olen > RPC_OPTIONS_MAX || blen > cfg.message_max) {
		frames_warn("message of %u + %u bytes over the limit (%zu; pkcs11_message_max)",
		            olen, blen, cfg.message_max);
		end(true);
		return false;
	}
	st.hdr_served = 0;
	st.body_left = (uint64_t)olen + blen;
	return true;
}

/* p11-kit's read of its input. */
static ssize_t frames_read(unsigned char *buf, size_t n)
{
	st.used = true;
	if (st.ended || n == 0)
		return 0;
	if (!st.version_done) {
		ssize_t r = client_read(buf, 1, 0);
		if (r <= 0)
			return end(false);
		st.version_done = true;
		return r;
	}
	if (st.hdr_served == RPC_HEADER && st.body_left == 0 && !next_header())
		return 0;
	if (st.hdr_served < RPC_HEADER) {
		size_t k = RPC_HEADER - st.hdr_served < n ? RPC_HEADER - st.hdr_served : n;
		memcpy(buf, st.hdr + st.hdr_served, k);
		st.hdr_served += k;
		return (ssize_t)k;
	}
	ssize_t r = client_read(buf, st.body_left < n ? (size_t)st.body_left : n, st.deadline_us);
	if (r <= 0) {
		frames_warn("message incomplete (%s)", why(r));
		return end(true);
	}
	st.body_left -= (uint64_t)r;
	return r;
}

ssize_t read(int fd, void *buf, size_t n)
{
	if (fd < 0 || fd != __atomic_load_n(&input_fd, __ATOMIC_ACQUIRE))
		return pass_read(fd, buf, n);
	return frames_read(buf, n);
}

int p11g_frames_start(const struct p11g_frames *f)
{
	int pp[2];

	/* A descriptor that reads end of file and nothing else: the other end
	 * of a socket pair, closed (the sandbox allows socketpair, not pipe). */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pp) < 0)
		return -1;
	close(pp[1]);
	cfg = *f;
	__atomic_store_n(&input_fd, pp[0], __ATOMIC_RELEASE);
	return pp[0];
}

bool p11g_frames_used(void)
{
	return st.used;
}
