/* The module's configuration: P11GATE_CONF's `key = value` lines and the P11GATE_* overrides. */
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>

#include "module/gate_host.h"
#include "module/module.h"
#include "p11gate/kvconf.h"
#include "p11gate/wire.h"

#define CONF_MAX (64 * 1024) /* a configuration is a few lines */

/* Copies [s, s+n) as a C string; false when it does not fit or holds a NUL. */
static bool set_string(char *dst, size_t dstsize, const char *s, size_t n)
{
	if (n >= dstsize || memchr(s, '\0', n))
		return false;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return true;
}

/* Decimal seconds 0..P11G_WAIT_MAX, digits only (no sign, no spaces). */
static bool parse_wait(const char *s, size_t n, unsigned *ret)
{
	unsigned long v = 0;

	if (n == 0 || n > 6)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > P11G_WAIT_MAX)
		return false;
	*ret = (unsigned)v;
	return true;
}

struct p11g_approvald_user p11g_config_approvald_user;

/* approvald_user: a user name (looked up now) or a uid, digits only. */
static bool parse_user(const char *s, size_t n, uid_t *ret, char *why, size_t whysize)
{
	char name[256], buf[4096];
	struct passwd pw, *found = NULL;
	unsigned long long v = 0;
	size_t i;

	for (i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		v = v * 10 + (unsigned long long)(s[i] - '0');
	if (i == n && n <= 10 && v < (uid_t)-1) {
		*ret = (uid_t)v;
		return true;
	}
	if (!set_string(name, sizeof(name), s, n)) {
		snprintf(why, whysize, "approvald_user is a user name or a uid");
		return false;
	}
	int e = getpwnam_r(name, &pw, buf, sizeof(buf), &found);
	if (e != 0 || !found) {
		snprintf(why, whysize, "approvald_user \"%s\": no such user%s%s", name,
		         e ? ": " : "", e ? strerror(e) : "");
		return false;
	}
	*ret = pw.pw_uid;
	return true;
}

/* bit per setting, for "given twice" */
enum {
	SEEN_MODULE = 1,
	SEEN_SOCKET = 2,
	SEEN_WAIT = 4,
	SEEN_REMOTE = 8,
	SEEN_USER = 16,
	SEEN_TOKEN_FILE = 32,
	SEEN_TOKEN_ENV = 64,
	SEEN_TOKEN_GITHUB = 128,
};

/* kv read from where (a file, or an environment variable with kv->line 0): a
 * message about its key or its value names that column. */
#define KEY_FAIL(...)                                                                              \
	p11g_err_set_at(err, P11G_E_BAD_REQUEST, where, kv->line, kv->column, __VA_ARGS__)
#define VALUE_FAIL(...)                                                                            \
	p11g_err_set_at(err, P11G_E_BAD_REQUEST, where, kv->line, kv->value_column, __VA_ARGS__)

static int set_value(struct p11g_config *cfg, const struct p11g_kv *kv, unsigned *seen,
                     const char *where, p11g_err *err)
{
	const char *key = kv->key, *val = kv->value;
	size_t klen = kv->key_len, vlen = kv->value_len;
	unsigned bit;

	if (klen == 6 && !memcmp(key, "module", 6))
		bit = SEEN_MODULE;
	else if (klen == 6 && !memcmp(key, "socket", 6))
		bit = SEEN_SOCKET;
	else if (klen == 4 && !memcmp(key, "wait", 4))
		bit = SEEN_WAIT;
	else if (klen == 6 && !memcmp(key, "remote", 6))
		bit = SEEN_REMOTE;
	else if (klen == 14 && !memcmp(key, "approvald_user", 14))
		bit = SEEN_USER;
	else if (klen == 13 && !memcmp(key, "id_token_file", 13))
		bit = SEEN_TOKEN_FILE;
	else if (klen == 12 && !memcmp(key, "id_token_env", 12))
		bit = SEEN_TOKEN_ENV;
	else if (klen == 15 && !memcmp(key, "id_token_github", 15))
		bit = SEEN_TOKEN_GITHUB;
	else
		return KEY_FAIL("unknown setting \"%.*s\" (known: module, socket, wait, remote, "
		                "approvald_user, id_token_file, id_token_env, id_token_github)",
		                (int)(klen > 64 ? 64 : klen), key);
	if (*seen & bit)
		return KEY_FAIL("\"%.*s\" is set twice", (int)klen, key);
	*seen |= bit;
	if (vlen == 0)
		return VALUE_FAIL("\"%.*s\" has no value", (int)klen, key);
	switch (bit) {
	case SEEN_MODULE:
		if (!set_string(cfg->module, sizeof(cfg->module), val, vlen))
			return VALUE_FAIL("module path too long");
		if (cfg->module[0] != '/')
			return VALUE_FAIL(
			    "module must be an absolute path (module = /usr/lib/.../x.so)");
		break;
	case SEEN_SOCKET:
		if (!set_string(cfg->socket, sizeof(cfg->socket), val, vlen))
			return VALUE_FAIL("socket path longer than %zu bytes",
			                  sizeof(cfg->socket) - 1);
		break;
	case SEEN_REMOTE:
		if (!set_string(cfg->remote, sizeof(cfg->remote), val, vlen) ||
		    strncmp(cfg->remote, "unix:path=/", 11))
			return VALUE_FAIL(
			    "remote is approvald's PKCS#11 socket as unix:path=/absolute/path");
		break;
	case SEEN_USER: {
		char why[400];
		uid_t uid;
		if (!parse_user(val, vlen, &uid, why, sizeof(why)))
			return VALUE_FAIL("%s", why);
		p11g_config_approvald_user.set = true;
		p11g_config_approvald_user.uid = uid;
		break;
	}
	case SEEN_TOKEN_FILE:
		if (!set_string(cfg->id_token_file, sizeof(cfg->id_token_file), val, vlen) ||
		    cfg->id_token_file[0] != '/')
			return VALUE_FAIL("id_token_file must be an absolute path");
		break;
	case SEEN_TOKEN_ENV: {
		bool ok = set_string(cfg->id_token_env, sizeof(cfg->id_token_env), val, vlen);
		for (size_t i = 0; ok && i < vlen; i++)
			ok = (val[i] >= 'A' && val[i] <= 'Z') || (val[i] >= 'a' && val[i] <= 'z') ||
			     (val[i] >= '0' && val[i] <= '9' && i > 0) || val[i] == '_';
		if (!ok)
			return VALUE_FAIL("id_token_env is the name of an environment variable "
			                  "([A-Za-z_][A-Za-z0-9_]*)");
		break;
	}
	case SEEN_TOKEN_GITHUB:
		if (!set_string(cfg->id_token_github, sizeof(cfg->id_token_github), val, vlen))
			return VALUE_FAIL("id_token_github is an audience of at most %zu bytes",
			                  sizeof(cfg->id_token_github) - 1);
		break;
	case SEEN_WAIT:
		if (!parse_wait(val, vlen, &cfg->wait))
			return VALUE_FAIL(
			    "wait must be a number of seconds from 0 to %d, not \"%.*s\"",
			    P11G_WAIT_MAX, (int)(vlen > 32 ? 32 : vlen), val);
		break;
	}
	return 0;
}

#undef KEY_FAIL
#undef VALUE_FAIL

int p11g_config_parse(const char *name, const char *text, size_t len, struct p11g_config *cfg,
                      p11g_err *err)
{
	struct p11g_kv_reader r = {
	    .text = text, .len = len, .comments = P11G_KV_COMMENT_AFTER_BLANK};
	struct p11g_kv kv;
	unsigned seen = 0;
	int rc;

	while ((rc = p11g_kv_next(&r, &kv)) != 0) {
		if (rc < 0)
			return p11g_err_set_at(err, P11G_E_BAD_REQUEST, name, kv.line, kv.column,
			                       "%s", kv.error);
		if (set_value(cfg, &kv, &seen, name, err) < 0)
			return -1;
	}
	return 0;
}

/* Reads a whole small file; 0, -errno, or -EFBIG. */
static int read_file(const char *path, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	char *buf;
	size_t got = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if (st.st_size > CONF_MAX)
		return -EFBIG;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(buf);
			return -e;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	buf[got] = '\0';
	*ret = buf;
	*ret_len = got;
	return 0;
}

static int apply_env(struct p11g_config *cfg, const char *var, const char *key, p11g_err *err)
{
	/* secure_getenv: a setuid program must not take its module or socket
	 * from whoever started it. */
	const char *v = secure_getenv(var);
	unsigned seen = 0;

	if (!v)
		return 0;
	struct p11g_kv kv = {
	    .key = key, .key_len = strlen(key), .value = v, .value_len = strlen(v)};
	return set_value(cfg, &kv, &seen, var, err);
}

int p11g_config_load(struct p11g_config *ret, p11g_err *err)
{
	struct p11g_config cfg = {.wait = 0};
	const char *path = secure_getenv("P11GATE_CONF");
	bool explicit_path = path && *path;
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r;

	memcpy(cfg.socket, P11G_DEFAULT_SOCKET, sizeof(P11G_DEFAULT_SOCKET));
	p11g_config_approvald_user.set = false;
	if (!explicit_path)
		path = P11G_DEFAULT_CONF;
	r = read_file(path, &text, &len);
	if (r == -ENOENT && !explicit_path && secure_getenv("P11GATE_MODULE")) {
		/* Everything can come from the environment. */
	} else if (r < 0) {
		char ebuf[128];
		p11g_err_set(
		    err, P11G_E_BAD_REQUEST, "cannot read configuration %s: %s%s", path,
		    r == -EFBIG ? "larger than 64 KiB" : strerror_r(-r, ebuf, sizeof(ebuf)),
		    r == -ENOENT ? " (set P11GATE_CONF to the file, or P11GATE_MODULE)" : "");
		return -1;
	} else {
		if (!set_string(cfg.source, sizeof(cfg.source), path, strlen(path))) {
			p11g_err_set(err, P11G_E_BAD_REQUEST, "configuration path too long");
			return -1;
		}
		if (p11g_config_parse(path, text, len, &cfg, err) < 0)
			return -1;
	}
	if (apply_env(&cfg, "P11GATE_MODULE", "module", err) < 0 ||
	    apply_env(&cfg, "P11GATE_SOCKET", "socket", err) < 0 ||
	    apply_env(&cfg, "P11GATE_WAIT", "wait", err) < 0 ||
	    apply_env(&cfg, "P11GATE_ID_TOKEN_FILE", "id_token_file", err) < 0)
		return -1;
	/* the environment's token file stands for the file's way of finding one */
	const char *tf = secure_getenv("P11GATE_ID_TOKEN_FILE");
	if (tf && *tf)
		cfg.id_token_env[0] = cfg.id_token_github[0] = '\0';
	if (!!cfg.id_token_file[0] + !!cfg.id_token_env[0] + !!cfg.id_token_github[0] > 1) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "%s: \"id_token_file\", \"id_token_env\" and \"id_token_github\" "
		             "exclude each other",
		             cfg.source[0] ? cfg.source : path);
		return -1;
	}
	if (cfg.remote[0] && cfg.module[0]) {
		p11g_err_set(
		    err, P11G_E_BAD_REQUEST,
		    "%s: \"remote\" and \"module\" exclude each other: with remote, approvald "
		    "holds the module",
		    cfg.source[0] ? cfg.source : path);
		return -1;
	}
	if (!cfg.module[0] && !cfg.remote[0]) {
		p11g_err_set(err, P11G_E_BAD_REQUEST,
		             "%s: no \"module\" setting: name the real PKCS#11 module "
		             "(module = /usr/lib/softhsm/libsofthsm2.so) or set P11GATE_MODULE",
		             cfg.source[0] ? cfg.source : path);
		return -1;
	}
	*ret = cfg;
	return 0;
}
