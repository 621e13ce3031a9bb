/* libFuzzer target: approvald's frame reader, the server end of a real socket.
 *
 * The server runs in a thread of this process (so ASan/UBSan see its bugs); each input is
 * written to one new connection, byte 0 giving the size of the writes (0: all at once), then
 * the write side is shut.  Whatever the bytes, the server must answer only with well-formed
 * frames, close that connection within 5 s, and answer the next client. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "approvald/server.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define WAIT_MS 5000

static char dir[64], path[128];

static int h_echo(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                  p11g_err *err, struct p11g_wait *wait)
{
	(void)app, (void)caller, (void)wait;
	*ret = json_pack("{s:O?}", "echo", json_object_get(req, "data"));
	return *ret ? 0 : p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
}

static int h_fail(void *app, const struct p11g_ident *caller, const json_t *req, json_t **ret,
                  p11g_err *err, struct p11g_wait *wait)
{
	(void)app, (void)caller, (void)req, (void)ret, (void)wait;
	return p11g_err_set(err, P11G_E_FORBIDDEN, "this verb always fails");
}

static const struct p11g_handler handlers[] = {{"echo", h_echo}, {"fail", h_fail}};
static const struct p11g_server_ops ops = {.handlers = handlers,
                                           .n_handlers = P11G_ARRAY_SIZE(handlers)};

static void *serve(void *arg)
{
	(void)arg;
	/* A frame started but not finished is the slow-client path: short enough to be reached. */
	struct p11g_server_config cfg = {.socket_path = path, .frame_timeout_ms = 2000};
	struct p11g_server *s = NULL;
	p11g_err err = {0};
	if (p11g_server_new(&cfg, &ops, NULL, &s, &err) < 0) {
		fprintf(stderr, "fuzz_server: %s\n", err.msg);
		abort();
	}
	p11g_server_run(s);
	abort(); /* nothing stops it */
}

static void cleanup(void)
{
	unlink(path);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	pthread_t t;
	p11g_log_ident = "fuzz-approvald";
	snprintf(dir, sizeof(dir), "/tmp/p11g-fuzz-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(path, sizeof(path), "%s/approvald.sock", dir);
	atexit(cleanup);
	if (pthread_create(&t, NULL, serve, NULL))
		abort();
	for (int i = 0; i < 500; i++) {
		p11g_err err = {0};
		int fd = p11g_wire_connect(path, &err);
		if (fd >= 0) {
			close(fd);
			return 0;
		}
		usleep(10000);
	}
	abort();
}

/* Reads reply frames until the server closes; traps on a bad frame or a hang. */
static void drain(int fd)
{
	for (;;) {
		char *buf = NULL;
		size_t len = 0;
		int r = p11g_wire_recv(fd, &buf, &len, WAIT_MS);
		if (r == -ECONNRESET)
			return;
		if (r < 0) {
			fprintf(stderr, "fuzz_server: reading replies: %s\n", strerror(-r));
			__builtin_trap();
		}
		p11g_err err = {0};
		json_t *reply = p11g_wire_decode(buf, len, &err);
		if (!reply || !json_is_boolean(json_object_get(reply, "ok")))
			__builtin_trap();
		json_decref(reply);
		free(buf);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = data[0] ? data[0] : size;
	data++, size--;

	p11g_err err = {0};
	int fd = p11g_wire_connect(path, &err);
	if (fd < 0)
		__builtin_trap();
	for (size_t off = 0; off < size;) {
		size_t n = size - off < step ? size - off : step;
		ssize_t w = send(fd, data + off, n, MSG_NOSIGNAL);
		if (w < 0)
			break; /* closed early on a bad frame: what follows is not read */
		off += (size_t)w;
	}
	shutdown(fd, SHUT_WR);
	drain(fd);
	close(fd);

	/* The server still serves. */
	fd = p11g_wire_connect(path, &err);
	json_t *req = json_pack("{s:s, s:s}", "verb", "echo", "data", "x"), *res = NULL;
	if (fd < 0 || p11g_wire_call(fd, req, &res, WAIT_MS, &err) < 0 ||
	    strcmp(json_string_value(json_object_get(res, "echo")) ?: "", "x")) {
		fprintf(stderr, "fuzz_server: the server stopped serving: %s\n", err.msg);
		__builtin_trap();
	}
	json_decref(req);
	json_decref(res);
	close(fd);
	return 0;
}
