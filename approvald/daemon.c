/* approvald serve: configuration file, policy (re)loading, expiry ticks, and the server loop. */
#include <inttypes.h>
#include <p11-kit/uri.h>
#include <pwd.h>
#include <sys/stat.h>
#include <syslog.h>

#include "approvald/daemon.h"

#include "approvald/audit_state.h"
#include "approvald/checkpoint.h"
#include "approvald/read_worker.h"
#include "approvald/sdnotify.h"
#include "approvald/verify_job.h"
#include "approvald/policy_load.h"
#include "p11gate/kvconf.h"
#include "p11gate/log.h"
#include "p11gate/wire.h"

void p11g_daemon_config_init(struct p11g_daemon_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->state_dir = strdup(P11G_DEFAULT_STATE_DIR);
	cfg->socket_path = strdup(P11G_DEFAULT_SOCKET);
	cfg->policy_dir = strdup(P11G_DEFAULT_POLICY_DIR);
	cfg->durability = P11G_DURABLE_FULL;
	cfg->server.socket_mode = 0666;
	cfg->server.max_conns = 1024;
	cfg->server.max_conns_per_uid = 64;
	cfg->server.idle_timeout_ms = 60000;
	cfg->server.frame_timeout_ms = 10000;
	cfg->limits.max_pending_per_user = 100;
	cfg->limits.max_requests_per_minute = 120;
	cfg->limits.max_request_bytes_per_minute = 4 << 20;
	cfg->limits.default_validity = 3600;
	cfg->host.socket_mode = 0666;
	cfg->host.message_max = 16 * 1024 * 1024;
	cfg->checkpoint_records = 1000;
	cfg->checkpoint_seconds = 300;
}

void p11g_daemon_config_clear(struct p11g_daemon_config *cfg)
{
	free(cfg->state_dir);
	free(cfg->socket_path);
	free(cfg->policy_dir);
	free(cfg->audit_key_file);
	free(cfg->audit_key);
	p11g_host_config_clear(&cfg->host);
	p11g_web_config_clear(&cfg->web);
	p11g_notify_config_clear(&cfg->notify);
	memset(cfg, 0, sizeof(*cfg));
}

void p11g_host_config_clear(struct p11g_host_config *cfg)
{
	for (size_t i = 0; i < cfg->object_admins.n; i++)
		p11g_principal_clear(&cfg->object_admins.v[i]);
	free(cfg->object_admins.v);
	free(cfg->socket);
	free(cfg->module);
	free(cfg->pin_file);
	free(cfg->token);
	free(cfg->user);
	for (size_t i = 0; i < cfg->n_env; i++)
		free(cfg->env[i]);
	memset(cfg, 0, sizeof(*cfg));
}

static int set_string(char **slot, const char *v)
{
	char *s = strdup(v);
	if (!s)
		return -1;
	free(*slot);
	*slot = s;
	return 0;
}

static bool parse_u(const char *v, unsigned long long max, unsigned long long *ret)
{
	char *end;
	errno = 0;
	if (!*v || *v == '-')
		return false;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno || *end || n > max)
		return false;
	*ret = n;
	return true;
}

/* What config_set says of a key it does not know, and of memory that ran out: the one is
 * placed at the key, the other is no fault of the file. */
static const char unknown_setting[] = "unknown setting";
static const char out_of_memory[] = "out of memory";

/* pkcs11_object_admins: principals separated by blanks or commas, added to
 * those of earlier lines.  false with why naming a bad one. */
static bool object_admins_add(struct p11g_principals *ps, const char *val, const char **why)
{
	static char msg[sizeof(((p11g_err *)0)->msg)];
	bool any = false;

	*why = "expected principals such as user:NAME group:NAME uid:N";
	for (const char *p = val; *p;) {
		size_t n = strcspn(p, " \t,");
		if (n == 0) {
			p++;
			continue;
		}
		_cleanup_free_ char *tok = strndup(p, n);
		struct p11g_principal pr;
		p11g_err err = {0};
		p += n;
		if (!tok) {
			*why = out_of_memory;
			return false;
		}
		if (p11g_principal_parse(tok, &pr, &err) < 0) {
			snprintf(msg, sizeof(msg), "%s", err.msg);
			*why = msg;
			return false;
		}
		struct p11g_principal *v = realloc(ps->v, (ps->n + 1) * sizeof(*v));
		if (!v) {
			p11g_principal_clear(&pr);
			*why = out_of_memory;
			return false;
		}
		ps->v = v;
		ps->v[ps->n++] = pr;
		any = true;
	}
	return any;
}

/* pkcs11_user: a user that exists now (its uid and group are kept). */
static bool host_user_set(struct p11g_host_config *h, const char *val, const char **why)
{
	struct passwd pw, *res = NULL;
	char buf[4096];
	static char msg[160];

	if (getpwnam_r(val, &pw, buf, sizeof(buf), &res) != 0 || !res) {
		snprintf(msg, sizeof(msg), "no user \"%.64s\"", val);
		*why = msg;
		return false;
	}
	if (set_string(&h->user, val) < 0) {
		*why = out_of_memory;
		return false;
	}
	h->user_uid = pw.pw_uid;
	h->user_gid = pw.pw_gid;
	return true;
}

/* audit_key: a PKCS#11 URI naming one private key (object= or id=; type=private if any), with
 * no PIN in it (pin_file's is used). */
static bool audit_key_uri_ok(const char *val, const char **why)
{
	P11KitUri *u = p11_kit_uri_new();
	CK_ULONG n = 0;
	bool named = false, ok = false;

	*why = "expected a PKCS#11 URI of a private key, such as "
	       "pkcs11:token=NAME;object=LABEL;type=private";
	if (!u) {
		*why = out_of_memory;
		return false;
	}
	if (strncmp(val, "pkcs11:", 7) ||
	    p11_kit_uri_parse(val, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, u) != P11_KIT_URI_OK)
		goto out;
	CK_ATTRIBUTE *a = p11_kit_uri_get_attributes(u, &n);
	for (CK_ULONG i = 0; i < n; i++) {
		if (a[i].type == CKA_LABEL || a[i].type == CKA_ID)
			named = true;
		if (a[i].type == CKA_CLASS &&
		    (a[i].ulValueLen != sizeof(CK_OBJECT_CLASS) ||
		     *(CK_OBJECT_CLASS *)a[i].pValue != CKO_PRIVATE_KEY)) {
			*why = "the audit key is a private key: type=private, or no type";
			goto out;
		}
	}
	if (!named) {
		*why = "the URI must name the key: object=LABEL and/or id=%XX...";
		goto out;
	}
	if (p11_kit_uri_get_pin_value(u) || p11_kit_uri_get_pin_source(u)) {
		*why = "no PIN in the URI: approvald logs in with pin_file's";
		goto out;
	}
	ok = true;
out:
	p11_kit_uri_free(u);
	return ok;
}

/* One setting; false with a message for an unknown key (unknown_setting) or a bad value. */
static bool config_set(struct p11g_daemon_config *cfg, const char *key, const char *val,
                       const char **why)
{
	unsigned long long n;
	int64_t d;
	*why = "bad value";
	if (!strcmp(key, "state_dir"))
		return set_string(&cfg->state_dir, val) == 0;
	if (!strcmp(key, "socket"))
		return set_string(&cfg->socket_path, val) == 0;
	if (!strcmp(key, "policy_dir"))
		return set_string(&cfg->policy_dir, val) == 0;
	if (!strcmp(key, "durability")) {
		*why = "durability is full or process";
		if (!strcmp(val, "full"))
			cfg->durability = P11G_DURABLE_FULL;
		else if (!strcmp(val, "process"))
			cfg->durability = P11G_DURABLE_PROCESS;
		else
			return false;
		return true;
	}
	if (!strcmp(key, "socket_mode") || !strcmp(key, "pkcs11_socket_mode")) {
		char *end;
		long m = strtol(val, &end, 8);
		*why = "expected an octal mode such as 0666";
		if (!*val || *end || m < 0 || m > 0777)
			return false;
		if (key[0] == 's')
			cfg->server.socket_mode = (mode_t)m;
		else
			cfg->host.socket_mode = (mode_t)m;
		return true;
	}
	if (!strcmp(key, "pkcs11_socket"))
		return set_string(&cfg->host.socket, val) == 0;
	if (!strcmp(key, "web_socket")) {
		*why = "expected an absolute path";
		return val[0] == '/' && set_string(&cfg->web.socket, val) == 0;
	}
	if (!strcmp(key, "web_url")) {
		/* where people open the approvals page: links in notifications */
		*why = "expected an http:// or https:// URL without a trailing slash";
		size_t len = strlen(val);
		if ((strncmp(val, "https://", 8) && strncmp(val, "http://", 7)) || len > 2000 ||
		    val[len - 1] == '/' || strpbrk(val, " \t\"<>"))
			return false;
		return set_string(&cfg->notify.web_url, val) == 0;
	}
	if (!strcmp(key, "notify_retry_for")) {
		*why = "expected a duration from 1m to 7d";
		if ((d = p11g_duration_parse(val)) < 60 || d > 7 * 86400)
			return false;
		cfg->notify.retry_for = d;
		return true;
	}
	if (!strcmp(key, "notify_outbox_max")) {
		*why = "expected a number from 100 to 1000000";
		if (!parse_u(val, 1000000, &n) || n < 100)
			return false;
		cfg->notify.outbox_max = (unsigned)n;
		return true;
	}
	if (!strcmp(key, "web_proxy_user"))
		return set_string(&cfg->web.proxy_user, val) == 0;
	if (!strcmp(key, "web_user_header")) {
		/* an HTTP header name (a token), which the proxy sets after its authentication */
		*why = "expected an HTTP header name such as X-Remote-User";
		if (!*val || strlen(val) > 64 ||
		    strspn(val, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		                "abcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(val))
			return false;
		return set_string(&cfg->web.user_header, val) == 0;
	}
	if (!strcmp(key, "pkcs11_module"))
		return set_string(&cfg->host.module, val) == 0;
	if (!strcmp(key, "pin_file"))
		return set_string(&cfg->host.pin_file, val) == 0;
	if (!strcmp(key, "pkcs11_token")) {
		*why = "a token label is at most 32 bytes";
		return strlen(val) <= 32 && set_string(&cfg->host.token, val) == 0;
	}
	if (!strcmp(key, "pkcs11_wait")) {
		*why = "expected seconds, 0 to 86400";
		if (!parse_u(val, 86400, &n))
			return false;
		cfg->host.wait = (unsigned)n;
		return true;
	}
	if (!strcmp(key, "max_map_size")) {
		/* the store's ceiling: at it, new records are refused (store_error) */
		*why = "expected bytes, at least 1048576";
		if (!parse_u(val, 1ULL << 46, &n) || n < (1 << 20))
			return false;
		cfg->max_map_size = n;
		return true;
	}
	if (!strcmp(key, "pkcs11_message_max")) {
		*why = "expected bytes, 4096 to 1073741824";
		if (!parse_u(val, 1073741824, &n) || n < 4096)
			return false;
		cfg->host.message_max = (size_t)n;
		return true;
	}
	if (!strcmp(key, "audit_key_file") || !strcmp(key, "audit_key")) {
		bool file = !strcmp(key, "audit_key_file");
		*why = file
		           ? "audit_key is set too: checkpoints are signed by one key, a file "
		             "(audit_key_file) or a key on a token (audit_key)"
		           : "audit_key_file is set too: checkpoints are signed by one key, a file "
		             "(audit_key_file) or a key on a token (audit_key)";
		if (file ? cfg->audit_key != NULL : cfg->audit_key_file != NULL)
			return false;
		if (!file && !audit_key_uri_ok(val, why))
			return false;
		return set_string(file ? &cfg->audit_key_file : &cfg->audit_key, val) == 0;
	}
	if (!strcmp(key, "audit_checkpoint_records")) {
		*why = "expected a count, 1 to 10000000";
		if (!parse_u(val, 10000000, &n) || n < 1)
			return false;
		cfg->checkpoint_records = (unsigned)n;
		return true;
	}
	if (!strcmp(key, "audit_checkpoint_seconds")) {
		*why = "expected seconds, 1 to 86400";
		if (!parse_u(val, 86400, &n) || n < 1)
			return false;
		cfg->checkpoint_seconds = (unsigned)n;
		return true;
	}
	if (!strcmp(key, "pkcs11_user"))
		return host_user_set(&cfg->host, val, why);
	if (!strcmp(key, "pkcs11_seccomp")) {
		*why = "pkcs11_seccomp is kill, log or off";
		if (!strcmp(val, "kill"))
			cfg->host.seccomp = P11G_SECCOMP_KILL;
		else if (!strcmp(val, "log"))
			cfg->host.seccomp = P11G_SECCOMP_LOG;
		else if (!strcmp(val, "off"))
			cfg->host.seccomp = P11G_SECCOMP_OFF;
		else
			return false;
		return true;
	}
	if (!strcmp(key, "pkcs11_object_admins"))
		return object_admins_add(&cfg->host.object_admins, val, why);
	if (!strcmp(key, "pkcs11_env")) {
		const char *eq = strchr(val, '=');
		*why = "expected NAME=VALUE (at most 16 of them)";
		if (!eq || eq == val || cfg->host.n_env == P11G_HOST_ENV_MAX)
			return false;
		if (!(cfg->host.env[cfg->host.n_env] = strdup(val)))
			return false;
		cfg->host.n_env++;
		return true;
	}
	static const struct {
		const char *key;
		unsigned long long max;
	} nums[] = {{"max_connections", 100000},
	            {"max_connections_per_uid", 100000},
	            {"max_pending_per_user", 1000000},
	            {"max_requests_per_minute", 1000000},
	            {"max_request_bytes_per_minute", 1ull << 40}};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(nums); i++) {
		if (strcmp(key, nums[i].key))
			continue;
		*why = "expected a positive number";
		if (!parse_u(val, nums[i].max, &n) || n == 0)
			return false;
		if (i == 0)
			cfg->server.max_conns = (unsigned)n;
		else if (i == 1)
			cfg->server.max_conns_per_uid = (unsigned)n;
		else if (i == 2)
			cfg->limits.max_pending_per_user = (unsigned)n;
		else if (i == 3)
			cfg->limits.max_requests_per_minute = (unsigned)n;
		else
			cfg->limits.max_request_bytes_per_minute = (size_t)n;
		return true;
	}
	if (!strcmp(key, "jwks_refetch")) {
		*why = "expected a duration from 1s to 1h";
		if ((d = p11g_duration_parse(val)) <= 0 || d > 3600)
			return false;
		cfg->jwks_refetch = (unsigned)d;
		return true;
	}
	if (!strcmp(key, "idle_timeout") || !strcmp(key, "frame_timeout") ||
	    !strcmp(key, "default_validity")) {
		*why = "expected a duration such as 90s, 15m, 24h";
		if ((d = p11g_duration_parse(val)) <= 0)
			return false;
		if (!strcmp(key, "default_validity"))
			cfg->limits.default_validity = d;
		else if (d > 86400)
			return false;
		else if (!strcmp(key, "idle_timeout"))
			cfg->server.idle_timeout_ms = (int)(d * 1000);
		else
			cfg->server.frame_timeout_ms = (int)(d * 1000);
		return true;
	}
	*why = unknown_setting;
	return false;
}

int p11g_daemon_config_load(const char *path, struct p11g_daemon_config *cfg, p11g_err *err)
{
	FILE *f = fopen(path, "re");
	_cleanup_free_ char *line = NULL;
	size_t size = 0;
	ssize_t n;
	unsigned lineno = 0, key_line = 0, key_column = 0;
	int rc = 0;

	if (!f)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "%s: %s", path, strerror(errno));
	while (rc == 0 && (n = getline(&line, &size, f)) >= 0) {
		struct p11g_kv kv;
		lineno++;
		if (n > 0 && line[n - 1] == '\n')
			n--;
		int r = p11g_kv_parse_line(line, (size_t)n, P11G_KV_COMMENT_ANYWHERE, &kv);
		if (r == 0)
			continue;
		if (r < 0) {
			rc = p11g_err_set_at(err, P11G_E_BAD_REQUEST, path, lineno, kv.column, "%s",
			                     kv.error);
			break;
		}
		_cleanup_free_ char *key = strndup(kv.key, kv.key_len);
		_cleanup_free_ char *val = strndup(kv.value, kv.value_len);
		const char *why = out_of_memory;
		if (!key || !val || !config_set(cfg, key, val, &why))
			rc = p11g_err_set_at(
			    err, why == out_of_memory ? P11G_E_INTERNAL : P11G_E_BAD_REQUEST, path,
			    lineno, why == unknown_setting ? kv.column : kv.value_column, "%s: %s",
			    key ? key : "", why);
		else if (!strcmp(key, "audit_key"))
			key_line = lineno, key_column = kv.value_column;
	}
	fclose(f);
	/* approvald logs in to the token itself, with or without pkcs11_socket */
	if (rc == 0 && key_line && (!cfg->host.module || !cfg->host.pin_file))
		rc = p11g_err_set_at(err, P11G_E_BAD_REQUEST, path, key_line, key_column,
		                     "audit_key: needs pkcs11_module and pin_file (the token's "
		                     "module and the PIN approvald logs in with)");
	return rc;
}

/* ---- running ------------------------------------------------------------ */

static void on_changed(void *arg, uint64_t id)
{
	struct p11g_daemon *d = arg;
	if (d->server)
		p11g_server_wake(d->server, id);
}

static int sign_on_token(void *arg, const char *text, unsigned char **sig, size_t *sig_len,
                         p11g_err *err)
{
	struct p11g_daemon *d = arg;
	return d->audit_signer->audit_sign(&d->cfg.host, d->cfg.audit_key, text, sig, sig_len, err);
}

/* The audit key on a token: its public key now (a wrong URI, PIN or module stops approvald
 * here), its signatures at each checkpoint.  -1 after one error line. */
static int audit_key_token(struct p11g_daemon *d, const struct p11g_host_ops *host)
{
	p11g_err err = {0};
	unsigned char *der = NULL;
	size_t len = 0;
	char id[80];

	if (!host) {
		p11g_error("audit_key is set, but this binary cannot use PKCS#11");
		return -1;
	}
	if (host->audit_pubkey(&d->cfg.host, d->cfg.audit_key, &der, &len, &err) < 0) {
		p11g_error("%s", err.msg);
		return -1;
	}
	d->audit_key = p11g_checkpoint_pubkey_der(der, len);
	free(der);
	if (!d->audit_key || p11g_checkpoint_key_id(d->audit_key, id) < 0) {
		p11g_error("audit_key %s: the token's public key is not one approvald can verify "
		           "with",
		           d->cfg.audit_key);
		return -1;
	}
	/* and that the key signs, and the public key found is its own */
	d->audit_signer = host;
	if (p11g_checkpoint_probe(d->audit_key, sign_on_token, d, &err) < 0) {
		p11g_error("%s", err.msg);
		return -1;
	}
	p11g_info("audit checkpoints signed on the token by %s (%s)", d->cfg.audit_key, id);
	return 0;
}

/* A failed signing: nothing appended; the next try waits 1, 2, 4 ... s, at most
 * audit_checkpoint_seconds (a token that is down costs a try now and then, not one a tick). */
static void checkpoint_failed(struct p11g_daemon *d, const p11g_err *err)
{
	int64_t cap = (int64_t)d->cfg.checkpoint_seconds * 1000000;
	d->checkpoint_backoff_us =
	    d->checkpoint_backoff_us ? 2 * d->checkpoint_backoff_us : 1000000;
	if (d->checkpoint_backoff_us > cap)
		d->checkpoint_backoff_us = cap;
	d->checkpoint_retry_us = p11g_mono_us() + d->checkpoint_backoff_us;
	p11g_error("audit checkpoint: %s (next try in %lld s)", err->msg,
	           (long long)(d->checkpoint_backoff_us / 1000000));
}

static void checkpoint_done(struct p11g_daemon *d, uint64_t through, uint64_t head)
{
	d->checkpoint_backoff_us = 0;
	d->checkpoint_seq = through ? through : head;
	d->checkpoint_time = p11g_mono_us();
}

static void close_in_child(void *arg)
{
	struct p11g_daemon *d = arg;
	if (d->server)
		p11g_server_close_in_child(d->server);
}

/* A checkpoint when force, or when enough records or time passed since the last.  With the
 * key on a token, one in the loop is signed in a child (checkpoint_job.h) and appended when it
 * ends; forced (at start and stop) it is signed here, and one under way is given up. */
static void checkpoint(struct p11g_daemon *d, bool force)
{
	p11g_err err = {0};
	uint64_t head = 0, through = 0;
	if (!d->audit_key)
		return;
	if (!force && d->checkpoint_job.pid) {
		if (p11g_mono_us() - d->checkpoint_job.started_us < P11G_CHECKPOINT_JOB_MAX_US)
			return;
		p11g_checkpoint_job_cancel(&d->checkpoint_job);
		p11g_err_set(&err, P11G_E_TIMEOUT,
		             "the process signing the checkpoint did not end within %lld s; killed",
		             P11G_CHECKPOINT_JOB_MAX_US / 1000000);
		checkpoint_failed(d, &err);
		return;
	}
	if (p11g_checkpoint_head(d->ops.store, &head, &err) < 0) {
		p11g_error("audit checkpoint: %s", err.msg);
		return;
	}
	int64_t now = p11g_mono_us();
	bool due = head > d->checkpoint_seq &&
	           (force || head - d->checkpoint_seq >= d->cfg.checkpoint_records ||
	            now - d->checkpoint_time >= (int64_t)d->cfg.checkpoint_seconds * 1000000);
	if (!due || (!force && now < d->checkpoint_retry_us))
		return;
	if (d->audit_signer && !force) {
		int r = p11g_checkpoint_job_start(d->ops.store, sign_on_token, d, close_in_child, d,
		                                  &d->checkpoint_job, &err);
		if (r < 0)
			checkpoint_failed(d, &err);
		else if (r == 0)
			checkpoint_done(d, 0, head);
		return;
	}
	p11g_checkpoint_job_cancel(&d->checkpoint_job);
	if (p11g_checkpoint_write(d->ops.store, d->audit_key,
	                          d->audit_signer ? sign_on_token : NULL, d, &through, &err) < 0) {
		checkpoint_failed(d, &err);
		return;
	}
	checkpoint_done(d, through, head);
}

static void on_tick(void *app)
{
	struct p11g_daemon *d = app;
	p11g_err err = {0};
	if (p11g_ops_expire_due(&d->ops, &err) < 0)
		p11g_error("expiry sweep failed: %s", err.msg);
	checkpoint(d, false);
	p11g_jwks_sources_tick(&d->jwks);
	p11g_web_tick(&d->web);
	if (++d->ticks % 10 == 0 && p11g_notify_expiring(&d->ops, &err) < 0)
		p11g_error("notifications of expiring operations: %s", err.msg);
	p11g_notify_sender_tick(&d->notify);
	if (p11g_notify_added(&d->ops))
		p11g_server_wake(d->server, P11G_NOTIFY_WAKE);
}

/* Group commit: the writes of one poll round (uses of many signers, say)
 * share one durable commit; their replies wait for it (server.c). */
static void on_round_begin(void *app)
{
	struct p11g_daemon *d = app;
	p11g_store_batch_begin(d->ops.store);
}

static int on_round_end(void *app, p11g_err *err)
{
	struct p11g_daemon *d = app;
	if (p11g_store_batch_end(d->ops.store, err) < 0) {
		p11g_error("%s; the requests of this round were answered with this error",
		           err->msg);
		p11g_notify_added(&d->ops); /* those were not committed */
		return -1;
	}
	/* the sender hears of what this round committed */
	if (p11g_notify_added(&d->ops))
		p11g_server_wake(d->server, P11G_NOTIFY_WAKE);
	return 0;
}

static void on_child_exited(void *app, pid_t pid, int status)
{
	struct p11g_daemon *d = app;
	/* audit --verify's walk, or one of the host's clients */
	if (p11g_verify_job_exited(&d->ops, pid, status) ||
	    p11g_read_worker_exited(&d->ops, pid, status) ||
	    p11g_jwks_sources_exited(&d->jwks, pid, status) ||
	    p11g_web_exited(&d->web, pid, status) ||
	    p11g_notify_sender_exited(&d->notify, pid, status))
		return;
	if (d->checkpoint_job.pid && pid == d->checkpoint_job.pid) {
		p11g_err err = {0};
		uint64_t through = 0;
		if (p11g_checkpoint_job_finish(d->ops.store, d->audit_key, &d->checkpoint_job,
		                               status, &through, &err) < 0)
			checkpoint_failed(d, &err);
		else
			checkpoint_done(d, through, d->checkpoint_seq);
		return;
	}
	if (d->host)
		d->host->child_exited(pid, status);
}

static int on_app_fd(void *app)
{
	struct p11g_daemon *d = app;
	return p11g_read_worker_fd(&d->ops);
}

static void on_app_ready(void *app)
{
	struct p11g_daemon *d = app;
	p11g_read_worker_ready(&d->ops);
}

static void on_parked_gone(void *app, uint64_t wake_id)
{
	struct p11g_daemon *d = app;
	p11g_read_job_cancel(&d->ops, wake_id);
}

static void reload_policy(struct p11g_daemon *d);

/* SIGHUP: the policy again, told to systemd as a reload (Type=notify-reload, systemd 253 and
 * later, waits for READY=1; with 252's Type=notify it is shown in the unit's state) */
static void on_reload(void *app)
{
	char reloading[64];
	snprintf(reloading, sizeof(reloading), "RELOADING=1\nMONOTONIC_USEC=%" PRId64,
	         p11g_mono_us());
	p11g_sd_notify(reloading);
	reload_policy(app);
	p11g_sd_notify("READY=1");
}

static void reload_policy(struct p11g_daemon *d)
{
	struct p11g_policy *p = NULL;
	p11g_err err = {0};

	if (p11g_policy_load(d->cfg.policy_dir, &p, &err) < 0) {
		p11g_error("policy reload refused, previous policy stays in force: %s", err.msg);
		return;
	}
	if (!strcmp(p->digest, d->ops.policy->digest)) {
		p11g_info("policy unchanged (%s)", p->digest);
		p11g_policy_free(p);
		return;
	}
	p11g_policy_free(d->ops.policy);
	d->ops.policy = p;
	p11g_info("policy reloaded: %zu rules from %zu files", p->n_rules, p->n_files);
	p11g_jwks_sources_sync(&d->jwks, p);
	if (p11g_ops_policy_loaded(&d->ops, d->cfg.policy_dir, &err) < 0)
		p11g_error("could not audit the policy load: %s", err.msg);
}

int p11g_daemon_run(const struct p11g_daemon_config *cfg, const struct p11g_host_ops *host)
{
	/* No host unless the PKCS#11 socket asks for one: the host's state (the PIN) then
	 * never exists. */
	struct p11g_daemon d = {
	    .cfg = *cfg, .host = cfg->host.socket ? host : NULL, .checkpoint_job = {.fd = -1}};
	struct p11g_store_options so = {.durability = cfg->durability,
	                                .max_map_size = cfg->max_map_size};
	p11g_err err = {0};
	int rc = 1;

	p11g_log_ident = "approvald";
	d.cfg.server.socket_path = cfg->socket_path;
	d.ops.daemon_uid = geteuid();
	d.ops.limits = cfg->limits;
	d.ops.changed = on_changed;
	d.ops.changed_arg = &d;
	d.ops.jwks = &d.jwks;
	d.jwks.gap_s = cfg->jwks_refetch ? cfg->jwks_refetch : P11G_JWKS_WANT_GAP_S;

	if (p11g_policy_load(cfg->policy_dir, &d.ops.policy, &err) < 0) {
		p11g_error(
		    "%s%s",
		    strcmp(err.code, P11G_E_INTERNAL) ? "" : "cannot load the policy: ", err.msg);
		return 1;
	}
	if (p11g_store_open(cfg->state_dir, &so, &d.ops.store, &err) < 0) {
		p11g_error("%s", err.msg);
		goto out;
	}
	if (p11g_ops_policy_loaded(&d.ops, cfg->policy_dir, &err) < 0) {
		p11g_error("%s", err.msg);
		goto out;
	}
	if (cfg->audit_key_file) {
		if (!(d.audit_key = p11g_checkpoint_key_load(cfg->audit_key_file, &err))) {
			p11g_error("%s", err.msg);
			goto out;
		}
		openlog("approvald", LOG_PID, LOG_AUTHPRIV);
	} else if (cfg->audit_key) {
		if (audit_key_token(&d, host) < 0)
			goto out;
		if (p11g_keyuri_parse(cfg->audit_key, &d.ops.audit_key, &err) < 0) {
			p11g_error("audit_key: %s", err.msg);
			goto out;
		}
		openlog("approvald", LOG_PID, LOG_AUTHPRIV);
	}
	size_t recorded = 0;
	if (p11g_ops_record_states(&d.ops, &recorded, &err) < 0) {
		p11g_error("cannot record the state of the active operations: %s", err.msg);
		goto out;
	}
	if (recorded)
		p11g_info("recorded the state of %zu active operations in the audit log", recorded);
	if (cfg->host.socket && !host) {
		p11g_error("pkcs11_socket is set, but this binary cannot host PKCS#11");
		goto out;
	}
	if (d.host && d.host->prepare(&d.cfg.host, &err) < 0) {
		p11g_error("%s", err.msg);
		goto out;
	}
	struct p11g_server_ops sops = {
	    .handlers = p11g_handlers,
	    .n_handlers = p11g_n_handlers,
	    .tick = on_tick,
	    .reload = on_reload,
	    .child_exited = on_child_exited,
	    .app_fd = on_app_fd,
	    .app_ready = on_app_ready,
	    .parked_gone = on_parked_gone,
	    .round_begin = on_round_begin,
	    .round_end = on_round_end,
	};
	if (p11g_server_new(&d.cfg.server, &sops, &d, &d.server, &err) < 0) {
		p11g_error("%s", err.msg);
		goto out;
	}
	d.cfg.host.frame_ms = d.cfg.server.frame_timeout_ms;
	if (d.host && d.host->listen(&d.cfg.host, d.server, &err) < 0) {
		p11g_error("%s", err.msg);
		goto out;
	}
	p11g_info("serving on %s (state %s, policy %s: %zu rules)", cfg->socket_path,
	          cfg->state_dir, cfg->policy_dir, d.ops.policy->n_rules);
	if (d.host)
		p11g_info("serving PKCS#11 (%s, logged in with %s) on %s", cfg->host.module,
		          cfg->host.pin_file, cfg->host.socket);
	if (p11g_web_start(&d.web, &d.cfg.web, d.server, &err) < 0) {
		p11g_error("%s", err.msg);
		goto out;
	}
	if (p11g_notify_setup(&d.ops, &cfg->notify) < 0) {
		p11g_error("out of memory");
		goto out;
	}
	p11g_ops_notify_enable(&d.ops);
	d.notify.server = d.server;
	d.notify.ops = &d.ops;
	p11g_notify_sender_tick(&d.notify);
	checkpoint(&d, true);
	if (host && (d.host || cfg->audit_key))
		d.ops.forget_secrets = host->forget;
	p11g_read_worker_start(&d.ops);
	p11g_jwks_sources_sync(&d.jwks, d.ops.policy);
	/* every socket listens and the store is open: systemd may start what depends on us */
	char ready[600];
	snprintf(ready, sizeof(ready), "READY=1\nSTATUS=serving on %s: %zu rules", cfg->socket_path,
	         d.ops.policy->n_rules);
	p11g_sd_notify(ready);
	rc = p11g_server_run(d.server) == 0 ? 0 : 1;
	p11g_sd_notify("STOPPING=1");
	p11g_info("stopped");
out:
	p11g_web_stop(&d.web);
	p11g_notify_sender_stop(&d.notify);
	if (d.server)
		p11g_server_free(d.server);
	/* The refusals counted in the last minute are written, not dropped. */
	if (d.ops.store && p11g_ops_flush_refusals(&d.ops, true, &err) < 0)
		p11g_error("writing the counts of refused uses failed: %s", err.msg);
	/* the last records are signed before approvald goes (a key on a token: while the
	 * PIN is still held) */
	if (d.ops.store && d.server)
		checkpoint(&d, true);
	if (host && (d.host || cfg->audit_key))
		host->end();
	EVP_PKEY_free(d.audit_key);
	p11g_jwks_sources_free(&d.jwks);
	if (d.ops.store)
		p11g_store_close(d.ops.store);
	p11g_ops_clear(&d.ops);
	p11g_policy_free(d.ops.policy);
	return rc;
}
