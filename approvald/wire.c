/* The approvald wire protocol: framing, strict decoding and the client's request/reply call. */
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "p11gate/wire.h"

/*
 * This file runs inside p11gate.so, in whatever multi-threaded program loads
 * it: no static mutable state, every fd O_CLOEXEC, MSG_NOSIGNAL on every send
 * (a closed daemon must not kill the host program with SIGPIPE), EINTR
 * retried, and every wait bounded by poll() so a stuck daemon cannot hang a
 * signer past its timeout.
 */

#define CONNECT_TIMEOUT_S 10

/* The codes a reply may carry; err->code must point at a string that
 * outlives the reply, so known codes map onto these constants. */
static const char *const known_codes[] = {
    P11G_E_BAD_REQUEST,     P11G_E_UNKNOWN_VERB, P11G_E_NOT_FOUND,      P11G_E_FORBIDDEN,
    P11G_E_SELF_APPROVAL,   P11G_E_NOT_APPROVER, P11G_E_NOT_ORDERER,    P11G_E_ALREADY_APPROVED,
    P11G_E_ALREADY_DECIDED, P11G_E_ALREADY_USED, P11G_E_LIMIT,          P11G_E_NO_RULE,
    P11G_E_REGISTRY,        P11G_E_NO_OPERATION, P11G_E_PENDING,        P11G_E_EXPIRED,
    P11G_E_EXHAUSTED,       P11G_E_REVOKED,      P11G_E_REJECTED,       P11G_E_DIGEST_MISMATCH,
    P11G_E_MECHANISM,       P11G_E_RAW,          P11G_E_NOT_SIGNER,     P11G_E_DENIED_DEFAULT,
    P11G_E_AUDIT_BROKEN,    P11G_E_STORE,        P11G_E_INTERNAL,       P11G_E_UNAVAILABLE,
    P11G_E_PROTOCOL,        P11G_E_TIMEOUT,      P11G_E_TOKEN_REQUIRED, P11G_E_TOKEN_INVALID,
    P11G_E_CLAIMS_MISMATCH,
};

/* json_decrefp comes with jansson (>= 2.11). */
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

/* GNU strerror_r: thread-safe, unlike strerror. */
static const char *errstr(int e, char *buf, size_t size)
{
	return strerror_r(e, buf, size);
}

static int64_t deadline_after(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : p11g_mono_us() + (int64_t)timeout_ms * 1000;
}

static int remaining_ms(int64_t deadline_us)
{
	int64_t left;

	if (deadline_us < 0)
		return -1;
	left = deadline_us - p11g_mono_us();
	if (left <= 0)
		return 0;
	left = (left + 999) / 1000;
	return left > INT_MAX ? INT_MAX : (int)left;
}

/* 0 once fd is ready for events, -ETIMEDOUT at the deadline, or -errno. */
static int wait_fd(int fd, short events, int64_t deadline_us)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int r = poll(&p, 1, remaining_ms(deadline_us));
		if (r > 0) {
			if (p.revents & POLLNVAL)
				return -EBADF;
			/* HUP and ERR fall through: the next recv/send reports them. */
			return 0;
		}
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

/* ---- the frame codec --------------------------------------------------- */

static bool frame_len_ok(size_t len)
{
	return len > 0 && len <= P11G_FRAME_MAX;
}

int p11g_frame_header_encode(unsigned char hdr[P11G_FRAME_HEADER], size_t len)
{
	if (!frame_len_ok(len))
		return -EMSGSIZE;
	p11g_be32_put(hdr, (uint32_t)len);
	return 0;
}

void *p11g_frame_reader_next(struct p11g_frame_reader *r, size_t *ret_want)
{
	if (!r->body) {
		*ret_want = P11G_FRAME_HEADER - r->header_got;
		return r->header + r->header_got;
	}
	*ret_want = r->len - r->body_got;
	return r->body + r->body_got;
}

int p11g_frame_reader_add(struct p11g_frame_reader *r, size_t n)
{
	if (r->body) {
		r->body_got += n;
		return r->body_got == r->len;
	}
	r->header_got += n;
	if (r->header_got < P11G_FRAME_HEADER)
		return 0;
	r->len = p11g_be32_get(r->header);
	/* Checked before allocating: a hostile length costs nothing. */
	if (!frame_len_ok(r->len))
		return -EMSGSIZE;
	r->body = malloc((size_t)r->len + 1);
	if (!r->body)
		return -ENOMEM;
	r->body_got = 0;
	return 0;
}

bool p11g_frame_reader_started(const struct p11g_frame_reader *r)
{
	return r->header_got > 0;
}

char *p11g_frame_reader_take(struct p11g_frame_reader *r, size_t *ret_len)
{
	char *body = r->body;

	body[r->len] = '\0';
	if (ret_len)
		*ret_len = r->len;
	*r = (struct p11g_frame_reader){0};
	return body;
}

void p11g_frame_reader_clear(struct p11g_frame_reader *r)
{
	free(r->body);
	*r = (struct p11g_frame_reader){0};
}

/* Sized first so an oversized payload never gets a buffer of its size;
 * reserve bytes before the payload are left for the caller (a header). */
static char *encode_after(const json_t *obj, size_t reserve, size_t *ret_len)
{
	const size_t flags = JSON_COMPACT;
	size_t need;
	char *buf;

	if (!json_is_object(obj))
		return NULL;
	need = json_dumpb(obj, NULL, 0, flags);
	if (!frame_len_ok(need))
		return NULL;
	buf = malloc(reserve + need + 1);
	if (!buf)
		return NULL;
	if (json_dumpb(obj, buf + reserve, need, flags) != need) {
		free(buf);
		return NULL;
	}
	buf[reserve + need] = '\0';
	*ret_len = need;
	return buf;
}

char *p11g_frame_encode(const json_t *obj, size_t *ret_len)
{
	size_t len;
	char *buf = encode_after(obj, P11G_FRAME_HEADER, &len);

	if (!buf)
		return NULL;
	p11g_frame_header_encode((unsigned char *)buf, len);
	*ret_len = P11G_FRAME_HEADER + len;
	return buf;
}

/* ---- the blocking client ----------------------------------------------- */

static int recv_frame(int fd, char **ret_buf, size_t *ret_len, int64_t deadline_us)
{
	struct p11g_frame_reader r = {0};
	int rc;

	for (;;) {
		size_t want;
		void *dst = p11g_frame_reader_next(&r, &want);
		/* MSG_DONTWAIT: the fd may be blocking, but only poll() may wait. */
		ssize_t got = recv(fd, dst, want, MSG_DONTWAIT);
		if (got > 0) {
			rc = p11g_frame_reader_add(&r, (size_t)got);
			if (rc == 1) {
				*ret_buf = p11g_frame_reader_take(&r, ret_len);
				return 0;
			}
			if (rc < 0)
				break;
			continue;
		}
		if (got == 0) {
			rc = -ECONNRESET;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			rc = -errno;
			break;
		}
		if ((rc = wait_fd(fd, POLLIN, deadline_us)) < 0)
			break;
	}
	p11g_frame_reader_clear(&r);
	return rc;
}

/* Sends header and payload (len already checked) without joining them. */
static int send_frame(int fd, const char *json, size_t len, int64_t deadline_us)
{
	unsigned char hdr[P11G_FRAME_HEADER];
	struct iovec iov[2] = {
	    {.iov_base = hdr, .iov_len = sizeof(hdr)},
	    {.iov_base = (void *)json, .iov_len = len},
	};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
	int rc;

	if ((rc = p11g_frame_header_encode(hdr, len)) < 0)
		return rc;
	while (mh.msg_iovlen > 0) {
		ssize_t r = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -errno;
			if ((rc = wait_fd(fd, POLLOUT, deadline_us)) < 0)
				return rc;
			continue;
		}
		size_t done = (size_t)r;
		while (mh.msg_iovlen > 0 && done >= mh.msg_iov[0].iov_len) {
			done -= mh.msg_iov[0].iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen > 0) {
			mh.msg_iov[0].iov_base = (char *)mh.msg_iov[0].iov_base + done;
			mh.msg_iov[0].iov_len -= done;
		}
	}
	return 0;
}

int p11g_wire_connect(const char *path, p11g_err *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char ebuf[128];
	int fd;

	if (!path || !*path || strlen(path) >= sizeof(sa.sun_path)) {
		p11g_err_set(
		    err, P11G_E_UNAVAILABLE,
		    "approvald is not reachable at %s: the socket path is empty or too long",
		    path ? path : "(null)");
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		p11g_err_set(err, P11G_E_UNAVAILABLE, "approvald is not reachable at %s: %s", path,
		             errstr(errno, ebuf, sizeof(ebuf)));
		return -1;
	}
	/* A Unix-socket connect waits for backlog space with the send timeout:
	 * bound it so a wedged daemon cannot hang the host program. */
	struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_S};
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	/* Interrupted while waiting for backlog space, it has not connected;
	 * retrying is correct (EISCONN covers the other case). */
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		if (e == EINTR)
			continue;
		if (e == EISCONN)
			break;
		close(fd);
		p11g_err_set(err, P11G_E_UNAVAILABLE,
		             "approvald is not reachable at %s: %s (is approvald running?)", path,
		             errstr(e, ebuf, sizeof(ebuf)));
		return -1;
	}
	return fd;
}

int p11g_wire_send(int fd, const char *json, size_t len)
{
	if (!frame_len_ok(len))
		return -EMSGSIZE;
	if (!json)
		return -EINVAL;
	return send_frame(fd, json, len, -1);
}

int p11g_wire_recv(int fd, char **ret_buf, size_t *ret_len, int timeout_ms)
{
	if (!ret_buf)
		return -EINVAL;
	return recv_frame(fd, ret_buf, ret_len, deadline_after(timeout_ms));
}

/* Our own words for jansson's errors: its texts quote input ("near '...'"),
 * and this sentence ends up in the daemon's log. */
static const char *json_error_sentence(const json_error_t *jerr)
{
	switch (json_error_code(jerr)) {
	case json_error_duplicate_key:
		return "duplicate key";
	case json_error_end_of_input_expected:
		return "bytes after the JSON object";
	case json_error_premature_end_of_input:
		return "truncated JSON";
	case json_error_invalid_utf8:
		return "invalid UTF-8";
	case json_error_null_character:
	case json_error_null_byte_in_key:
		return "NUL character";
	case json_error_numeric_overflow:
		return "number out of range";
	case json_error_stack_overflow:
		return "JSON nested too deeply";
	case json_error_out_of_memory:
		return "out of memory";
	default:
		return "invalid JSON";
	}
}

json_t *p11g_wire_decode(const char *buf, size_t len, p11g_err *err)
{
	json_error_t jerr;
	json_t *v;

	if (!buf || len == 0) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "malformed message: empty");
		return NULL;
	}
	if (!frame_len_ok(len)) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "malformed message: larger than %u bytes",
		             P11G_FRAME_MAX);
		return NULL;
	}
	/* DECODE_ANY so that a scalar is reported as "not an object" like an
	 * array is; the EOF check (on by default) refuses trailing bytes. */
	v = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!v) {
		p11g_err_set(
		    err,
		    json_error_code(&jerr) == json_error_out_of_memory ? P11G_E_INTERNAL
		                                                       : P11G_E_BAD_REQUEST,
		    "malformed message: %s at byte %d", json_error_sentence(&jerr), jerr.position);
		return NULL;
	}
	if (!json_is_object(v)) {
		json_decref(v);
		p11g_err_set(err, P11G_E_BAD_REQUEST, "malformed message: not a JSON object");
		return NULL;
	}
	return v;
}

char *p11g_wire_encode(const json_t *obj, size_t *ret_len)
{
	size_t len;
	char *buf = encode_after(obj, 0, &len);

	if (buf && ret_len)
		*ret_len = len;
	return buf;
}

const char *p11g_wire_request_verb(const json_t *req, p11g_err *err)
{
	json_t *v = json_object_get(req, "v");
	const char *verb;

	if (!v) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "the request has no \"v\"; this approvald speaks \"v\": 1");
		return NULL;
	}
	if (!json_is_integer(v) || json_integer_value(v) != P11G_WIRE_VERSION) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "unsupported protocol version; this approvald speaks \"v\": 1");
		return NULL;
	}
	verb = json_string_value(json_object_get(req, "verb"));
	if (!verb)
		p11g_err_set(err, P11G_E_BAD_REQUEST, "the request has no \"verb\" string");
	return verb;
}

json_t *p11g_wire_reply_ok(json_t *result)
{
	return json_pack("{s:i, s:b, s:o}", "v", P11G_WIRE_VERSION, "ok", 1, "result", result);
}

/* A json string even when a message was cut inside a UTF-8 sequence. */
static json_t *string_lossy(const char *str)
{
	char buf[sizeof(((p11g_err *)0)->msg)];
	json_t *j = json_string(str);
	size_t len;

	if (j)
		return j;
	len = strnlen(str, sizeof(buf) - 1);
	memcpy(buf, str, len);
	for (int cut = 0; cut < 4 && len > 0; cut++) {
		buf[--len] = '\0';
		if ((j = json_string(buf)))
			return j;
	}
	return json_string("(message not valid UTF-8)");
}

json_t *p11g_wire_reply_error(const char *code, const char *message)
{
	/* "o" is stolen even when packing fails. */
	return json_pack("{s:i, s:b, s:{s:s, s:o}}", "v", P11G_WIRE_VERSION, "ok", 0, "error",
	                 "code", code, "message", string_lossy(message));
}

static const char *known_code(const char *code)
{
	for (size_t i = 0; i < P11G_ARRAY_SIZE(known_codes); i++)
		if (!strcmp(code, known_codes[i]))
			return known_codes[i];
	return NULL;
}

static int reply_parse(const char *buf, size_t len, json_t **ret_result, p11g_err *err)
{
	_cleanup_json_ json_t *rep = NULL;
	p11g_err derr = {0};
	json_t *v, *ok, *result, *error;
	const char *code, *message, *known;

	rep = p11g_wire_decode(buf, len, &derr);
	if (!rep)
		return p11g_err_set(err, P11G_E_PROTOCOL, "approvald sent a bad reply (%s)",
		                    derr.msg);
	v = json_object_get(rep, "v");
	if (!json_is_integer(v) || json_integer_value(v) != P11G_WIRE_VERSION)
		return p11g_err_set(err, P11G_E_PROTOCOL,
		                    "approvald replied in a protocol version other than %d",
		                    P11G_WIRE_VERSION);
	ok = json_object_get(rep, "ok");
	if (!json_is_boolean(ok))
		return p11g_err_set(err, P11G_E_PROTOCOL,
		                    "approvald sent a bad reply (no boolean \"ok\")");
	if (json_is_true(ok)) {
		result = json_object_get(rep, "result");
		if (!json_is_object(result))
			return p11g_err_set(err, P11G_E_PROTOCOL,
			                    "approvald sent a bad reply (no \"result\" object)");
		if (ret_result)
			*ret_result = json_incref(result);
		return 0;
	}
	error = json_object_get(rep, "error");
	code = json_string_value(json_object_get(error, "code"));
	message = json_string_value(json_object_get(error, "message"));
	if (!json_is_object(error) || !code || !message)
		return p11g_err_set(
		    err, P11G_E_PROTOCOL,
		    "approvald sent a bad reply (no \"error\" with code and message)");
	known = known_code(code);
	if (!known)
		return p11g_err_set(err, P11G_E_PROTOCOL,
		                    "approvald answered with an unknown error code \"%.64s\": %s",
		                    code, message);
	return p11g_err_set(err, known, "%s", message);
}

int p11g_wire_call(int fd, json_t *req, json_t **ret_result, int timeout_ms, p11g_err *err)
{
	_cleanup_free_ char *out = NULL;
	_cleanup_free_ char *in = NULL;
	size_t out_len, in_len = 0;
	int64_t deadline = deadline_after(timeout_ms);
	char ebuf[128];
	int rc;

	if (!json_is_object(req))
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "a request must be a JSON object");
	if (json_object_set_new(req, "v", json_integer(P11G_WIRE_VERSION)) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	out = p11g_wire_encode(req, &out_len);
	if (!out)
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "the request cannot be encoded in %u bytes", P11G_FRAME_MAX);

	rc = send_frame(fd, out, out_len, deadline);
	if (rc == -EPIPE || rc == -ECONNRESET) {
		/* A daemon at its connection limit answers before we ask and
		 * closes: its explanation is already queued for us. */
		if (recv_frame(fd, &in, &in_len, deadline_after(0)) == 0)
			return reply_parse(in, in_len, ret_result, err);
	}
	if (rc == -ETIMEDOUT)
		return p11g_err_set(err, P11G_E_TIMEOUT,
		                    "approvald did not take the request within %d ms", timeout_ms);
	if (rc < 0)
		return p11g_err_set(err, P11G_E_UNAVAILABLE, "could not send to approvald: %s",
		                    errstr(-rc, ebuf, sizeof(ebuf)));

	/* After a failure below the stream is out of step; callers close fd. */
	rc = recv_frame(fd, &in, &in_len, deadline);
	switch (rc) {
	case 0:
		return reply_parse(in, in_len, ret_result, err);
	case -ETIMEDOUT:
		return p11g_err_set(err, P11G_E_TIMEOUT, "approvald did not answer within %d ms",
		                    timeout_ms);
	case -ECONNRESET:
		return p11g_err_set(err, P11G_E_UNAVAILABLE,
		                    "approvald closed the connection without answering");
	case -EMSGSIZE:
		return p11g_err_set(err, P11G_E_PROTOCOL,
		                    "approvald sent a frame with an invalid length");
	default:
		return p11g_err_set(err, P11G_E_UNAVAILABLE, "could not read from approvald: %s",
		                    errstr(-rc, ebuf, sizeof(ebuf)));
	}
}

int p11g_wire_call_path(const char *path, json_t *req, json_t **ret_result, int timeout_ms,
                        p11g_err *err)
{
	_cleanup_close_ int fd = p11g_wire_connect(path, err);

	if (fd < 0)
		return -1;
	return p11g_wire_call(fd, req, ret_result, timeout_ms, err);
}

const char *p11g_wire_socket_path(const char *explicit_path)
{
	const char *env;

	if (explicit_path)
		return explicit_path;
	/* secure_getenv: a setuid program using the module must not be steered
	 * to a socket of the caller's choosing. */
	env = secure_getenv("APPROVALD_SOCKET");
	if (env && *env)
		return env;
	return P11G_DEFAULT_SOCKET;
}
