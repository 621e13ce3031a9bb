/* Unit tests for the wire protocol library: framing, strict decoding and the client call. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "p11gate/wire.h"

/* ---- helpers ------------------------------------------------------------ */

static void make_pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t r = send(fd, p, len, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		assert_true(r > 0);
		p += r;
		len -= (size_t)r;
	}
}

static void write_header(int fd, uint32_t len)
{
	unsigned char h[P11G_FRAME_HEADER];
	p11g_be32_put(h, len);
	write_all(fd, h, sizeof(h));
}

static void write_frame(int fd, const char *payload)
{
	write_header(fd, (uint32_t)strlen(payload));
	write_all(fd, payload, strlen(payload));
}

/* True when nothing is waiting to be read on fd. */
static bool nothing_to_read(int fd)
{
	char c;
	return recv(fd, &c, 1, MSG_DONTWAIT) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static json_t *decode_str(const char *s, p11g_err *err)
{
	return p11g_wire_decode(s, strlen(s), err);
}

/* ---- encode / decode ---------------------------------------------------- */

static void test_round_trip(void **state)
{
	json_auto_t *obj =
	    json_pack("{s:i, s:s, s:{s:[i,b,n]}, s:s, s:f}", "v", 1, "verb", "request", "nested",
	              "list", 1, 1, "text", "caf\xc3\xa9 \"quoted\"\n", "real", 1.5);
	p11g_err err = {0};
	size_t len = 0;

	assert_non_null(obj);
	char *buf = p11g_wire_encode(obj, &len);
	assert_non_null(buf);
	assert_int_equal(len, strlen(buf));
	/* Compact: no spaces or newlines between tokens. */
	assert_null(strstr(buf, ", "));
	assert_null(strchr(buf, '\n'));
	json_auto_t *back = p11g_wire_decode(buf, len, &err);
	assert_non_null(back);
	assert_true(json_equal(obj, back));
	free(buf);
}

static void test_encode_limits(void **state)
{
	/* {"a":"..."} is 8 bytes plus the string. */
	size_t n = P11G_FRAME_MAX - 8;
	char *s = malloc(n + 2);
	size_t len = 0;

	assert_non_null(s);
	memset(s, 'x', n + 1);
	s[n] = '\0';
	json_auto_t *fits = json_pack("{s:s}", "a", s);
	char *buf = p11g_wire_encode(fits, &len);
	assert_non_null(buf);
	assert_int_equal(len, P11G_FRAME_MAX);
	free(buf);

	s[n] = 'x';
	s[n + 1] = '\0';
	json_auto_t *over = json_pack("{s:s}", "a", s);
	assert_null(p11g_wire_encode(over, &len));
	free(s);

	json_auto_t *arr = json_pack("[i]", 1);
	assert_null(p11g_wire_encode(arr, &len));
	assert_null(p11g_wire_encode(NULL, &len));
}

static void expect_bad(const char *buf, size_t len, const char *not_in_msg)
{
	p11g_err err = {0};
	json_t *v = p11g_wire_decode(buf, len, &err);
	assert_null(v);
	assert_non_null(err.code);
	assert_string_equal(err.code, P11G_E_BAD_REQUEST);
	assert_true(strlen(err.msg) > 0);
	/* The daemon logs this sentence: it must not quote the payload. */
	if (not_in_msg)
		assert_null(strstr(err.msg, not_in_msg));
}

static void test_decode_strict(void **state)
{
	static const struct {
		const char *text;
		const char *secret;
	} bad[] = {
	    {"{\"verb\":\"a\",\"verb\":\"b\"}", "verb"},
	    {"{\"a\":{\"k\":1,\"k\":2}}", NULL},
	    {"{\"v\":1} {}", NULL},
	    {"{\"v\":1}x", NULL},
	    {"{\"v\":1}{\"v\":1}", NULL},
	    {"[{\"v\":1}]", NULL},
	    {"\"status\"", "status"},
	    {"42", NULL},
	    {"null", NULL},
	    {"{\"v\":1,\"verb\":", "verb"},
	    {"{\"secret-token\" 1}", "secret-token"},
	    {"garbage-secret", "garbage-secret"},
	    {"{\"v\":\"st\xc3\x28tus\"}", NULL},
	    {"{\"v\":\"a\\u0000b\"}", NULL},
	    {"", NULL},
	    {" ", NULL},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++)
		expect_bad(bad[i].text, strlen(bad[i].text), bad[i].secret);

	/* A NUL byte inside the frame, after a complete object. */
	expect_bad("{\"v\":1}\0", 8, NULL);
	expect_bad(NULL, 0, NULL);

	/* Whitespace around the value is part of JSON text (RFC 8259). */
	p11g_err err = {0};
	json_auto_t *ok = decode_str(" {\"v\":1}\n", &err);
	assert_non_null(ok);
	assert_int_equal(json_integer_value(json_object_get(ok, "v")), 1);
}

/* ---- send / recv -------------------------------------------------------- */

static void test_send_limits(void **state)
{
	int sv[2];
	char *big = malloc(P11G_FRAME_MAX + 1);
	char *buf = NULL;
	size_t len = 0;

	assert_non_null(big);
	memset(big, ' ', P11G_FRAME_MAX + 1);
	make_pair(sv);
	assert_int_equal(p11g_wire_send(sv[0], "{}", 0), -EMSGSIZE);
	assert_int_equal(p11g_wire_send(sv[0], big, P11G_FRAME_MAX + 1), -EMSGSIZE);
	assert_true(nothing_to_read(sv[1]));

	/* The maximum itself is a valid frame. */
	assert_int_equal(p11g_wire_send(sv[0], big, P11G_FRAME_MAX), 0);
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 1000), 0);
	assert_int_equal(len, P11G_FRAME_MAX);
	assert_int_equal(buf[len], '\0');
	free(buf);

	/* A closed peer is an error, not a SIGPIPE: a child with the default
	 * disposition would die of one. */
	close(sv[1]);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGPIPE, SIG_DFL);
		_exit(p11g_wire_send(sv[0], "{}", 2) == -EPIPE ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(sv[0]);
	free(big);
}

static void test_recv_whole_frame(void **state)
{
	int sv[2];
	char *buf = NULL;
	size_t len = 0;

	make_pair(sv);
	assert_int_equal(p11g_wire_send(sv[0], "{\"v\":1}", 7), 0);
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 1000), 0);
	assert_int_equal(len, 7);
	assert_string_equal(buf, "{\"v\":1}");
	free(buf);

	/* Two frames back to back come out one at a time. */
	write_frame(sv[0], "{\"a\":1}");
	write_frame(sv[0], "{\"b\":22}");
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 1000), 0);
	assert_string_equal(buf, "{\"a\":1}");
	free(buf);
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 1000), 0);
	assert_string_equal(buf, "{\"b\":22}");
	assert_int_equal(len, 8);
	free(buf);
	close(sv[0]);
	close(sv[1]);
}

struct trickle {
	int fd;
	const char *data;
	size_t len;
	bool close_after;
};

static void *trickle_thread(void *arg)
{
	struct trickle *t = arg;
	for (size_t i = 0; i < t->len; i++) {
		if (send(t->fd, t->data + i, 1, MSG_NOSIGNAL) != 1)
			break;
		usleep(2000);
	}
	if (t->close_after)
		close(t->fd);
	return NULL;
}

static void test_recv_split(void **state)
{
	static const char frame[] = "\0\0\0\x0b{\"split\":1}";
	int sv[2];
	char *buf = NULL;
	size_t len = 0;
	pthread_t th;

	make_pair(sv);
	struct trickle t = {.fd = sv[0], .data = frame, .len = sizeof(frame) - 1};
	assert_int_equal(pthread_create(&th, NULL, trickle_thread, &t), 0);
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 5000), 0);
	pthread_join(th, NULL);
	assert_int_equal(len, 11);
	assert_string_equal(buf, "{\"split\":1}");
	free(buf);
	close(sv[0]);
	close(sv[1]);
}

static void test_recv_bad_length(void **state)
{
	int sv[2];
	char *buf = NULL;
	size_t len = 0;

	make_pair(sv);
	write_header(sv[0], 0);
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 1000), -EMSGSIZE);
	close(sv[0]);
	close(sv[1]);

	make_pair(sv);
	write_header(sv[0], P11G_FRAME_MAX + 1);
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 1000), -EMSGSIZE);
	close(sv[0]);
	close(sv[1]);

	make_pair(sv);
	write_header(sv[0], 0xffffffffu);
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 1000), -EMSGSIZE);
	assert_null(buf);
	close(sv[0]);
	close(sv[1]);
}

static long vm_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long pages = 0;
	if (!f)
		return -1;
	if (fscanf(f, "%lu", &pages) != 1)
		pages = 0;
	fclose(f);
	return (long)pages * sysconf(_SC_PAGESIZE);
}

/*
 * A 10 MiB length prefix is refused before any allocation: the child runs
 * under an address-space limit that a 10 MiB malloc would break (ENOMEM
 * instead of EMSGSIZE), and without a body to read, an implementation that
 * waited for one would time out instead.
 */
static void test_recv_10mib_prefix(void **state)
{
	int sv[2];
	pid_t pid;
	int status;

#ifdef __SANITIZE_ADDRESS__
	/* ASan reserves terabytes of shadow memory: no address-space limit fits. */
	skip();
#endif
	make_pair(sv);
	write_header(sv[0], 10u * 1024 * 1024);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char *buf = NULL;
		size_t len = 0;
		long vm = vm_bytes();
		if (vm <= 0)
			_exit(10);
		struct rlimit rl = {.rlim_cur = (rlim_t)vm + 4 * 1024 * 1024,
		                    .rlim_max = (rlim_t)vm + 4 * 1024 * 1024};
		if (setrlimit(RLIMIT_AS, &rl) < 0)
			_exit(11);
		/* The limit bites: a 10 MiB allocation fails here. */
		void *probe = malloc(10u * 1024 * 1024);
		if (probe)
			_exit(12);
		int64_t t0 = p11g_mono_us();
		int rc = p11g_wire_recv(sv[1], &buf, &len, 3000);
		if (rc != -EMSGSIZE)
			_exit(rc == -ENOMEM ? 13 : rc == -ETIMEDOUT ? 14 : 15);
		if (p11g_mono_us() - t0 > 1000000)
			_exit(16);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(sv[0]);
	close(sv[1]);
}

static void test_recv_timeout(void **state)
{
	int sv[2];
	char *buf = NULL;
	size_t len = 0;
	int64_t t0;

	make_pair(sv);
	t0 = p11g_mono_us();
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 150), -ETIMEDOUT);
	int64_t el = p11g_mono_us() - t0;
	assert_true(el >= 140000 && el < 2000000);

	/* A frame that starts but never finishes times out as a whole. */
	write_header(sv[0], 20);
	write_all(sv[0], "{\"v\":", 5);
	t0 = p11g_mono_us();
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 150), -ETIMEDOUT);
	el = p11g_mono_us() - t0;
	assert_true(el >= 140000 && el < 2000000);
	assert_null(buf);
	close(sv[0]);
	close(sv[1]);
}

static void test_recv_peer_closed(void **state)
{
	int sv[2];
	char *buf = NULL;
	size_t len = 0;

	/* Closed mid-body. */
	make_pair(sv);
	write_header(sv[0], 20);
	write_all(sv[0], "{\"v\":", 5);
	close(sv[0]);
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 1000), -ECONNRESET);
	assert_null(buf);
	close(sv[1]);

	/* Closed mid-header. */
	make_pair(sv);
	write_all(sv[0], "\0\0", 2);
	close(sv[0]);
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 1000), -ECONNRESET);
	close(sv[1]);

	/* Closed before anything, while we wait. */
	make_pair(sv);
	pthread_t th;
	struct trickle t = {.fd = sv[0], .data = "", .len = 0, .close_after = true};
	assert_int_equal(pthread_create(&th, NULL, trickle_thread, &t), 0);
	assert_int_equal(p11g_wire_recv(sv[1], &buf, &len, 5000), -ECONNRESET);
	pthread_join(th, NULL);
	close(sv[1]);
}

/* ---- call --------------------------------------------------------------- */

/* A tiny fake daemon: reads one request (unless told to answer first),
 * keeps it, writes a canned reply payload (or nothing) and maybe closes. */
struct fake_peer {
	int fd;
	const char *reply; /* raw payload; NULL: send nothing */
	bool answer_first; /* like a daemon at its connection limit */
	bool close_after;
	json_t *seen;
};

static void *fake_peer_thread(void *arg)
{
	struct fake_peer *p = arg;
	char *buf = NULL;
	size_t len = 0;

	if (!p->answer_first && p11g_wire_recv(p->fd, &buf, &len, 5000) == 0) {
		p->seen = p11g_wire_decode(buf, len, NULL);
		free(buf);
	}
	if (p->reply)
		p11g_wire_send(p->fd, p->reply, strlen(p->reply));
	if (p->close_after)
		close(p->fd);
	return NULL;
}

struct call_outcome {
	int rc;
	p11g_err err;
	json_t *result;
	json_t *seen;
};

static struct call_outcome call_fake(const char *reply, bool answer_first, bool close_after,
                                     int timeout_ms)
{
	struct call_outcome o = {0};
	int sv[2];
	pthread_t th;
	struct fake_peer p = {
	    .reply = reply, .answer_first = answer_first, .close_after = close_after};

	make_pair(sv);
	p.fd = sv[1];
	if (answer_first) {
		/* Reply and close before the request is even sent. */
		fake_peer_thread(&p);
	} else {
		assert_int_equal(pthread_create(&th, NULL, fake_peer_thread, &p), 0);
	}
	json_t *req = json_pack("{s:s, s:i}", "verb", "show", "id", 7);
	o.rc = p11g_wire_call(sv[0], req, &o.result, timeout_ms, &o.err);
	json_decref(req);
	if (!answer_first)
		pthread_join(th, NULL);
	o.seen = p.seen;
	close(sv[0]);
	if (!close_after)
		close(sv[1]);
	return o;
}

static void outcome_clear(struct call_outcome *o)
{
	json_decref(o->result);
	json_decref(o->seen);
}

static void test_call_ok(void **state)
{
	struct call_outcome o =
	    call_fake("{\"v\":1,\"ok\":true,\"result\":{\"id\":7,\"state\":\"pending\"}}", false,
	              false, 2000);
	assert_int_equal(o.rc, 0);
	assert_non_null(o.result);
	assert_int_equal(json_integer_value(json_object_get(o.result, "id")), 7);
	assert_string_equal(json_string_value(json_object_get(o.result, "state")), "pending");
	/* The request went out with "v": 1 added. */
	assert_non_null(o.seen);
	assert_int_equal(json_integer_value(json_object_get(o.seen, "v")), 1);
	assert_string_equal(json_string_value(json_object_get(o.seen, "verb")), "show");
	outcome_clear(&o);
}

static void test_call_error_known(void **state)
{
	struct call_outcome o = call_fake("{\"v\":1,\"ok\":false,\"error\":{\"code\":\"not_found\","
	                                  "\"message\":\"no operation 7\"}}",
	                                  false, false, 2000);
	assert_int_equal(o.rc, -1);
	assert_null(o.result);
	/* A stable string that outlives the reply. */
	assert_string_equal(o.err.code, P11G_E_NOT_FOUND);
	assert_string_equal(o.err.msg, "no operation 7");
	outcome_clear(&o);

	o = call_fake("{\"v\":1,\"ok\":false,\"error\":{\"code\":\"self_approval\","
	              "\"message\":\"you ordered it\"}}",
	              false, false, 2000);
	assert_int_equal(o.rc, -1);
	assert_string_equal(o.err.code, P11G_E_SELF_APPROVAL);
	outcome_clear(&o);
}

static void test_call_error_unknown_code(void **state)
{
	struct call_outcome o = call_fake("{\"v\":1,\"ok\":false,\"error\":{\"code\":\"martian\","
	                                  "\"message\":\"from the future\"}}",
	                                  false, false, 2000);
	assert_int_equal(o.rc, -1);
	assert_string_equal(o.err.code, P11G_E_PROTOCOL);
	assert_non_null(strstr(o.err.msg, "martian"));
	assert_non_null(strstr(o.err.msg, "from the future"));
	outcome_clear(&o);
}

static void test_call_bad_replies(void **state)
{
	static const char *const bad[] = {
	    "{\"ok\":true,\"result\":{}}",                       /* no v */
	    "{\"v\":2,\"ok\":true,\"result\":{}}",               /* other version */
	    "{\"v\":\"1\",\"ok\":true,\"result\":{}}",           /* v not an integer */
	    "{\"v\":1,\"ok\":1,\"result\":{}}",                  /* ok not boolean */
	    "{\"v\":1,\"result\":{}}",                           /* no ok */
	    "{\"v\":1,\"ok\":true}",                             /* no result */
	    "{\"v\":1,\"ok\":true,\"result\":[]}",               /* result not an object */
	    "{\"v\":1,\"ok\":false}",                            /* no error */
	    "{\"v\":1,\"ok\":false,\"error\":{\"code\":\"x\"}}", /* no message */
	    "{\"v\":1,\"ok\":false,\"error\":\"x\"}",            /* error not an object */
	    "{\"v\":1,\"ok\":true,\"result\":{}} {}",            /* trailing bytes */
	    "{\"v\":1,\"ok\":true,\"ok\":true,\"result\":{}}",   /* duplicate key */
	    "not json",
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		struct call_outcome o = call_fake(bad[i], false, false, 2000);
		assert_int_equal(o.rc, -1);
		assert_null(o.result);
		assert_string_equal(o.err.code, P11G_E_PROTOCOL);
		outcome_clear(&o);
	}
}

static void test_call_transport(void **state)
{
	/* Closed without answering. */
	struct call_outcome o = call_fake(NULL, false, true, 2000);
	assert_int_equal(o.rc, -1);
	assert_string_equal(o.err.code, P11G_E_UNAVAILABLE);
	outcome_clear(&o);

	/* Silent peer. */
	int64_t t0 = p11g_mono_us();
	o = call_fake(NULL, false, false, 200);
	assert_int_equal(o.rc, -1);
	assert_string_equal(o.err.code, P11G_E_TIMEOUT);
	assert_true(p11g_mono_us() - t0 < 2000000);
	outcome_clear(&o);

	/* A daemon at its limit answers first and closes: the caller gets
	 * that answer, not a bare EPIPE. */
	o = call_fake("{\"v\":1,\"ok\":false,\"error\":{\"code\":\"limit_exceeded\","
	              "\"message\":\"too many connections\"}}",
	              true, true, 2000);
	assert_int_equal(o.rc, -1);
	assert_string_equal(o.err.code, P11G_E_LIMIT);
	assert_string_equal(o.err.msg, "too many connections");
	outcome_clear(&o);

	/* A request that is not an object is refused locally. */
	p11g_err err = {0};
	json_t *res = NULL;
	json_auto_t *arr = json_array();
	assert_int_equal(p11g_wire_call(-1, arr, &res, 100, &err), -1);
	assert_string_equal(err.code, P11G_E_BAD_REQUEST);
}

struct accept_one {
	int lfd;
};

static void *accept_one_thread(void *arg)
{
	struct accept_one *a = arg;
	int fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC);
	char *buf = NULL;
	size_t len = 0;

	if (fd < 0)
		return NULL;
	if (p11g_wire_recv(fd, &buf, &len, 5000) == 0) {
		static const char rep[] = "{\"v\":1,\"ok\":true,\"result\":{\"pong\":true}}";
		p11g_wire_send(fd, rep, strlen(rep));
		free(buf);
	}
	close(fd);
	return NULL;
}

static void test_connect_and_call_path(void **state)
{
	char dir[] = "/tmp/p11g-wire-XXXXXX";
	char path[128];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	p11g_err err = {0};
	pthread_t th;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sock", dir);

	/* Nobody there yet. */
	assert_int_equal(p11g_wire_connect(path, &err), -1);
	assert_string_equal(err.code, P11G_E_UNAVAILABLE);
	assert_non_null(strstr(err.msg, "approvald is not reachable at "));
	assert_non_null(strstr(err.msg, path));
	assert_non_null(strstr(err.msg, "No such file or directory"));
	assert_non_null(strstr(err.msg, "(is approvald running?)"));

	char longpath[200];
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(p11g_wire_connect(longpath, &err), -1);
	assert_string_equal(err.code, P11G_E_UNAVAILABLE);

	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	struct accept_one a = {.lfd = lfd};
	assert_int_equal(pthread_create(&th, NULL, accept_one_thread, &a), 0);

	json_t *req = json_pack("{s:s}", "verb", "status");
	json_t *res = NULL;
	assert_int_equal(p11g_wire_call_path(path, req, &res, 2000, &err), 0);
	assert_true(json_is_true(json_object_get(res, "pong")));
	json_decref(res);
	json_decref(req);
	pthread_join(th, NULL);

	/* The fd is close-on-exec. */
	int fd = p11g_wire_connect(path, &err);
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);

	close(lfd);
	unlink(path);
	rmdir(dir);
}

static void test_socket_path(void **state)
{
	unsetenv("APPROVALD_SOCKET");
	assert_string_equal(p11g_wire_socket_path(NULL), P11G_DEFAULT_SOCKET);
	assert_string_equal(p11g_wire_socket_path("/x/y.sock"), "/x/y.sock");
	setenv("APPROVALD_SOCKET", "/env/approvald.sock", 1);
	assert_string_equal(p11g_wire_socket_path(NULL), "/env/approvald.sock");
	assert_string_equal(p11g_wire_socket_path("/x/y.sock"), "/x/y.sock");
	setenv("APPROVALD_SOCKET", "", 1);
	assert_string_equal(p11g_wire_socket_path(NULL), P11G_DEFAULT_SOCKET);
	unsetenv("APPROVALD_SOCKET");
}

/* ---- the frame codec ----------------------------------------------------- */

/* Feeds bytes to a reader one at a time, as a trickling peer would. */
static int feed_bytewise(struct p11g_frame_reader *r, const unsigned char *buf, size_t len,
                         size_t *ret_used)
{
	size_t i;
	int rc = 0;

	for (i = 0; i < len && rc == 0; i++) {
		size_t want;
		unsigned char *dst = p11g_frame_reader_next(r, &want);
		assert_true(want >= 1);
		*dst = buf[i];
		rc = p11g_frame_reader_add(r, 1);
	}
	*ret_used = i;
	return rc;
}

static void test_frame_reader(void **state)
{
	struct p11g_frame_reader r = {0};
	unsigned char two[2 * P11G_FRAME_HEADER + 7];
	size_t used, len, want;
	char *body;
	(void)state;

	/* Two frames back to back: the first ends exactly at its last byte. */
	assert_int_equal(p11g_frame_header_encode(two, 2), 0);
	memcpy(two + 4, "{}", 2);
	assert_int_equal(p11g_frame_header_encode(two + 6, 5), 0);
	memcpy(two + 10, "[1,2]", 5);
	assert_false(p11g_frame_reader_started(&r));
	assert_int_equal(feed_bytewise(&r, two, sizeof(two), &used), 1);
	assert_int_equal(used, 6);
	body = p11g_frame_reader_take(&r, &len);
	assert_int_equal(len, 2);
	assert_string_equal(body, "{}");
	free(body);
	assert_false(p11g_frame_reader_started(&r));
	assert_int_equal(feed_bytewise(&r, two + 6, sizeof(two) - 6, &used), 1);
	assert_int_equal(used, sizeof(two) - 6);
	body = p11g_frame_reader_take(&r, &len);
	assert_int_equal(len, 5);
	assert_string_equal(body, "[1,2]");
	free(body);

	/* Whole chunks: the reader asks for the header, then exactly the body. */
	assert_ptr_equal(p11g_frame_reader_next(&r, &want), r.header);
	assert_int_equal(want, P11G_FRAME_HEADER);
	p11g_be32_put(r.header, 3);
	assert_int_equal(p11g_frame_reader_add(&r, P11G_FRAME_HEADER), 0);
	assert_true(p11g_frame_reader_started(&r));
	memcpy(p11g_frame_reader_next(&r, &want), "abc", 3);
	assert_int_equal(want, 3);
	assert_int_equal(p11g_frame_reader_add(&r, 3), 1);
	free(p11g_frame_reader_take(&r, NULL));

	/* Lengths outside 1..P11G_FRAME_MAX, refused before any allocation. */
	static const uint32_t bad[] = {0, P11G_FRAME_MAX + 1, UINT32_MAX};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		unsigned char h[P11G_FRAME_HEADER];
		p11g_be32_put(h, bad[i]);
		assert_int_equal(feed_bytewise(&r, h, sizeof(h), &used), -EMSGSIZE);
		assert_int_equal(r.len, bad[i]);
		assert_null(r.body);
		p11g_frame_reader_clear(&r);
		assert_false(p11g_frame_reader_started(&r));
	}
	/* A partial frame is dropped whole. */
	assert_int_equal(feed_bytewise(&r, two, 5, &used), 0);
	assert_true(p11g_frame_reader_started(&r));
	p11g_frame_reader_clear(&r);
	assert_false(p11g_frame_reader_started(&r));
	assert_null(r.body);
}

static void test_frame_encode(void **state)
{
	json_auto_t *obj = json_pack("{s:s}", "verb", "status");
	json_auto_t *over = json_object();
	unsigned char h[P11G_FRAME_HEADER];
	size_t len;
	char *frame;
	(void)state;

	frame = p11g_frame_encode(obj, &len);
	assert_non_null(frame);
	assert_int_equal(len, P11G_FRAME_HEADER + strlen("{\"verb\":\"status\"}"));
	assert_int_equal(p11g_be32_get((unsigned char *)frame), len - P11G_FRAME_HEADER);
	assert_memory_equal(frame + P11G_FRAME_HEADER, "{\"verb\":\"status\"}",
	                    len - P11G_FRAME_HEADER);
	free(frame);

	char *big = malloc(P11G_FRAME_MAX);
	assert_non_null(big);
	memset(big, 'a', P11G_FRAME_MAX - 1);
	big[P11G_FRAME_MAX - 1] = '\0';
	assert_int_equal(json_object_set_new(over, "x", json_string(big)), 0);
	free(big);
	assert_null(p11g_frame_encode(over, &len));
	json_auto_t *arr = json_array();
	assert_null(p11g_frame_encode(arr, &len));

	assert_int_equal(p11g_frame_header_encode(h, 0), -EMSGSIZE);
	assert_int_equal(p11g_frame_header_encode(h, P11G_FRAME_MAX + 1), -EMSGSIZE);
	assert_int_equal(p11g_frame_header_encode(h, P11G_FRAME_MAX), 0);
	assert_memory_equal(h, "\x00\x01\x00\x00", 4);
}

static void test_envelope(void **state)
{
	static const struct {
		const char *req, *verb, *msg;
	} cases[] = {
	    {"{\"v\":1,\"verb\":\"status\"}", "status", NULL},
	    {"{\"verb\":\"status\"}", NULL, "the request has no \"v\""},
	    {"{\"v\":2,\"verb\":\"status\"}", NULL, "unsupported protocol version"},
	    {"{\"v\":\"1\",\"verb\":\"status\"}", NULL, "unsupported protocol version"},
	    {"{\"v\":1,\"verb\":7}", NULL, "the request has no \"verb\" string"},
	};
	(void)state;

	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		json_auto_t *req = decode_str(cases[i].req, NULL);
		p11g_err err = {0};
		const char *verb = p11g_wire_request_verb(req, &err);
		if (cases[i].verb) {
			assert_string_equal(verb, cases[i].verb);
			continue;
		}
		assert_null(verb);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
		assert_non_null(strstr(err.msg, cases[i].msg));
	}

	json_auto_t *ok = p11g_wire_reply_ok(json_pack("{s:i}", "n", 1));
	assert_non_null(ok);
	assert_true(json_is_true(json_object_get(ok, "ok")));
	assert_int_equal(json_integer_value(json_object_get(ok, "v")), P11G_WIRE_VERSION);
	/* A message cut inside a UTF-8 sequence loses the partial character. */
	json_auto_t *e = p11g_wire_reply_error(P11G_E_LIMIT, "cut \xc3");
	assert_non_null(e);
	assert_true(json_is_false(json_object_get(e, "ok")));
	json_t *error = json_object_get(e, "error");
	assert_string_equal(json_string_value(json_object_get(error, "code")), P11G_E_LIMIT);
	assert_string_equal(json_string_value(json_object_get(error, "message")), "cut ");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_frame_reader),
	    cmocka_unit_test(test_frame_encode),
	    cmocka_unit_test(test_envelope),
	    cmocka_unit_test(test_encode_limits),
	    cmocka_unit_test(test_decode_strict),
	    cmocka_unit_test(test_send_limits),
	    cmocka_unit_test(test_recv_whole_frame),
	    cmocka_unit_test(test_recv_split),
	    cmocka_unit_test(test_recv_bad_length),
	    cmocka_unit_test(test_recv_10mib_prefix),
	    cmocka_unit_test(test_recv_timeout),
	    cmocka_unit_test(test_recv_peer_closed),
	    cmocka_unit_test(test_call_ok),
	    cmocka_unit_test(test_call_error_known),
	    cmocka_unit_test(test_call_error_unknown_code),
	    cmocka_unit_test(test_call_bad_replies),
	    cmocka_unit_test(test_call_transport),
	    cmocka_unit_test(test_connect_and_call_path),
	    cmocka_unit_test(test_socket_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
