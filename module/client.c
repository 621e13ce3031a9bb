/* approvald as the module asks it: "key" (cached a second), "use", on-demand "request"/"wait". */
#include <inttypes.h>
#include <poll.h>
#include <sys/socket.h>

#include "module/gate_host.h"
#include "module/module.h"
#include "module/ttl_cache.h"
#include "p11gate/log.h"
#include "approvald/textsafe.h"
#include "p11gate/idtoken_src.h"
#include "p11gate/wire.h"

#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

#define CALL_TIMEOUT_MS 15000 /* a use commits durably before the answer */

/* approvald's "key" answer for a key identity, kept P11G_KEY_CACHE_US. */
struct key_answer {
	bool guarded;
	bool allow_raw;
};

static bool same_key(const void *x, const void *y)
{
	const struct p11g_keyid *a = x, *b = y;
	return !strcmp(a->token_label, b->token_label) &&
	       !strcmp(a->token_manufacturer, b->token_manufacturer) &&
	       !strcmp(a->token_model, b->token_model) &&
	       !strcmp(a->token_serial, b->token_serial) && !strcmp(a->label, b->label) &&
	       a->id_len == b->id_len && !memcmp(a->id, b->id, a->id_len) &&
	       a->key_type == b->key_type;
}

TTL_CACHE_DEFINE(key_cache, 64, struct p11g_keyid, struct key_answer, same_key, P11G_KEY_CACHE_US)

/*
 * Connections to approvald kept for the next call (a connect costs as much
 * as the rest of an unguarded exchange).  At most POOL_MAX idle ones; more
 * concurrent calls connect for themselves and hand the connection back if
 * there is room.  A kept connection is used only while nothing is pending
 * on it: approvald closes idle connections (idle_timeout), and a closed one
 * shows as readable, so a request is never sent into a connection that is
 * already gone (and never sent twice: a failure after sending is reported,
 * not retried).
 */
#define POOL_MAX 4

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static int pool[POOL_MAX];
static size_t pool_n;

static int pool_take(void)
{
	int fd = -1;

	pthread_mutex_lock(&pool_lock);
	while (fd < 0 && pool_n > 0) {
		struct pollfd p = {.fd = pool[--pool_n], .events = POLLIN};
		if (poll(&p, 1, 0) == 0)
			fd = p.fd;
		else
			close(p.fd);
	}
	pthread_mutex_unlock(&pool_lock);
	return fd;
}

static void pool_give(int fd)
{
	pthread_mutex_lock(&pool_lock);
	if (pool_n < POOL_MAX) {
		pool[pool_n++] = fd;
		fd = -1;
	}
	pthread_mutex_unlock(&pool_lock);
	if (fd >= 0)
		close(fd);
}

static void pool_close_all(void)
{
	pthread_mutex_lock(&pool_lock);
	while (pool_n > 0)
		close(pool[--pool_n]);
	pthread_mutex_unlock(&pool_lock);
}

void p11g_client_init(void)
{
	p11g_client_cache_clear();
}

void p11g_client_reset_after_fork(void)
{
	ttl_cache_reset_after_fork(&key_cache);
	/* The parent's connections are the parent's: a reply to its request
	 * must not be read here.  Closing our copies leaves them open there. */
	pthread_mutex_init(&pool_lock, NULL);
	while (pool_n > 0)
		close(pool[--pool_n]);
}

void p11g_client_cache_clear(void)
{
	ttl_cache_forget(&key_cache, NULL, NULL);
	pool_close_all();
}

static bool code_is(const p11g_err *e, const char *code)
{
	return e->code && !strcmp(e->code, code);
}

/*
 * Whoever listens on the socket path answers for approvald: a socket left
 * by a stopped daemon in a directory others can write, or a path in the
 * configuration that another user could bind first, would let that user
 * answer "granted".  A new connection is believed only when the process that
 * listens on it runs as root or as approvald_user; otherwise it is treated
 * as approvald not being reachable (guarded keys cannot sign).  0, or -1
 * with err (unavailable) naming the uid found.  Hosted, approvald hands the
 * gate its end of a socket pair: there is nobody else to check.
 */
static int check_peer(int fd, const char *path, p11g_err *err)
{
	struct ucred peer;
	socklen_t len = sizeof(peer);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0 || len != sizeof(peer))
		return p11g_err_set(err, P11G_E_UNAVAILABLE,
		                    "approvald at %s: cannot read who serves the socket (%s); "
		                    "p11gate believes no answer from it",
		                    path, strerror(errno));
	if (peer.uid == 0 ||
	    (p11g_config_approvald_user.set && peer.uid == p11g_config_approvald_user.uid))
		return 0;
	if (p11g_config_approvald_user.set)
		return p11g_err_set(err, P11G_E_UNAVAILABLE,
		                    "approvald at %s: the socket is served by uid %u (pid %ld), "
		                    "neither root nor approvald_user (uid %u); p11gate believes no "
		                    "answer from it",
		                    path, (unsigned)peer.uid, (long)peer.pid,
		                    (unsigned)p11g_config_approvald_user.uid);
	return p11g_err_set(err, P11G_E_UNAVAILABLE,
	                    "approvald at %s: the socket is served by uid %u (pid %ld), not root; "
	                    "p11gate believes no answer from it (approvald_user in %s names "
	                    "approvald's user)",
	                    path, (unsigned)peer.uid, (long)peer.pid,
	                    p11g_m.cfg.source[0] ? p11g_m.cfg.source : "p11gate.conf");
}

/* One exchange with the configured socket (hosted: on approvald's connection). */
static int call(json_t *req, json_t **ret, int timeout_ms, p11g_err *err)
{
	const char *path = p11g_m.cfg.socket;
	int r;

	if (p11g_m.host.on) {
		pthread_mutex_lock(&p11g_m.host.fd_lock);
		r = p11g_wire_call(p11g_m.host.fd, req, ret, timeout_ms, err);
		pthread_mutex_unlock(&p11g_m.host.fd_lock);
	} else {
		int fd = pool_take();
		if (fd < 0 && (fd = p11g_wire_connect(path, err)) >= 0 &&
		    check_peer(fd, path, err) < 0) {
			close(fd);
			fd = -1;
		}
		if (fd < 0) {
			r = -1;
		} else {
			r = p11g_wire_call(fd, req, ret, timeout_ms, err);
			/* approvald answered (yes or no): the stream is in step. */
			if (r == 0 ||
			    !(code_is(err, P11G_E_UNAVAILABLE) || code_is(err, P11G_E_TIMEOUT) ||
			      code_is(err, P11G_E_PROTOCOL)))
				pool_give(fd);
			else
				close(fd);
		}
	}

	if (r < 0 &&
	    (code_is(err, P11G_E_UNAVAILABLE) || code_is(err, P11G_E_TIMEOUT) ||
	     code_is(err, P11G_E_PROTOCOL)) &&
	    !strstr(err->msg, path)) {
		/* Name the socket: the reader must know which daemon failed. */
		char msg[sizeof(err->msg)];
		memcpy(msg, err->msg, sizeof(msg));
		p11g_err_set(err, err->code, "approvald at %s: %s", path, msg);
	}
	return r;
}

/* The key's wire form; NULL (err set) for a label or token field that is not
 * UTF-8, which no policy URI could name either. */
static json_t *key_json(const struct p11g_keyid *k, p11g_err *err)
{
	json_t *j = p11g_keyid_to_json(k);
	if (!j)
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "the key's label or token fields are not UTF-8 text; p11gate cannot "
		             "name it to approvald");
	return j;
}

void p11g_client_key(const struct p11g_keyid *k, struct p11g_key_policy *ret)
{
	_cleanup_json_ json_t *req = NULL, *res = NULL;
	json_t *guarded, *allow_raw;
	struct key_answer cached;

	memset(ret, 0, sizeof(*ret));
	if (key_cache_get(k, &cached)) {
		ret->guard = cached.guarded ? P11G_GUARDED : P11G_UNGUARDED;
		ret->allow_raw = cached.allow_raw;
		return;
	}
	ret->guard = P11G_GUARD_UNKNOWN;
	json_t *kj = key_json(k, &ret->err);
	if (!kj)
		return;
	req = json_pack("{s:s, s:o}", "verb", "key", "key", kj);
	if (!req) {
		p11g_err_set(&ret->err, P11G_E_INTERNAL, "out of memory");
		return;
	}
	if (call(req, &res, CALL_TIMEOUT_MS, &ret->err) < 0)
		return;
	guarded = json_object_get(res, "guarded");
	allow_raw = json_object_get(res, "allow_raw");
	if (!json_is_boolean(guarded) || (allow_raw && !json_is_boolean(allow_raw))) {
		p11g_err_set(&ret->err, P11G_E_PROTOCOL,
		             "approvald at %s answered \"key\" without a boolean \"guarded\"",
		             p11g_m.cfg.socket);
		return;
	}
	ret->guard = json_is_true(guarded) ? P11G_GUARDED : P11G_UNGUARDED;
	ret->allow_raw = json_is_true(allow_raw);
	cached =
	    (struct key_answer){.guarded = ret->guard == P11G_GUARDED, .allow_raw = ret->allow_raw};
	key_cache_put(k, &cached);
}

static int use(const struct p11g_keyid *k, const char *mech_name, const struct p11g_use_digest *d,
               uint64_t operation, p11g_err *err)
{
	_cleanup_json_ json_t *req = NULL, *res = NULL;

	json_t *kj = key_json(k, err);
	if (!kj)
		return -1;
	req = json_pack("{s:s, s:o, s:s, s:s, s:b}", "verb", "use", "key", kj, "mechanism",
	                mech_name, "digest", d->text, "raw", d->raw);
	if (!req || (operation && json_object_set_new(req, "operation",
	                                              json_integer((json_int_t)operation)) < 0))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (call(req, &res, CALL_TIMEOUT_MS, err) < 0)
		return -1;
	p11g_debug("use granted (operation %" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT
	           " left)",
	           json_integer_value(json_object_get(res, "operation")),
	           json_integer_value(json_object_get(res, "remaining")));
	return 0;
}

/* Files the on-demand request; its id, or 0 (err set) when approvald said no. */
static uint64_t request(const struct p11g_keyid *k, const struct p11g_use_digest *d,
                        const char **ret_state, p11g_err *err)
{
	_cleanup_json_ json_t *req = NULL, *res = NULL;
	_cleanup_free_ char *uri = p11g_keyid_to_uri(k);
	char desc[256];
	json_int_t id;

	if (!uri) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		return 0;
	}
	/* The program's name as printable ASCII: approvald refuses text with control
	 * characters, and jansson text that is not UTF-8. */
	char prog[64];
	size_t pn = 0;
	for (const char *c = program_invocation_short_name; *c && pn < sizeof(prog) - 1; c++)
		prog[pn++] = (*c >= 0x20 && *c < 0x7f) ? *c : '?';
	prog[pn] = '\0';
	snprintf(desc, sizeof(desc), "on-demand signature by %s (pid %ld)", prog, (long)getpid());
	/* the pipeline's ID token, for a key whose rule asks who orders (read anew: tokens
	 * expire) */
	char *tok = NULL;
	const struct p11g_config *cfg = &p11g_m.cfg;
	if (cfg->id_token_github[0])
		tok = p11g_id_token_github(cfg->id_token_github, false, err);
	else if (cfg->id_token_file[0] || cfg->id_token_env[0])
		tok = p11g_id_token_load(cfg->id_token_file[0] ? cfg->id_token_file : NULL,
		                         cfg->id_token_file[0] ? NULL : cfg->id_token_env, err);
	if (!tok && (cfg->id_token_github[0] || cfg->id_token_file[0] || cfg->id_token_env[0]))
		return 0;
	req = json_pack("{s:s, s:[{s:s, s:i}], s:s, s:[s], s:s*}", "verb", "request", "keys", "uri",
	                uri, "uses", 1, "description", desc, "digests", d->text, "id_token", tok);
	p11g_id_token_free(tok);
	if (!req) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		return 0;
	}
	if (call(req, &res, CALL_TIMEOUT_MS, err) < 0)
		return 0;
	id = json_integer_value(json_object_get(res, "id"));
	if (id <= 0) {
		p11g_err_set(err, P11G_E_PROTOCOL, "approvald answered \"request\" without an id");
		return 0;
	}
	/* res dies here: hand back a constant, not its string. */
	const char *state = json_string_value(json_object_get(res, "state"));
	*ret_state = state && !strcmp(state, "approved") ? "approved" : "pending";
	return (uint64_t)id;
}

/* Waits until the operation is decided or the deadline passes. 0 when
 * approved; -1 with err saying why not. */
static int wait_for(uint64_t id, int64_t deadline_us, unsigned wait_s, p11g_err *err)
{
	for (;;) {
		_cleanup_json_ json_t *req = NULL, *res = NULL;
		int64_t left_us = deadline_us - p11g_mono_us();
		if (left_us <= 0)
			return p11g_err_set(err, P11G_E_PENDING,
			                    "operation %" PRIu64
			                    " was not approved within %u s; once it is, sign again "
			                    "(approvald approve %" PRIu64 ")",
			                    id, wait_s, id);
		int left_s = (int)((left_us + 999999) / 1000000);
		req = json_pack("{s:s, s:I, s:i}", "verb", "wait", "id", (json_int_t)id, "timeout",
		                left_s);
		if (!req)
			return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
		if (call(req, &res, left_s * 1000 + CALL_TIMEOUT_MS, err) < 0)
			return -1;
		json_t *op = json_object_get(res, "operation");
		const char *state = json_string_value(json_object_get(op, "state"));
		if (!state)
			return p11g_err_set(err, P11G_E_PROTOCOL,
			                    "approvald answered \"wait\" without a state");
		if (!strcmp(state, "approved"))
			return 0;
		if (!strcmp(state, "pending"))
			continue;
		if (!strcmp(state, "rejected")) {
			const char *reason = json_string_value(
			    json_object_get(json_object_get(op, "rejection"), "reason"));
			return p11g_err_set(err, P11G_E_REJECTED,
			                    "operation %" PRIu64 " was rejected%s%s", id,
			                    reason ? ": " : "", reason ? reason : "");
		}
		if (!strcmp(state, "expired"))
			return p11g_err_set(err, P11G_E_EXPIRED,
			                    "operation %" PRIu64 " expired before it was approved",
			                    id);
		if (!strcmp(state, "exhausted"))
			return p11g_err_set(err, P11G_E_EXHAUSTED,
			                    "operation %" PRIu64 " was used up by another signer",
			                    id);
		if (!strcmp(state, "revoked"))
			return p11g_err_set(err, P11G_E_REVOKED,
			                    "operation %" PRIu64 " was revoked", id);
		return p11g_err_set(err, P11G_E_PROTOCOL, "operation %" PRIu64 " is %s", id, state);
	}
}

int p11g_client_authorize(const struct p11g_keyid *k, const char *mech_name,
                          const struct p11g_use_digest *d, unsigned wait_s, p11g_err *err)
{
	p11g_err rerr = {0};
	const char *state = "pending";
	uint64_t id;
	int64_t deadline;

	if (use(k, mech_name, d, 0, err) == 0)
		return 0;
	/* approvald names the newest ended operation when there is one
	 * (exhausted, expired, revoked) and no_operation only when there never
	 * was one; each means "request a new one".  A pending or rejected
	 * operation is a person's business, not ours to work around. */
	if (wait_s == 0 || !(code_is(err, P11G_E_NO_OPERATION) || code_is(err, P11G_E_EXHAUSTED) ||
	                     code_is(err, P11G_E_EXPIRED) || code_is(err, P11G_E_REVOKED)))
		return -1;
	deadline = p11g_mono_us() + (int64_t)wait_s * 1000000;
	id = request(k, d, &state, &rerr);
	if (id == 0) {
		/* The refusal of the use is what the signer can act on; why the
		 * request failed (not an orderer, say) only in the debug log. */
		p11g_debug("on-demand request not filed (%s): %s", rerr.code, rerr.msg);
		/* but a pipeline's token that was missing or refused is the signer's to mend,
		 * and so is a quota (pending requests, requests a minute, a rule's ceilings); a
		 * request that never got an answer (approvald down or stalled, its store or
		 * audit failing, a reply not understood) is the operator's: said, so that the
		 * refusal of the use that follows is not read as the whole story */
		bool refused = code_is(&rerr, P11G_E_TOKEN_REQUIRED) ||
		               code_is(&rerr, P11G_E_TOKEN_INVALID) ||
		               code_is(&rerr, P11G_E_CLAIMS_MISMATCH) ||
		               code_is(&rerr, P11G_E_BAD_REQUEST) || code_is(&rerr, P11G_E_LIMIT);
		bool failed = code_is(&rerr, P11G_E_UNAVAILABLE) ||
		              code_is(&rerr, P11G_E_TIMEOUT) || code_is(&rerr, P11G_E_PROTOCOL) ||
		              code_is(&rerr, P11G_E_INTERNAL) || code_is(&rerr, P11G_E_STORE) ||
		              code_is(&rerr, P11G_E_AUDIT_BROKEN);
		if (refused || failed) {
			char *msg =
			    p11g_text_escaped(rerr.msg, strnlen(rerr.msg, sizeof(rerr.msg)));
			fprintf(stderr, "p11gate: on-demand request %s: %s (%s)\n",
			        refused ? "refused" : "failed", msg ? msg : "?", rerr.code);
			free(msg);
		}
		return -1;
	}
	if (strcmp(state, "approved")) {
		char line[160];
		snprintf(line, sizeof(line),
		         "p11gate: waiting up to %u s for approval of operation %" PRIu64
		         ": approvald approve %" PRIu64 "\n",
		         wait_s, id, id);
		fputs(line, stderr);
		if (wait_for(id, deadline, wait_s, err) < 0)
			return -1;
	}
	return use(k, mech_name, d, id, err);
}
