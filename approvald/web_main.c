/*
 * approvald-web: the approvals page (issue 20).  approvald accepts each connection of
 * web_socket itself, reads its peer from the kernel, and hands it over on descriptor 3 with a
 * channel of its own to approvald (SCM_RIGHTS), limited to the verbs a page needs (list, show,
 * approve, reject, status) and acting as that peer — or, for a connection from the trusted
 * proxy's uid, as the user each request names from the proxy's header (--user-header), which
 * approvald-web reads after the proxy's own authentication; the header of any other peer is
 * ignored, and from the proxy without it the request is refused.
 * It decides nothing: approvald checks every right as for the CLI.  Its own part is HTTP
 * (libmicrohttpd, a thread per connection: a slow page holds up no other): bounded sizes,
 * connections (per peer uid too) and times (a request's header within 10 s), CSRF tokens
 * bound to the viewer, Origin and Host, and pages in which everything approvald returned is
 * escaped (web_html.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "approvald/web_html.h"
#include "approvald/web_static.h"
#include "approvald/helper_user.h"
#include "p11gate/errors.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

#define CTL_FD        3     /* from approvald: connections and their channels */
#define FD_TABLE      8192  /* descriptors above this are not taken */
#define BODY_MAX      16384 /* a form or an API body */
#define CONN_MAX      64    /* connections in all */
#define CONN_PER_UID  8     /* of one peer uid (the proxy's: CONN_MAX) */
#define HEADER_MS     10000 /* a request's header, whole, within this of its first byte */
#define CONN_MEMORY   32768 /* per connection: the request's header and buffers */
#define CONN_TIMEOUT  15    /* seconds a connection may sit without progress */
#define CALL_MS       35000 /* a listing page may take approvald's reader up to 30 s */
#define PAGE_SIZE     25
#define API_LIMIT_MAX 100
#define LIST_CALLS    40 /* list calls per page (each reads a bounded number of operations) */
#define NAME_MAX_LEN  64

static const char *const usage_text =
    "Usage: approvald-web --parent PID [--user-header NAME]\n"
    "approvald's web page.  approvald starts it when web_socket is set and hands it each\n"
    "connection with a channel of its own on descriptor 3; it is not run by hand.\n";

/* One HTTP connection's own: its channel to approvald, and whether its peer is the proxy. */
struct conn_ctx {
	int fd, chan;
	uid_t uid;
	bool proxy;
	bool broken;      /* the channel failed: answers say approvald is not answering */
	int64_t since_ms; /* waiting for a request's header since then (0: a request is in) */
};

static struct {
	const char *user_header;
	unsigned char secret[32]; /* the CSRF tokens' key, new at every start */
	pthread_mutex_t lock;     /* the table below */
	/* every connection handed over and not yet closed, by descriptor */
	struct conn_ctx *live[FD_TABLE];
	unsigned n_live;
} g = {.user_header = "X-Remote-User", .lock = PTHREAD_MUTEX_INITIALIZER};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- who asks ------------------------------------------------------------------------ */

struct who {
	struct conn_ctx *ctx;
	json_t *as;                   /* through the proxy: the user approvald is told */
	char principal[96];           /* "uid:1001", "user:alice": the CSRF token's subject */
	char name[NAME_MAX_LEN + 16]; /* for the page's header */
	char how[48];
	bool proxy;
	char csrf[65];
};

/* Characters of an account name (POSIX portable names, and '@' for user@domain). */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	return n && n <= NAME_MAX_LEN && s[0] != '-' &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@-") == n;
}

static void csrf_of(struct who *w)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	if (!HMAC(EVP_sha256(), g.secret, sizeof(g.secret), (const unsigned char *)w->principal,
	          strlen(w->principal), mac, &n))
		n = 0;
	for (unsigned i = 0; i < n && i < 32; i++)
		snprintf(w->csrf + 2 * i, 3, "%02x", mac[i]);
}

struct count_ctx {
	const char *name;
	unsigned n;
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
	struct count_ctx *c = cls;
	(void)kind;
	(void)value;
	c->n += !strcasecmp(key, c->name);
	return MHD_YES;
}

static struct conn_ctx *ctx_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? ci->socket_context : NULL;
}

/* 0, or an HTTP status with *code and *msg saying why.  approvald decided whether the peer is
 * the proxy (and acts as the peer otherwise); the uid here is for the page's own words. */
static int who_of(struct MHD_Connection *c, struct who *w, const char **code, const char **msg)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	struct conn_ctx *x = ctx_of(c);
	struct ucred cr;
	socklen_t len = sizeof(cr);

	memset(w, 0, sizeof(*w));
	*code = P11G_E_FORBIDDEN;
	if (!x || !ci || getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
		*msg = "the connection's peer is not known";
		return MHD_HTTP_FORBIDDEN;
	}
	w->ctx = x;
	if (x->proxy) {
		const char *user = MHD_lookup_connection_value(c, MHD_HEADER_KIND, g.user_header);
		struct count_ctx count = {.name = g.user_header};
		MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, &count);
		if (count.n > 1) {
			/* which one the proxy set is not for us to guess */
			*msg = "the request names its user twice";
			return MHD_HTTP_FORBIDDEN;
		}
		if (!user || !*user) {
			*msg = "the proxy named no user: its authentication must set the user "
			       "header";
			return MHD_HTTP_FORBIDDEN;
		}
		if (!name_ok(user)) {
			*msg = "the proxy named a user whose name is not an account name";
			return MHD_HTTP_FORBIDDEN;
		}
		w->proxy = true;
		snprintf(w->principal, sizeof(w->principal), "user:%s", user);
		snprintf(w->name, sizeof(w->name), "%s", user);
		snprintf(w->how, sizeof(w->how), "web, proxy uid %u", (unsigned)cr.uid);
		if (!(w->as = json_pack("{s:s}", "user", user))) {
			*code = P11G_E_INTERNAL;
			*msg = "out of memory";
			return MHD_HTTP_INTERNAL_SERVER_ERROR;
		}
	} else {
		struct passwd pw, *found = NULL;
		char buf[2048];
		snprintf(w->principal, sizeof(w->principal), "uid:%u", (unsigned)cr.uid);
		if (getpwuid_r(cr.uid, &pw, buf, sizeof(buf), &found) == 0 && found)
			snprintf(w->name, sizeof(w->name), "%s", pw.pw_name);
		else
			snprintf(w->name, sizeof(w->name), "uid %u", (unsigned)cr.uid);
		snprintf(w->how, sizeof(w->how), "web, peer uid %u", (unsigned)cr.uid);
	}
	csrf_of(w);
	return 0;
}

/* ---- approvald ----------------------------------------------------------------------- */

/* One call on w's connection's channel: 0 with *ret, or -1 with err (approvald's code). */
static int call(const struct who *w, const char *verb, json_t *args, json_t **ret, p11g_err *err)
{
	json_t *req = args ? args : json_object();
	int r;
	*ret = NULL;
	if (!req || json_object_set_new(req, "verb", json_string(verb)) < 0 ||
	    (w->as && json_object_set(req, "as", w->as) < 0)) {
		json_decref(req);
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	if (w->ctx->broken) {
		r = p11g_err_set(err, P11G_E_UNAVAILABLE, "approvald is not answering");
	} else {
		r = p11g_wire_call(w->ctx->chan, req, ret, CALL_MS, err);
		if (r < 0 &&
		    (!strcmp(err->code, P11G_E_UNAVAILABLE) ||
		     !strcmp(err->code, P11G_E_PROTOCOL) || !strcmp(err->code, P11G_E_TIMEOUT))) {
			/* out of step or gone: nothing more is asked on it */
			p11g_warn("a connection's channel to approvald failed: %s", err->msg);
			p11g_err_set(err, P11G_E_UNAVAILABLE, "approvald is not answering");
			w->ctx->broken = true;
		}
	}
	json_decref(req);
	return r;
}

/* Newest first, up to want operations: approvald's bounded list calls, one after another.
 * *ret_next: the id to go on below for an older page (0: none). */
static int list_page(const struct who *w, bool all, const char *state, uint64_t before,
                     unsigned want, json_t **ret_ops, uint64_t *ret_next, p11g_err *err)
{
	json_t *ops = json_array();
	uint64_t cursor = before;
	bool more = true;
	*ret_next = 0;
	if (!ops)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	for (int i = 0; i < LIST_CALLS && more && json_array_size(ops) < want; i++) {
		json_t *res = NULL,
		       *args = json_pack("{s:b, s:b, s:I, s:I}", "all", all, "newest_first", 1,
		                         "limit", (json_int_t)(want - json_array_size(ops)),
		                         "after", (json_int_t)cursor);
		if (args && state && json_object_set_new(args, "state", json_string(state)) < 0) {
			json_decref(args);
			args = NULL;
		}
		if (!args || call(w, "list", args, &res, err) < 0) {
			if (!args)
				p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
			json_decref(ops);
			return -1;
		}
		json_array_extend(ops, json_object_get(res, "operations"));
		more = json_is_true(json_object_get(res, "more"));
		if (more)
			cursor = (uint64_t)json_integer_value(json_object_get(res, "next"));
		json_decref(res);
		if (more && cursor <= 1)
			more = false;
	}
	size_t n = json_array_size(ops);
	if (n >= want && n)
		*ret_next =
		    (uint64_t)json_integer_value(json_object_get(json_array_get(ops, n - 1), "id"));
	else if (more)
		*ret_next = cursor; /* read as far as this call could: the next page goes on */
	if (*ret_next == 1)
		*ret_next = 0;
	*ret_ops = ops;
	return 0;
}

/* ---- responses ----------------------------------------------------------------------- */

static int status_of(const char *code)
{
	static const struct {
		const char *code;
		int status;
	} t[] = {{P11G_E_NOT_FOUND, 404},
	         {P11G_E_FORBIDDEN, 403},
	         {P11G_E_SELF_APPROVAL, 403},
	         {P11G_E_NOT_APPROVER, 403},
	         {"csrf", 403},
	         {"origin", 403},
	         {"host", 403},
	         {P11G_E_ALREADY_DECIDED, 409},
	         {P11G_E_EXPIRED, 409},
	         {P11G_E_ALREADY_APPROVED, 409},
	         {P11G_E_BAD_REQUEST, 400},
	         {P11G_E_LIMIT, 429},
	         {P11G_E_UNAVAILABLE, 503},
	         {P11G_E_TIMEOUT, 503},
	         {"too_large", 413},
	         {"method", 405}};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(t); i++)
		if (code && !strcmp(code, t[i].code))
			return t[i].status;
	return 500;
}

static enum MHD_Result send_buf(struct MHD_Connection *c, int status, const char *type, char *body,
                                size_t len, bool take, const char *location)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
	    len, body, take ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!r) {
		if (take)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Content-Security-Policy",
	                        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; "
	                        "base-uri 'none'");
	MHD_add_response_header(r, "X-Frame-Options", "DENY");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	/* same-origin, not no-referrer: under no-referrer Chromium sends "Origin: null" on the
	 * page's own form posts, which the origin check must refuse */
	MHD_add_response_header(r, "Referrer-Policy", "same-origin");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	if (location)
		MHD_add_response_header(r, "Location", location);
	if (status == 405)
		MHD_add_response_header(r, "Allow", "GET, HEAD, POST");
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *body)
{
	char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!s)
		return MHD_NO;
	return send_buf(c, status, "application/json", s, strlen(s), true, NULL);
}

static enum MHD_Result api_error(struct MHD_Connection *c, const char *code, const char *msg)
{
	return send_json(c, status_of(code),
	                 json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
}

static enum MHD_Result send_page(struct MHD_Connection *c, int status, struct p11g_html *h)
{
	if (h->oom) {
		p11g_html_free(h);
		return MHD_NO;
	}
	char *body = h->p;
	size_t len = h->len;
	h->p = NULL;
	p11g_html_free(h);
	return send_buf(c, status, "text/html; charset=utf-8", body ? body : strdup(""),
	                body ? len : 0, true, NULL);
}

static void view_init(struct p11g_web_view *v, const struct who *w, long long pending)
{
	v->viewer = w->name;
	v->how = w->how;
	v->csrf = w->csrf;
	v->pending = pending;
	v->now = (int64_t)time(NULL);
}

/* The dashboard figure: what waits for the viewer (-1 when approvald would not say). */
static long long pending_for(const struct who *w)
{
	json_t *res = NULL;
	p11g_err err = {0};
	if (call(w, "status", NULL, &res, &err) < 0)
		return -1;
	long long n = (long long)json_integer_value(json_object_get(res, "pending_for_you"));
	json_decref(res);
	return n;
}

static enum MHD_Result page_error(struct MHD_Connection *c, const struct who *w, const char *code,
                                  const char *msg)
{
	struct p11g_html h = {0};
	struct p11g_web_view v;
	view_init(&v, w, -1);
	p11g_html_begin(&h, &v, "Refused");
	p11g_html_error(&h, &v, code, msg);
	p11g_html_end(&h);
	return send_page(c, status_of(code), &h);
}

/* ---- requests ------------------------------------------------------------------------ */

struct req {
	char *body;
	size_t len;
	bool too_big;
	/* form fields */
	char csrf[80], confirm[4];
	char *reason;
	size_t reason_len;
	bool bad_form;
};

static void req_free(struct req *r)
{
	if (!r)
		return;
	free(r->body);
	free(r->reason);
	free(r);
}

static struct conn_ctx *ctx_of(struct MHD_Connection *c);

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)toe;
	req_free(*con_cls);
	*con_cls = NULL;
	/* the next request's header has its own deadline */
	struct conn_ctx *x = ctx_of(c);
	if (x)
		__atomic_store_n(&x->since_ms, mono_ms(), __ATOMIC_RELAXED);
}

static bool append(char *dst, size_t cap, uint64_t off, const char *data, size_t size)
{
	if (off + size >= cap)
		return false;
	memcpy(dst + off, data, size);
	dst[off + size] = '\0';
	return true;
}

static enum MHD_Result form_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *filename, const char *content_type,
                                  const char *transfer_encoding, const char *data, uint64_t off,
                                  size_t size)
{
	struct req *r = cls;
	(void)kind;
	(void)filename;
	(void)content_type;
	(void)transfer_encoding;
	if (!strcmp(key, "csrf")) {
		if (!append(r->csrf, sizeof(r->csrf), off, data, size))
			r->bad_form = true;
	} else if (!strcmp(key, "confirm")) {
		if (!append(r->confirm, sizeof(r->confirm), off, data, size))
			r->bad_form = true;
	} else if (!strcmp(key, "reason")) {
		char *p = NULL;
		if (off != r->reason_len || off + size > BODY_MAX ||
		    !(p = realloc(r->reason, (size_t)off + size + 1))) {
			r->bad_form = true;
			return MHD_YES;
		}
		r->reason = p;
		memcpy(p + off, data, size);
		r->reason_len = (size_t)off + size;
		p[r->reason_len] = '\0';
	}
	return MHD_YES;
}

static bool parse_form(struct MHD_Connection *c, struct req *r)
{
	struct MHD_PostProcessor *pp = MHD_create_post_processor(c, 4096, form_field, r);
	if (!pp)
		return false; /* not a form (or no memory) */
	bool ok = !r->len || MHD_post_process(pp, r->body, r->len) == MHD_YES;
	MHD_destroy_post_processor(pp);
	return ok && !r->bad_form;
}

/* The id of "/op/ID..." or "/api/v1/operations/ID...": > 0, and *rest what follows. */
static uint64_t parse_id(const char *s, const char **rest)
{
	char *end;
	if (*s < '1' || *s > '9')
		return 0;
	errno = 0;
	unsigned long long n = strtoull(s, &end, 10);
	if (errno || n > INT64_MAX)
		return 0;
	*rest = end;
	return n;
}

/* A Host (or X-Forwarded-Host) value's host name, lowercased, without port: into out. */
static bool host_name(const char *v, char *out, size_t n)
{
	size_t len;
	if (!v)
		return false;
	if (*v == '[') {
		const char *e = strchr(v, ']');
		if (!e)
			return false;
		len = (size_t)(e - v) + 1;
	} else {
		len = strcspn(v, ":,");
	}
	if (!len || len >= n)
		return false;
	for (size_t i = 0; i < len; i++)
		out[i] = (char)((v[i] >= 'A' && v[i] <= 'Z') ? v[i] + 32 : v[i]);
	out[len] = '\0';
	return true;
}

/* The host the browser asked for: "host[:port]" as sent; behind the proxy, the last value of
 * X-Forwarded-Host (the proxy appends its own to whatever the client sent). */
static const char *asked_host(struct MHD_Connection *c, const struct who *w)
{
	const char *fwd =
	    w->proxy ? MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Forwarded-Host") : NULL;
	if (!fwd)
		return MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
	const char *last = strrchr(fwd, ',');
	if (last)
		fwd = last + 1;
	while (*fwd == ' ' || *fwd == '\t')
		fwd++;
	return fwd;
}

/* Cross-site checks: a peer that is not the proxy came through a loopback name (`ssh -L`;
 * anything else is DNS rebinding); a POST from a browser names our own origin. */
static int site_check(struct MHD_Connection *c, const struct who *w, bool post, const char **code,
                      const char **msg)
{
	char host[256];
	const char *asked = asked_host(c, w);
	if (!w->proxy) {
		if (!host_name(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host"), host,
		               sizeof(host)) ||
		    (strcmp(host, "localhost") && strcmp(host, "127.0.0.1") &&
		     strcmp(host, "[::1]"))) {
			*code = "host";
			*msg =
			    "this page answers to localhost only (reach it with ssh -L, or through "
			    "the proxy)";
			return -1;
		}
	}
	if (!post)
		return 0;
	const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
	if (!origin)
		return 0; /* not a browser's cross-site request: browsers send Origin on POST */
	const char *rest = !strncmp(origin, "http://", 7)    ? origin + 7
	                   : !strncmp(origin, "https://", 8) ? origin + 8
	                                                     : NULL;
	/* "host[:port]" exactly */
	size_t n = asked ? strcspn(asked, " \t") : 0;
	if (!rest || !asked || strlen(rest) != n || strncasecmp(rest, asked, n)) {
		*code = "origin";
		*msg = "the request came from another site";
		return -1;
	}
	return 0;
}

static const char *arg(struct MHD_Connection *c, const char *name)
{
	const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
	return v && *v ? v : NULL;
}

static const char *state_arg(struct MHD_Connection *c, bool *bad)
{
	static const char *const states[] = {"pending", "approved", "exhausted",
	                                     "expired", "revoked",  "rejected"};
	const char *s = arg(c, "state");
	*bad = false;
	if (!s)
		return NULL;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(states); i++)
		if (!strcmp(s, states[i]))
			return states[i];
	*bad = true;
	return NULL;
}

static uint64_t before_arg(struct MHD_Connection *c, bool *bad)
{
	const char *s = arg(c, "before"), *rest = NULL;
	*bad = false;
	if (!s)
		return 0;
	uint64_t id = parse_id(s, &rest);
	if (!id || *rest)
		*bad = true;
	return id;
}

static enum MHD_Result get_list_page(struct MHD_Connection *c, const struct who *w)
{
	const char *view = arg(c, "view");
	bool all = view && !strcmp(view, "all"), bad1, bad2;
	const char *state = state_arg(c, &bad1);
	uint64_t before = before_arg(c, &bad2), next = 0;
	json_t *ops = NULL;
	p11g_err err = {0};
	if (bad1 || bad2)
		return page_error(c, w, P11G_E_BAD_REQUEST, "unknown state or a bad page cursor");
	if (list_page(w, all, all ? state : NULL, before, PAGE_SIZE, &ops, &next, &err) < 0)
		return page_error(c, w, err.code, err.msg);
	struct p11g_html h = {0};
	struct p11g_web_view v;
	view_init(&v, w, pending_for(w));
	p11g_html_begin(&h, &v, all ? "All operations" : "Approvals");
	p11g_html_list(&h, &v, ops, all, state, next);
	p11g_html_end(&h);
	json_decref(ops);
	return send_page(c, 200, &h);
}

/* Whether op id waits for w's decision (approvald's list: pending, and w may approve it). */
static bool awaits(const struct who *w, uint64_t id)
{
	json_t *res = NULL;
	p11g_err err = {0};
	json_t *args = json_pack("{s:I, s:i}", "after", (json_int_t)(id - 1), "limit", 1);
	if (!args || call(w, "list", args, &res, &err) < 0)
		return true; /* the forms are shown; approvald decides */
	const json_t *first = json_array_get(json_object_get(res, "operations"), 0);
	bool yes = (first && (uint64_t)json_integer_value(json_object_get(first, "id")) == id) ||
	           (!first && json_is_true(json_object_get(res, "more")));
	json_decref(res);
	return yes;
}

static enum MHD_Result details_page(struct MHD_Connection *c, const struct who *w, uint64_t id,
                                    int status, const char *kind, const char *code,
                                    const char *flash)
{
	json_t *res = NULL;
	p11g_err err = {0};
	if (call(w, "show", json_pack("{s:I}", "id", (json_int_t)id), &res, &err) < 0)
		return page_error(c, w, err.code, err.msg);
	const json_t *op = json_object_get(res, "operation");
	const char *state = json_string_value(json_object_get(op, "state"));
	bool may = state && !strcmp(state, "pending") && awaits(w, id);
	/* a result line from ?done= only when the operation bears it out (a link cannot make the
	 * page say "Approved." of what nobody approved) */
	if (kind && !strcmp(kind, "ok") && flash) {
		bool shown = false;
		const json_t *a;
		size_t i;
		if (!strcmp(flash, "Rejected."))
			shown = state && !strcmp(state, "rejected");
		else
			json_array_foreach(json_object_get(op, "approvals"), i, a) shown |=
			    !strcmp(json_string_value(json_object_get(a, "user")) ?: "", w->name);
		if (!shown)
			kind = flash = NULL;
	}
	struct p11g_html h = {0};
	struct p11g_web_view v;
	char title[64];
	snprintf(title, sizeof(title), "Operation %" PRIu64, id);
	view_init(&v, w, pending_for(w));
	p11g_html_begin(&h, &v, title);
	p11g_html_details(&h, &v, op, may, kind, code, flash);
	p11g_html_end(&h);
	json_decref(res);
	return send_page(c, status, &h);
}

/* POST /op/ID/approve|reject from the page's forms. */
static enum MHD_Result form_decision(struct MHD_Connection *c, const struct who *w, struct req *r,
                                     uint64_t id, bool approve)
{
	p11g_err err = {0};
	json_t *res = NULL;
	if (!parse_form(c, r))
		return page_error(c, w, P11G_E_BAD_REQUEST, "the form could not be read");
	if (strlen(r->csrf) != 64 || CRYPTO_memcmp(r->csrf, w->csrf, 64))
		return page_error(c, w, "csrf", "the form's token is not yours");
	if (!approve && (!r->reason || !r->reason[0]))
		return page_error(c, w, P11G_E_BAD_REQUEST, "a rejection needs a reason");
	if (strcmp(r->confirm, "1")) {
		/* no JavaScript: the confirmation is a page of its own */
		if (call(w, "show", json_pack("{s:I}", "id", (json_int_t)id), &res, &err) < 0)
			return page_error(c, w, err.code, err.msg);
		struct p11g_html h = {0};
		struct p11g_web_view v;
		view_init(&v, w, pending_for(w));
		p11g_html_begin(&h, &v, approve ? "Approve?" : "Reject?");
		p11g_html_confirm(&h, &v, json_object_get(res, "operation"),
		                  approve ? "approve" : "reject", r->reason);
		p11g_html_end(&h);
		json_decref(res);
		return send_page(c, 200, &h);
	}
	json_t *args = approve ? json_pack("{s:I}", "id", (json_int_t)id)
	                       : json_pack("{s:I, s:s}", "id", (json_int_t)id, "reason", r->reason);
	if (call(w, approve ? "approve" : "reject", args, &res, &err) < 0) {
		if (!strcmp(err.code, P11G_E_NOT_FOUND) || !strcmp(err.code, P11G_E_UNAVAILABLE))
			return page_error(c, w, err.code, err.msg);
		return details_page(c, w, id, status_of(err.code), "error", err.code,
		                    p11g_web_code_sentence(err.code));
	}
	json_decref(res);
	char loc[80];
	snprintf(loc, sizeof(loc), "/op/%" PRIu64 "?done=%s", id,
	         approve ? "approved" : "rejected");
	return send_buf(c, 303, "text/plain; charset=utf-8", (char *)"See the operation\n", 18,
	                false, loc);
}

static enum MHD_Result api(struct MHD_Connection *c, const struct who *w, struct req *r,
                           const char *path, bool post)
{
	p11g_err err = {0};
	json_t *res = NULL;
	const char *rest = "";
	uint64_t id = 0;

	if (!strcmp(path, "status")) {
		if (post)
			return api_error(c, "method", "GET only");
		if (call(w, "status", NULL, &res, &err) < 0)
			return api_error(c, err.code, err.msg);
		return send_json(c, 200, res);
	}
	if (!strcmp(path, "operations")) {
		bool bad1, bad2, all;
		const char *state = state_arg(c, &bad1), *a = arg(c, "all"), *l = arg(c, "limit");
		uint64_t before = before_arg(c, &bad2), next = 0;
		unsigned long limit = l ? strtoul(l, NULL, 10) : PAGE_SIZE;
		json_t *ops = NULL;
		if (post)
			return api_error(c, "method", "GET only");
		all = a && (!strcmp(a, "1") || !strcmp(a, "true"));
		if (bad1 || bad2 || (a && !all && strcmp(a, "0") && strcmp(a, "false")) ||
		    (l &&
		     (strspn(l, "0123456789") != strlen(l) || limit < 1 || limit > API_LIMIT_MAX)))
			return api_error(
			    c, P11G_E_BAD_REQUEST,
			    "bad argument: all=1, state=STATE, limit=1..100, before=ID");
		if (state && !all)
			all =
			    false; /* pending for the viewer, or a state: approvald's list rules */
		if (list_page(w, all, state, before, (unsigned)limit, &ops, &next, &err) < 0)
			return api_error(c, err.code, err.msg);
		json_t *out = json_pack("{s:o, s:b}", "operations", ops, "more", next != 0);
		if (out && next)
			json_object_set_new(out, "next", json_integer((json_int_t)next));
		return send_json(c, 200, out);
	}
	if (strncmp(path, "operations/", 11) || !(id = parse_id(path + 11, &rest)))
		return api_error(c, P11G_E_NOT_FOUND, "no such resource");
	if (!*rest) {
		if (post)
			return api_error(c, "method", "GET only");
		if (call(w, "show", json_pack("{s:I}", "id", (json_int_t)id), &res, &err) < 0)
			return api_error(c, err.code, err.msg);
		return send_json(c, 200, res);
	}
	bool approve = !strcmp(rest, "/approve");
	if (!approve && strcmp(rest, "/reject"))
		return api_error(c, P11G_E_NOT_FOUND, "no such resource");
	if (!post)
		return api_error(c, "method", "POST only");
	/* a header a browser sends cross-site only after a preflight, which is never granted */
	const char *x = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-P11gate-Request");
	if (!x || strcmp(x, "1"))
		return api_error(c, "csrf",
		                 "API requests that change state need the header "
		                 "X-P11gate-Request: 1");
	json_t *body = NULL, *args;
	if (r->len) {
		json_error_t je;
		body = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &je);
		if (!json_is_object(body)) {
			json_decref(body);
			return api_error(c, P11G_E_BAD_REQUEST, "the body must be a JSON object");
		}
	}
	const json_t *reason = json_object_get(body, "reason");
	if (approve)
		args = json_pack("{s:I}", "id", (json_int_t)id);
	else if (!json_is_string(reason) || !json_string_length(reason))
		args = NULL;
	else
		args = json_pack("{s:I, s:O}", "id", (json_int_t)id, "reason", reason);
	json_decref(body);
	if (!args)
		return api_error(c, P11G_E_BAD_REQUEST, "a rejection needs {\"reason\": TEXT}");
	if (call(w, approve ? "approve" : "reject", args, &res, &err) < 0)
		return api_error(c, err.code, err.msg);
	return send_json(c, 200, res);
}

static enum MHD_Result route(struct MHD_Connection *c, struct req *r, const char *url, bool post)
{
	struct who w;
	const char *code = NULL, *msg = NULL, *rest = "";
	bool is_api = !strncmp(url, "/api/", 5);
	enum MHD_Result ret;
	int st;

	for (const struct p11g_web_asset *a = p11g_web_assets; a->path; a++)
		if (!strcmp(url, a->path))
			return post ? send_buf(c, 405, "text/plain; charset=utf-8",
			                       (char *)"GET or HEAD only\n", 17, false, NULL)
			            : send_buf(c, 200, a->type, (char *)a->data, a->len, false,
			                       NULL);
	if ((st = who_of(c, &w, &code, &msg)) != 0) {
		json_decref(w.as);
		if (is_api)
			return send_json(
			    c, st,
			    json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
		struct who anon = {.as = NULL};
		snprintf(anon.name, sizeof(anon.name), "unknown");
		snprintf(anon.how, sizeof(anon.how), "refused");
		struct p11g_html h = {0};
		struct p11g_web_view v;
		view_init(&v, &anon, -1);
		p11g_html_begin(&h, &v, "Refused");
		p11g_html_error(&h, &v, code, msg);
		p11g_html_end(&h);
		return send_page(c, st, &h);
	}
	if (site_check(c, &w, post, &code, &msg) < 0)
		ret = is_api ? api_error(c, code, msg) : page_error(c, &w, code, msg);
	else if (r->too_big)
		ret = is_api ? api_error(c, "too_large", "the body is over 16 KiB")
		             : page_error(c, &w, "too_large", "the body is over 16 KiB");
	else if (!strncmp(url, "/api/v1/", 8))
		ret = api(c, &w, r, url + 8, post);
	else if (is_api)
		ret = api_error(c, P11G_E_NOT_FOUND, "no such resource");
	else if (!strcmp(url, "/"))
		ret = post ? page_error(c, &w, "method", "GET only") : get_list_page(c, &w);
	else if (!strncmp(url, "/op/", 4)) {
		uint64_t id = parse_id(url + 4, &rest);
		const char *done = arg(c, "done");
		if (!id)
			ret = page_error(c, &w, P11G_E_NOT_FOUND, "no such page");
		else if (!*rest && !post)
			ret = details_page(c, &w, id, 200, done ? "ok" : NULL, NULL,
			                   !done                       ? NULL
			                   : !strcmp(done, "approved") ? "Approved."
			                   : !strcmp(done, "rejected") ? "Rejected."
			                                               : NULL);
		else if ((!strcmp(rest, "/approve") || !strcmp(rest, "/reject")) && post)
			ret = form_decision(c, &w, r, id, !strcmp(rest, "/approve"));
		else if (!*rest || !strcmp(rest, "/approve") || !strcmp(rest, "/reject"))
			ret = page_error(c, &w, "method", post ? "GET only" : "POST only");
		else
			ret = page_error(c, &w, P11G_E_NOT_FOUND, "no such page");
	} else
		ret = page_error(c, &w, P11G_E_NOT_FOUND, "no such page");
	json_decref(w.as);
	return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
	struct req *r = *con_cls;
	bool post = !strcmp(method, "POST");
	(void)cls;
	(void)version;

	if (!r) {
		/* the header is in (its deadline is over); refuse what is too large before
		 * reading it */
		struct conn_ctx *x = ctx_of(c);
		if (x)
			__atomic_store_n(&x->since_ms, 0, __ATOMIC_RELAXED);
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
		if (!(r = calloc(1, sizeof(*r))))
			return MHD_NO;
		*con_cls = r;
		if (cl && strtoull(cl, NULL, 10) > BODY_MAX) {
			static char msg[] =
			    "{\"error\":{\"code\":\"too_large\",\"message\":\"the body "
			    "is over 16 KiB\"}}";
			return send_buf(c, 413, "application/json", msg, strlen(msg), false, NULL);
		}
		if (!post && strcmp(method, "GET") && strcmp(method, "HEAD")) {
			static char msg[] =
			    "{\"error\":{\"code\":\"method\",\"message\":\"GET, HEAD or POST\"}}";
			return send_buf(c, 405, "application/json", msg, strlen(msg), false, NULL);
		}
		return MHD_YES;
	}
	if (*upload_size) {
		if (!r->too_big && r->len + *upload_size <= BODY_MAX) {
			char *p = realloc(r->body, r->len + *upload_size + 1);
			if (!p)
				return MHD_NO;
			memcpy(p + r->len, upload, *upload_size);
			r->body = p;
			r->len += *upload_size;
			p[r->len] = '\0';
		} else {
			r->too_big = true;
			free(r->body);
			r->body = NULL;
			r->len = 0;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	return route(c, r, url, post);
}

/* ---- main ---------------------------------------------------------------------------- */

/* libmicrohttpd starts a connection handed over (its context from the table) and ends it (its
 * channel closed: approvald's end hangs up). */
static void notify(void *cls, struct MHD_Connection *c, void **socket_context,
                   enum MHD_ConnectionNotificationCode toe)
{
	(void)cls;
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	int fd = ci ? ci->connect_fd : -1;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		pthread_mutex_lock(&g.lock);
		if (fd >= 0 && fd < FD_TABLE)
			*socket_context = g.live[fd];
		pthread_mutex_unlock(&g.lock);
		return;
	}
	struct conn_ctx *x = *socket_context;
	if (!x)
		return;
	pthread_mutex_lock(&g.lock);
	if (x->fd >= 0 && x->fd < FD_TABLE && g.live[x->fd] == x) {
		g.live[x->fd] = NULL;
		g.n_live--;
	}
	pthread_mutex_unlock(&g.lock);
	close(x->chan);
	free(x);
	*socket_context = NULL;
}

/* A connection not taken: a short answer, then closed with its channel. */
static void turn_away(int fd, int chan, const char *why)
{
	char reply[256];
	int n = snprintf(reply, sizeof(reply),
	                 "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; "
	                 "charset=utf-8\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s\n",
	                 strlen(why) + 1, why);
	(void)send(fd, reply, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	close(fd);
	close(chan);
}

/* One connection from approvald: -1 when approvald is gone. */
static int take(struct MHD_Daemon *d)
{
	unsigned char flag = 0;
	struct iovec iov = {.iov_base = &flag, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = {.msg_iov = &iov,
	                   .msg_iovlen = 1,
	                   .msg_control = u.buf,
	                   .msg_controllen = sizeof(u.buf)};
	int fds[2] = {-1, -1};
	ssize_t n = recvmsg(CTL_FD, &m, MSG_CMSG_CLOEXEC);
	if (n < 0 && errno == EINTR)
		return 0;
	if (n <= 0)
		return -1;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
	    cm->cmsg_len == CMSG_LEN(2 * sizeof(int)))
		memcpy(fds, CMSG_DATA(cm), sizeof(fds));
	if (fds[0] < 0 || fds[1] < 0 || (m.msg_flags & MSG_CTRUNC) ||
	    (flag != 'P' && flag != 'U') || fds[0] >= FD_TABLE) {
		if (fds[0] >= 0)
			close(fds[0]);
		if (fds[1] >= 0)
			close(fds[1]);
		return 0;
	}
	struct ucred cr;
	socklen_t len = sizeof(cr);
	if (getsockopt(fds[0], SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
		turn_away(fds[0], fds[1], "the connection's peer is not known");
		return 0;
	}
	struct conn_ctx *x = calloc(1, sizeof(*x));
	if (!x) {
		turn_away(fds[0], fds[1], "out of memory");
		return 0;
	}
	x->fd = fds[0];
	x->chan = fds[1];
	x->uid = cr.uid;
	x->proxy = flag == 'P';
	x->since_ms = mono_ms();
	/* our own count decides: libmicrohttpd's limit (set higher) is never reached, and one
	 * peer uid (but the proxy's) holds at most CONN_PER_UID of them */
	const char *full = NULL;
	unsigned of_uid = 0;
	pthread_mutex_lock(&g.lock);
	for (size_t i = 0; !x->proxy && i < FD_TABLE; i++)
		of_uid += g.live[i] && g.live[i]->uid == x->uid;
	if (g.n_live >= CONN_MAX)
		full = "the approvals page is serving its most connections; try again shortly";
	else if (!x->proxy && of_uid >= CONN_PER_UID)
		full = "you have the most connections open to the approvals page already";
	else if (g.live[x->fd])
		full = "internal error: a descriptor handed over twice";
	else {
		g.live[x->fd] = x;
		g.n_live++;
	}
	pthread_mutex_unlock(&g.lock);
	if (full) {
		turn_away(x->fd, x->chan, full);
		free(x);
		return 0;
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (MHD_add_connection(d, fds[0], (const struct sockaddr *)&sa, sizeof(sa)) != MHD_YES) {
		/* the socket is closed by libmicrohttpd, which never started it: the channel is
		 * ours */
		pthread_mutex_lock(&g.lock);
		if (g.live[fds[0]] == x) {
			g.live[fds[0]] = NULL;
			g.n_live--;
		}
		pthread_mutex_unlock(&g.lock);
		close(x->chan);
		free(x);
	}
	return 0;
}

/* Connections whose request's header has not come whole within HEADER_MS: shut down (their
 * threads then end them; a client dribbling bytes holds its slot no longer than that). */
static void reap_slow(void)
{
	int64_t now = mono_ms();
	pthread_mutex_lock(&g.lock);
	for (size_t i = 0; g.n_live && i < FD_TABLE; i++) {
		struct conn_ctx *x = g.live[i];
		int64_t since = x ? __atomic_load_n(&x->since_ms, __ATOMIC_RELAXED) : 0;
		if (x && since && now - since > HEADER_MS) {
			shutdown(x->fd, SHUT_RDWR);
			__atomic_store_n(&x->since_ms, 0, __ATOMIC_RELAXED);
		}
	}
	pthread_mutex_unlock(&g.lock);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"parent", required_argument, NULL, 'p'},
	                                     {"user-header", required_argument, NULL, 'H'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	long parent = 0;
	int o;

	p11g_log_ident = "approvald-web";
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'p':
			parent = strtol(optarg, NULL, 10);
			break;
		case 'H':
			g.user_header = optarg;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			fputs(usage_text, stderr);
			return 2;
		}
	}
	if (parent <= 0 || optind != argc) {
		fputs(usage_text, stderr);
		return 2;
	}
	if (fcntl(CTL_FD, F_GETFD) < 0) {
		fputs("approvald-web: descriptor 3 is approvald's to give\n", stderr);
		return 2;
	}
	fcntl(CTL_FD, F_SETFD, FD_CLOEXEC);
	if (getrandom(g.secret, sizeof(g.secret), 0) != sizeof(g.secret)) {
		p11g_error("no random bytes for the form tokens: %m");
		return 1;
	}
	if (p11g_helper_drop_root() < 0)
		return 1;
	/* after the change of user, which clears it */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != (pid_t)parent) {
		p11g_error("approvald (pid %ld) is gone", parent);
		return 1;
	}
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	prctl(PR_SET_DUMPABLE, 0);
	/* SIGTERM and SIGINT end it (a signalfd, polled with descriptor 3); SIGPIPE never */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sigdelset(&set, SIGPIPE);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0) {
		p11g_error("signalfd: %m");
		return 1;
	}

	struct MHD_Daemon *d = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
	        MHD_USE_ITC | MHD_USE_NO_LISTEN_SOCKET,
	    0, NULL, NULL, handle, NULL, MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONN_MAX + 16,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONN_TIMEOUT,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY, MHD_OPTION_NOTIFY_COMPLETED,
	    completed, NULL, MHD_OPTION_NOTIFY_CONNECTION, notify, NULL, MHD_OPTION_END);
	if (!d) {
		p11g_error("cannot start serving HTTP");
		return 1;
	}
	int rc = 0;
	for (;;) {
		struct pollfd p[2] = {{.fd = CTL_FD, .events = POLLIN},
		                      {.fd = sfd, .events = POLLIN}};
		if (poll(p, 2, 1000) < 0) {
			if (errno == EINTR)
				continue;
			rc = 1;
			break;
		}
		if (p[1].revents)
			break;
		reap_slow();
		if (p[0].revents && take(d) < 0)
			break; /* approvald is gone */
	}
	MHD_stop_daemon(d);
	close(sfd);
	/* libmicrohttpd closed every connection it started; those it never did are ours */
	pthread_mutex_lock(&g.lock);
	for (size_t i = 0; i < FD_TABLE; i++)
		if (g.live[i]) {
			close(g.live[i]->chan);
			free(g.live[i]);
			g.live[i] = NULL;
		}
	pthread_mutex_unlock(&g.lock);
	return rc;
}
