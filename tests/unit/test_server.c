/* Unit tests for approvald's socket server: a real server in a forked child, over its socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "approvald/server.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define CALL_MS 3000

/* ---- the server under test ---------------------------------------------- */

struct app {
	struct p11g_server *server;
	int reloads;
	int ticks;
};

static int h_echo(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                  p11g_err *err, struct p11g_wait *wait)
{
	json_t *data = json_object_get(req, "data");
	*ret = json_pack("{s:O?}", "echo", data);
	return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
}

static int h_fail(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                  p11g_err *err, struct p11g_wait *wait)
{
	return p11g_err_set(err, P11G_E_FORBIDDEN, "this verb always fails");
}

static int h_whoami(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                    p11g_err *err, struct p11g_wait *wait)
{
	*ret = json_pack("{s:I, s:I, s:I, s:s}", "uid", (json_int_t)caller->uid, "gid",
	                 (json_int_t)caller->gid, "pid", (json_int_t)caller->pid, "user",
	                 caller->user);
	return 0;
}

/* Parks on operation 7 (or "op") until woken or "timeout_ms" passes. */
static int h_wait(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                  p11g_err *err, struct p11g_wait *wait)
{
	if (!wait->resumed) {
		json_int_t ms = json_integer_value(json_object_get(req, "timeout_ms"));
		wait->op_id = 7;
		wait->deadline_us = p11g_mono_us() + (ms > 0 ? ms : 5000) * 1000;
		return P11G_HANDLER_WAIT;
	}
	*ret = json_pack("{s:b}", "timed_out", p11g_mono_us() >= wait->deadline_us);
	return 0;
}

static int h_wake(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                  p11g_err *err, struct p11g_wait *wait)
{
	struct app *a = app;
	json_t *op = json_object_get(req, "op");
	p11g_server_wake(a->server, op ? (uint64_t)json_integer_value(op) : 7);
	*ret = json_object();
	return 0;
}

/* The server's identity lookups (the user and group files read), counted: the test is linked
 * with --wrap=p11g_ident_resolve (meson.build). */
int __real_p11g_ident_resolve(uid_t uid, gid_t gid, pid_t pid, struct p11g_ident *ret);
int __wrap_p11g_ident_resolve(uid_t uid, gid_t gid, pid_t pid, struct p11g_ident *ret);
static int resolves;

int __wrap_p11g_ident_resolve(uid_t uid, gid_t gid, pid_t pid, struct p11g_ident *ret)
{
	resolves++;
	return __real_p11g_ident_resolve(uid, gid, pid, ret);
}

static int h_counters(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                      p11g_err *err, struct p11g_wait *wait)
{
	struct app *a = app;
	*ret = json_pack("{s:i, s:i, s:i}", "reloads", a->reloads, "ticks", a->ticks, "resolves",
	                 resolves);
	return 0;
}

/* A reply of about "size" bytes. */
static int h_big(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                 p11g_err *err, struct p11g_wait *wait)
{
	size_t n = (size_t)json_integer_value(json_object_get(req, "size"));
	char *s = malloc(n + 1);
	if (!s)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	memset(s, 'b', n);
	s[n] = '\0';
	*ret = json_pack("{s:s}", "data", s);
	free(s);
	return 0;
}

static const struct p11g_handler handlers[] = {
    {"echo", h_echo}, {"fail", h_fail},         {"whoami", h_whoami}, {"wait", h_wait},
    {"wake", h_wake}, {"counters", h_counters}, {"big", h_big},
};

static void on_reload(void *app)
{
	((struct app *)app)->reloads++;
}

static void on_tick(void *app)
{
	((struct app *)app)->ticks++;
}

static const struct p11g_server_ops server_ops = {
    .handlers = handlers,
    .n_handlers = P11G_ARRAY_SIZE(handlers),
    .tick = on_tick,
    .reload = on_reload,
};

struct srv {
	pid_t pid;
	char dir[64];
	char path[128];
};

/* The one running server, so a failed assert's teardown can stop it. */
static struct srv *current;

static void tmpdir_for(struct srv *t)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/p11g-server-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/approvald.sock", t->dir);
}

static void srv_start(struct srv *t, const struct p11g_server_config *cfg_in)
{
	struct p11g_server_config cfg = cfg_in ? *cfg_in : (struct p11g_server_config){0};

	memset(t, 0, sizeof(*t));
	tmpdir_for(t);
	cfg.socket_path = t->path;
	t->pid = fork();
	assert_true(t->pid >= 0);
	if (t->pid == 0) {
		struct app app = {0};
		p11g_err err = {0};
		p11g_log_ident = "test-approvald";
		if (p11g_server_new(&cfg, &server_ops, &app, &app.server, &err) < 0) {
			fprintf(stderr, "server: %s\n", err.msg);
			_exit(2);
		}
		int rc = p11g_server_run(app.server);
		p11g_server_free(app.server);
		_exit(rc == 0 ? 0 : 1);
	}
	current = t;
	for (int i = 0; i < 500; i++) {
		p11g_err err = {0};
		int fd = p11g_wire_connect(t->path, &err);
		if (fd >= 0) {
			close(fd);
			return;
		}
		usleep(10000);
	}
	fail_msg("the server did not come up at %s", t->path);
}

/* Exit status of the server after SIGTERM; -1 if it had to be killed. */
static int srv_stop(struct srv *t)
{
	int status = 0;
	int result = -1;

	if (t->pid <= 0)
		return -1;
	kill(t->pid, SIGTERM);
	for (int i = 0; i < 500; i++) {
		pid_t r = waitpid(t->pid, &status, WNOHANG);
		if (r == t->pid) {
			result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			break;
		}
		usleep(10000);
	}
	if (result < 0) {
		kill(t->pid, SIGKILL);
		waitpid(t->pid, &status, 0);
	}
	t->pid = 0;
	unlink(t->path);
	rmdir(t->dir);
	current = NULL;
	return result;
}

static int teardown_server(void **state)
{
	if (current)
		srv_stop(current);
	return 0;
}

/* ---- client helpers ----------------------------------------------------- */

static int cconnect(const struct srv *t)
{
	p11g_err err = {0};
	int fd = p11g_wire_connect(t->path, &err);
	if (fd < 0)
		fail_msg("connect: %s", err.msg);
	return fd;
}

/* Calls verb with extra arguments (consumed); returns the rc of p11g_wire_call. */
static int ccall(int fd, const char *verb, json_t *args, json_t **ret, p11g_err *err)
{
	json_t *req = args ? args : json_object();
	json_object_set_new(req, "verb", json_string(verb));
	*ret = NULL;
	int rc = p11g_wire_call(fd, req, ret, CALL_MS, err);
	json_decref(req);
	return rc;
}

static void echo_ok(int fd, int n)
{
	p11g_err err = {0};
	json_t *res = NULL;
	if (ccall(fd, "echo", json_pack("{s:i}", "data", n), &res, &err) < 0)
		fail_msg("echo %d: %s: %s", n, err.code, err.msg);
	assert_int_equal(json_integer_value(json_object_get(res, "echo")), n);
	json_decref(res);
}

/* A connection that has been served once.  Retries a limit refusal: the
 * server may not yet have seen an earlier client (srv_start's probe) go. */
static int cconnect_served(const struct srv *t)
{
	p11g_err err = {0};
	json_t *res = NULL;

	for (int i = 0; i < 100; i++) {
		int fd = cconnect(t);
		if (ccall(fd, "echo", NULL, &res, &err) == 0) {
			json_decref(res);
			return fd;
		}
		assert_string_equal(err.code, P11G_E_LIMIT);
		close(fd);
		usleep(20000);
	}
	fail_msg("never served: %s", err.msg);
	return -1;
}

static void expect_code(int fd, const char *verb, json_t *args, const char *code)
{
	p11g_err err = {0};
	json_t *res = NULL;
	assert_int_equal(ccall(fd, verb, args, &res, &err), -1);
	assert_null(res);
	assert_string_equal(err.code, code);
	assert_true(strlen(err.msg) > 0);
}

/* Sends a raw payload and decodes the reply frame. */
static json_t *raw_call(int fd, const char *payload)
{
	char *buf = NULL;
	size_t len = 0;
	assert_int_equal(p11g_wire_send(fd, payload, strlen(payload)), 0);
	assert_int_equal(p11g_wire_recv(fd, &buf, &len, CALL_MS), 0);
	json_t *rep = p11g_wire_decode(buf, len, NULL);
	free(buf);
	assert_non_null(rep);
	return rep;
}

static const char *reply_code(const json_t *rep)
{
	return json_string_value(json_object_get(json_object_get(rep, "error"), "code"));
}

/* True when the peer closes fd within timeout_ms (EOF or reset); data
 * arriving first is read and ignored. */
static bool wait_closed(int fd, int timeout_ms)
{
	int64_t deadline = p11g_mono_us() + (int64_t)timeout_ms * 1000;
	char buf[4096];

	for (;;) {
		int64_t left = (deadline - p11g_mono_us()) / 1000;
		if (left < 0)
			return false;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return true;
	}
}

static void write_raw(int fd, const void *buf, size_t len)
{
	assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void write_header(int fd, uint32_t len)
{
	unsigned char h[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
	                      (unsigned char)(len >> 8), (unsigned char)len};
	write_raw(fd, h, sizeof(h));
}

/* ---- tests -------------------------------------------------------------- */

static void test_request_reply(void **state)
{
	struct srv t;
	p11g_err err = {0};
	json_t *res = NULL;

	srv_start(&t, NULL);
	int fd = cconnect(&t);
	assert_int_equal(
	    ccall(fd, "echo", json_pack("{s:{s:[i,s]}}", "data", "x", 1, "two"), &res, &err), 0);
	json_auto_t *want = json_pack("{s:[i,s]}", "x", 1, "two");
	assert_true(json_equal(json_object_get(res, "echo"), want));
	json_decref(res);

	/* The caller is who the kernel says: this process. */
	assert_int_equal(ccall(fd, "whoami", NULL, &res, &err), 0);
	assert_int_equal(json_integer_value(json_object_get(res, "uid")), getuid());
	assert_int_equal(json_integer_value(json_object_get(res, "gid")), getgid());
	assert_int_equal(json_integer_value(json_object_get(res, "pid")), getpid());
	json_decref(res);
	close(fd);

	/* The socket has the default mode. */
	struct stat st;
	assert_int_equal(lstat(t.path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0666);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_many_requests_one_connection(void **state)
{
	struct srv t;

	srv_start(&t, NULL);
	int fd = cconnect(&t);
	for (int i = 0; i < 200; i++)
		echo_ok(fd, i);
	close(fd);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_error_reply_keeps_connection(void **state)
{
	struct srv t;

	srv_start(&t, NULL);
	int fd = cconnect(&t);
	expect_code(fd, "fail", NULL, P11G_E_FORBIDDEN);
	echo_ok(fd, 1);

	/* Protocol-level refusals are replies too: the frame was sound. */
	static const char *const bad_requests[] = {
	    "{\"verb\":\"echo\"}",             /* no v */
	    "{\"v\":2,\"verb\":\"echo\"}",     /* other version */
	    "{\"v\":\"1\",\"verb\":\"echo\"}", /* v a string */
	    "{\"v\":1.0,\"verb\":\"echo\"}",   /* v a real */
	    "{\"v\":1}",                       /* no verb */
	    "{\"v\":1,\"verb\":5}",            /* verb not a string */
	    "{\"v\":1,\"verb\":null}",
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad_requests); i++) {
		json_auto_t *rep = raw_call(fd, bad_requests[i]);
		assert_true(json_is_false(json_object_get(rep, "ok")));
		assert_int_equal(json_integer_value(json_object_get(rep, "v")), 1);
		assert_string_equal(reply_code(rep), P11G_E_BAD_REQUEST);
		echo_ok(fd, (int)i);
	}
	close(fd);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_unknown_verb(void **state)
{
	struct srv t;

	srv_start(&t, NULL);
	int fd = cconnect(&t);
	expect_code(fd, "frobnicate", NULL, P11G_E_UNKNOWN_VERB);
	echo_ok(fd, 1);
	expect_code(fd, "", NULL, P11G_E_UNKNOWN_VERB);
	echo_ok(fd, 2);
	/* A long verb cut in the message inside a UTF-8 sequence still makes a
	 * valid reply. */
	char verb[200];
	for (size_t i = 0; i + 2 < sizeof(verb); i += 2)
		memcpy(verb + i, "\xc3\xa9", 2);
	verb[sizeof(verb) - 2] = '\0';
	expect_code(fd, verb, NULL, P11G_E_UNKNOWN_VERB);
	echo_ok(fd, 3);
	close(fd);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_bad_length_closes_only_that_connection(void **state)
{
	struct srv t;
	static const uint32_t lengths[] = {10u * 1024 * 1024, P11G_FRAME_MAX + 1, 0xffffffffu, 0};

	srv_start(&t, NULL);
	int good = cconnect(&t);
	echo_ok(good, 1);
	for (size_t i = 0; i < P11G_ARRAY_SIZE(lengths); i++) {
		int bad = cconnect(&t);
		write_header(bad, lengths[i]);
		assert_true(wait_closed(bad, 2000));
		close(bad);
		echo_ok(good, (int)i);
	}
	/* New connections are fine too. */
	int again = cconnect(&t);
	echo_ok(again, 5);
	close(again);
	close(good);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_bad_json_closes_connection(void **state)
{
	struct srv t;
	static const char *const frames[] = {
	    "{\"v\":1,\"verb\":",
	    "{\"v\":1,\"verb\":\"echo\"} {}",
	    "{\"v\":1,\"verb\":\"echo\",\"verb\":\"echo\"}",
	    "[{\"v\":1,\"verb\":\"echo\"}]",
	    "\"echo\"",
	    "{\"v\":1,\"verb\":\"st\xc3\x28\"}",
	};

	srv_start(&t, NULL);
	int good = cconnect(&t);
	for (size_t i = 0; i < P11G_ARRAY_SIZE(frames); i++) {
		int bad = cconnect(&t);
		assert_int_equal(p11g_wire_send(bad, frames[i], strlen(frames[i])), 0);
		assert_true(wait_closed(bad, 2000));
		close(bad);
		echo_ok(good, (int)i);
	}
	/* A frame that stops short, then the client goes: nothing else is hurt. */
	int half = cconnect(&t);
	write_header(half, 100);
	write_raw(half, "{\"v\":1", 6);
	close(half);
	echo_ok(good, 99);
	close(good);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_slow_frame(void **state)
{
	struct srv t;
	struct p11g_server_config cfg = {.frame_timeout_ms = 300};
	static const char payload[] = "{\"v\":1,\"verb\":\"echo\",\"data\":\"xxxxxxxxxx\"}";
	unsigned char frame[4 + sizeof(payload)];
	size_t n = sizeof(payload) - 1;

	frame[0] = frame[1] = frame[2] = 0;
	frame[3] = (unsigned char)n;
	memcpy(frame + 4, payload, n);

	srv_start(&t, &cfg);
	/* Idle time before the first byte is not frame time. */
	int patient = cconnect(&t);
	usleep(500000);
	echo_ok(patient, 1);

	int fd = cconnect(&t);
	int64_t t0 = p11g_mono_us();
	bool closed = false;
	size_t sent = 0;
	for (; sent < n + 4; sent++) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		/* The server never answers half a frame: readable means closed. */
		if (poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP))) {
			closed = true;
			break;
		}
		if (send(fd, frame + sent, 1, MSG_NOSIGNAL) != 1) {
			closed = true;
			break;
		}
		usleep(100000);
	}
	int64_t elapsed = p11g_mono_us() - t0;
	assert_true(closed);
	assert_true(sent < n + 4);
	assert_true(elapsed >= 250000);
	assert_true(elapsed < 1500000);
	close(fd);
	echo_ok(patient, 2);
	close(patient);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_per_uid_limit(void **state)
{
	struct srv t;
	struct p11g_server_config cfg = {.max_conns_per_uid = 3};
	int fds[3];
	p11g_err err = {0};
	json_t *res = NULL;

	srv_start(&t, &cfg);
	for (int i = 0; i < 3; i++)
		fds[i] = cconnect_served(&t);
	int extra = cconnect(&t);
	assert_int_equal(ccall(extra, "echo", NULL, &res, &err), -1);
	assert_string_equal(err.code, P11G_E_LIMIT);
	assert_non_null(strstr(err.msg, "connections"));
	assert_true(wait_closed(extra, 2000));
	close(extra);

	/* The others are unaffected, and a freed slot can be used again. */
	echo_ok(fds[0], 10);
	close(fds[2]);
	close(cconnect_served(&t));
	close(fds[0]);
	close(fds[1]);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_total_limit(void **state)
{
	struct srv t;
	struct p11g_server_config cfg = {.max_conns = 2};
	p11g_err err = {0};
	json_t *res = NULL;

	srv_start(&t, &cfg);
	int a = cconnect_served(&t), b = cconnect_served(&t);
	int c = cconnect(&t);
	assert_int_equal(ccall(c, "echo", NULL, &res, &err), -1);
	assert_string_equal(err.code, P11G_E_LIMIT);
	close(c);
	echo_ok(a, 3);
	close(a);
	close(b);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_idle_timeout(void **state)
{
	struct srv t;
	struct p11g_server_config cfg = {.idle_timeout_ms = 300};

	srv_start(&t, &cfg);
	/* Never says anything. */
	int fd = cconnect(&t);
	int64_t t0 = p11g_mono_us();
	assert_true(wait_closed(fd, 3000));
	int64_t elapsed = p11g_mono_us() - t0;
	assert_true(elapsed >= 250000 && elapsed < 2000000);
	close(fd);

	/* Busy connections stay: the clock restarts after every reply. */
	fd = cconnect(&t);
	for (int i = 0; i < 8; i++) {
		echo_ok(fd, i);
		usleep(150000);
	}
	t0 = p11g_mono_us();
	assert_true(wait_closed(fd, 3000));
	elapsed = p11g_mono_us() - t0;
	assert_true(elapsed < 2000000);
	close(fd);
	assert_int_equal(srv_stop(&t), 0);
}

static void send_request(int fd, const char *payload)
{
	assert_int_equal(p11g_wire_send(fd, payload, strlen(payload)), 0);
}

static json_t *recv_reply(int fd, int timeout_ms, int *ret_rc)
{
	char *buf = NULL;
	size_t len = 0;
	int rc = p11g_wire_recv(fd, &buf, &len, timeout_ms);
	if (ret_rc)
		*ret_rc = rc;
	if (rc < 0)
		return NULL;
	json_t *rep = p11g_wire_decode(buf, len, NULL);
	free(buf);
	return rep;
}

static void test_wait_and_wake(void **state)
{
	struct srv t;
	p11g_err err = {0};
	json_t *res = NULL;
	int rc;

	srv_start(&t, NULL);
	int waiter = cconnect(&t), other = cconnect(&t);
	send_request(waiter, "{\"v\":1,\"verb\":\"wait\",\"timeout_ms\":10000}");
	/* Pipelined while parked: must not be read, let alone answered, first. */
	send_request(waiter, "{\"v\":1,\"verb\":\"echo\",\"data\":42}");

	/* The server keeps serving others meanwhile. */
	echo_ok(other, 1);
	json_t *none = recv_reply(waiter, 300, &rc);
	assert_null(none);
	assert_int_equal(rc, -ETIMEDOUT);

	/* A wake for another operation leaves it parked. */
	assert_int_equal(ccall(other, "wake", json_pack("{s:i}", "op", 8), &res, &err), 0);
	json_decref(res);
	none = recv_reply(waiter, 300, &rc);
	assert_null(none);
	assert_int_equal(rc, -ETIMEDOUT);

	int64_t t0 = p11g_mono_us();
	assert_int_equal(ccall(other, "wake", NULL, &res, &err), 0);
	json_decref(res);
	json_auto_t *rep = recv_reply(waiter, 2000, &rc);
	assert_int_equal(rc, 0);
	assert_true(p11g_mono_us() - t0 < 1000000);
	assert_true(json_is_true(json_object_get(rep, "ok")));
	assert_true(json_is_false(json_object_get(json_object_get(rep, "result"), "timed_out")));

	/* Then the pipelined request, in order. */
	json_auto_t *rep2 = recv_reply(waiter, 2000, &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(rep2, "result"), "echo")), 42);
	echo_ok(waiter, 7);
	close(waiter);
	close(other);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_wait_deadline(void **state)
{
	struct srv t;
	int rc;

	srv_start(&t, NULL);
	int waiter = cconnect(&t);
	int64_t t0 = p11g_mono_us();
	send_request(waiter, "{\"v\":1,\"verb\":\"wait\",\"timeout_ms\":300}");
	json_auto_t *rep = recv_reply(waiter, 3000, &rc);
	int64_t elapsed = p11g_mono_us() - t0;
	assert_int_equal(rc, 0);
	assert_true(elapsed >= 280000 && elapsed < 2000000);
	assert_true(json_is_true(json_object_get(json_object_get(rep, "result"), "timed_out")));
	echo_ok(waiter, 1);

	/* A waiter that hangs up is dropped; waking its operation is harmless. */
	int gone = cconnect(&t);
	send_request(gone, "{\"v\":1,\"verb\":\"wait\",\"timeout_ms\":10000}");
	usleep(100000);
	close(gone);
	usleep(100000);
	p11g_err err = {0};
	json_t *res = NULL;
	assert_int_equal(ccall(waiter, "wake", NULL, &res, &err), 0);
	json_decref(res);
	echo_ok(waiter, 2);
	close(waiter);
	assert_int_equal(srv_stop(&t), 0);
}

static int counter(int fd, const char *name)
{
	p11g_err err = {0};
	json_t *res = NULL;
	if (ccall(fd, "counters", NULL, &res, &err) < 0)
		fail_msg("counters: %s", err.msg);
	int n = (int)json_integer_value(json_object_get(res, name));
	json_decref(res);
	return n;
}

/* A resumed request (a listing page answered by approvald-read, a wait whose time came) takes
 * its caller's identity from the cache as a round's requests do: a fresh lookup for each, the
 * user and group files read, held every signer behind a listing loop. */
static void test_resumed_requests_share_lookups(void **state)
{
	struct srv t;
	int rc;

	srv_start(&t, NULL);
	int c = cconnect(&t);
	int before = counter(c, "resolves");
	for (int i = 0; i < 20; i++) {
		send_request(c, "{\"v\":1,\"verb\":\"wait\",\"timeout_ms\":1}");
		json_auto_t *rep = recv_reply(c, 3000, &rc);
		assert_int_equal(rc, 0);
		assert_true(
		    json_is_true(json_object_get(json_object_get(rep, "result"), "timed_out")));
	}
	int after = counter(c, "resolves");
	/* one more lookup a second at most (P11G_IDCACHE_TTL), not one a resume */
	if (after - before >= 10)
		fail_msg("%d identity lookups for 20 resumed requests", after - before);
	close(c);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_sighup_reloads_and_tick(void **state)
{
	struct srv t;

	srv_start(&t, NULL);
	int fd = cconnect(&t);
	assert_int_equal(counter(fd, "reloads"), 0);
	for (int want = 1; want <= 2; want++) {
		kill(t.pid, SIGHUP);
		int i = 0;
		while (counter(fd, "reloads") < want && i++ < 200)
			usleep(10000);
		assert_int_equal(counter(fd, "reloads"), want);
	}
	/* tick runs about once a second. */
	usleep(1300000);
	int ticks = counter(fd, "ticks");
	assert_true(ticks >= 1 && ticks <= 3);
	close(fd);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_sigterm_stops_cleanly(void **state)
{
	struct srv t;

	srv_start(&t, NULL);
	int fd = cconnect(&t);
	echo_ok(fd, 1);
	/* An open connection does not hold the stop up. */
	char path[128];
	snprintf(path, sizeof(path), "%s", t.path);
	char dir[64];
	snprintf(dir, sizeof(dir), "%s", t.dir);
	kill(t.pid, SIGTERM);
	int status = 0;
	pid_t r = 0;
	for (int i = 0; i < 500 && r == 0; i++) {
		r = waitpid(t.pid, &status, WNOHANG);
		if (r == 0)
			usleep(10000);
	}
	assert_int_equal(r, t.pid);
	t.pid = 0;
	current = NULL;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(errno, ENOENT);
	assert_true(wait_closed(fd, 1000));
	close(fd);
	rmdir(dir);
}

static void test_slow_reader_closed(void **state)
{
	struct srv t;
	struct p11g_server_config cfg = {.frame_timeout_ms = 300};
	static const char req[] = "{\"v\":1,\"verb\":\"big\",\"size\":60000}";
	unsigned char frame[4 + sizeof(req)];
	size_t n = sizeof(req) - 1;

	frame[0] = frame[1] = 0;
	frame[2] = (unsigned char)(n >> 8);
	frame[3] = (unsigned char)n;
	memcpy(frame + 4, req, n);

	srv_start(&t, &cfg);
	int other = cconnect(&t);
	int fd = cconnect(&t);
	/* Ask for far more than the socket buffers hold and never read. */
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	for (int i = 0; i < 64; i++)
		if (send(fd, frame, n + 4, MSG_NOSIGNAL) != (ssize_t)(n + 4))
			break;
	usleep(1000000);
	echo_ok(other, 1);
	fcntl(fd, F_SETFL, fl);
	/* Whatever was queued drains, then the server's close shows. */
	assert_true(wait_closed(fd, 3000));
	close(fd);
	echo_ok(other, 2);
	close(other);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_reply_too_large(void **state)
{
	struct srv t;
	p11g_err err = {0};
	json_t *res = NULL;

	srv_start(&t, NULL);
	int fd = cconnect(&t);
	assert_int_equal(ccall(fd, "big", json_pack("{s:i}", "size", 60000), &res, &err), 0);
	assert_int_equal(strlen(json_string_value(json_object_get(res, "data"))), 60000);
	json_decref(res);
	expect_code(fd, "big", json_pack("{s:i}", "size", 70000), P11G_E_INTERNAL);
	echo_ok(fd, 1);
	close(fd);
	assert_int_equal(srv_stop(&t), 0);
}

static void test_socket_file_handling(void **state)
{
	struct srv t, live;
	struct p11g_server *s = NULL;
	p11g_err err = {0};
	struct stat st;

	/* Something that is not a socket is never replaced. */
	memset(&t, 0, sizeof(t));
	tmpdir_for(&t);
	int f = open(t.path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(f >= 0);
	close(f);
	struct p11g_server_config cfg = {.socket_path = t.path, .socket_mode = 0600};
	assert_int_equal(p11g_server_new(&cfg, &server_ops, NULL, &s, &err), -1);
	assert_non_null(strstr(err.msg, t.path));
	assert_int_equal(lstat(t.path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	unlink(t.path);

	/* A stale socket (nobody listening) is replaced. */
	int sfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, t.path, strlen(t.path) + 1);
	assert_int_equal(bind(sfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(sfd);
	assert_int_equal(p11g_server_new(&cfg, &server_ops, NULL, &s, &err), 0);
	assert_int_equal(lstat(t.path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	p11g_server_free(s);
	assert_int_equal(access(t.path, F_OK), -1);
	rmdir(t.dir);

	/* A live server is left alone. */
	srv_start(&live, NULL);
	cfg.socket_path = live.path;
	s = NULL;
	assert_int_equal(p11g_server_new(&cfg, &server_ops, NULL, &s, &err), -1);
	assert_null(s);
	assert_non_null(strstr(err.msg, "already"));
	int fd = cconnect(&live);
	echo_ok(fd, 1);
	close(fd);
	assert_int_equal(srv_stop(&live), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_request_reply, teardown_server),
	    cmocka_unit_test_teardown(test_many_requests_one_connection, teardown_server),
	    cmocka_unit_test_teardown(test_error_reply_keeps_connection, teardown_server),
	    cmocka_unit_test_teardown(test_unknown_verb, teardown_server),
	    cmocka_unit_test_teardown(test_bad_length_closes_only_that_connection, teardown_server),
	    cmocka_unit_test_teardown(test_bad_json_closes_connection, teardown_server),
	    cmocka_unit_test_teardown(test_slow_frame, teardown_server),
	    cmocka_unit_test_teardown(test_per_uid_limit, teardown_server),
	    cmocka_unit_test_teardown(test_total_limit, teardown_server),
	    cmocka_unit_test_teardown(test_idle_timeout, teardown_server),
	    cmocka_unit_test_teardown(test_wait_and_wake, teardown_server),
	    cmocka_unit_test_teardown(test_wait_deadline, teardown_server),
	    cmocka_unit_test_teardown(test_resumed_requests_share_lookups, teardown_server),
	    cmocka_unit_test_teardown(test_sighup_reloads_and_tick, teardown_server),
	    cmocka_unit_test_teardown(test_sigterm_stops_cleanly, teardown_server),
	    cmocka_unit_test_teardown(test_slow_reader_closed, teardown_server),
	    cmocka_unit_test_teardown(test_reply_too_large, teardown_server),
	    cmocka_unit_test_teardown(test_socket_file_handling, teardown_server),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
