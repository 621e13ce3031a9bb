/* Reading policy files and directories for approvald: their bytes go to policy/'s builder. */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "approvald/idtoken.h"
#include "approvald/policy_load.h"
#include "p11gate/errors.h"
#include "p11gate/kvconf.h"

/* "path: message" into err (bad_request, or code); -1. */
__attribute__((format(printf, 4, 5))) static int fail_code(p11g_err *err, const char *code,
                                                           const char *path, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = p11g_err_vset_at(err, code, path, 0, 0, fmt, ap);
	va_end(ap);
	return r;
}
#define fail(err, path, ...) fail_code(err, P11G_E_BAD_REQUEST, path, __VA_ARGS__)
#define fail_oom(err, path)  fail_code(err, P11G_E_INTERNAL, path, "out of memory")

static const char *errno_text(int e, char *buf, size_t size)
{
	/* GNU strerror_r: thread-safe, may return a static string instead of buf. */
	return strerror_r(e, buf, size);
}

/* Reads a whole regular file of at most P11G_POLICY_TEXT_MAX bytes. */
static int read_file(const char *path, char **ret, size_t *ret_len, p11g_err *err)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t len = 0;
	char eb[128];

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return fail(err, path, "cannot open: %s", errno_text(errno, eb, sizeof(eb)));
	if (fstat(fd, &st) < 0)
		return fail(err, path, "cannot stat: %s", errno_text(errno, eb, sizeof(eb)));
	if (!S_ISREG(st.st_mode))
		return fail(err, path, "not a regular file");
	buf = malloc(P11G_POLICY_TEXT_MAX + 1);
	if (!buf)
		return fail_oom(err, path);
	for (;;) {
		ssize_t n = read(fd, buf + len, P11G_POLICY_TEXT_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail(err, path, "cannot read: %s",
			            errno_text(errno, eb, sizeof(eb)));
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > P11G_POLICY_TEXT_MAX)
			return fail(err, path, "larger than 1 MiB");
	}
	*ret = buf;
	buf = NULL;
	*ret_len = len;
	return 0;
}

static int load_file(struct p11g_policy_builder *b, const char *path, p11g_err *err)
{
	_cleanup_free_ char *text = NULL;
	size_t len;

	if (read_file(path, &text, &len, err) < 0)
		return -1;
	return p11g_policy_builder_add(b, path, text, len, err);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static char *join_path(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	bool slash = a > 0 && dir[a - 1] != '/';
	char *s = malloc(a + slash + b + 1);
	if (!s)
		return NULL;
	memcpy(s, dir, a);
	if (slash)
		s[a] = '/';
	memcpy(s + a + slash, name, b + 1);
	return s;
}

/* Every regular *.json file (symlinks followed), in strcmp order.  Names
 * starting with '.' are skipped: editors leave lock and swap files there. */
static int load_dir(struct p11g_policy_builder *b, const char *dir, p11g_err *err)
{
	DIR *d = opendir(dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	char eb[128];
	int r = -1;

	if (!d)
		return fail(err, dir, "cannot open directory: %s",
		            errno_text(errno, eb, sizeof(eb)));
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno) {
				fail(err, dir, "cannot read directory: %s",
				     errno_text(errno, eb, sizeof(eb)));
				goto out;
			}
			break;
		}
		size_t len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len <= 5 || strcmp(de->d_name + len - 5, ".json") != 0)
			continue;
		char *path = join_path(dir, de->d_name);
		struct stat st;
		if (!path) {
			fail_oom(err, dir);
			goto out;
		}
		if (stat(path, &st) < 0) {
			fail(err, path, "cannot stat: %s", errno_text(errno, eb, sizeof(eb)));
			free(path);
			goto out;
		}
		if (!S_ISREG(st.st_mode)) {
			free(path);
			continue;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char **v = realloc(names, ncap * sizeof(*v));
			if (!v) {
				free(path);
				fail_oom(err, dir);
				goto out;
			}
			names = v;
			cap = ncap;
		}
		names[n++] = path;
	}
	/* Same directory prefix on every path, so this orders by file name. */
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++)
		if (load_file(b, names[i], err) < 0)
			goto out;
	r = 0;
out:
	free_names(names, n);
	closedir(d);
	return r;
}

/* Each issuer's jwks_file, read and parsed now: a policy whose key file is missing or bad does
 * not load (file:line:column of its issuer).  A jwks_url is fetched later (not yet: its issuer
 * has no keys, and tokens from it are refused). */
static int load_issuer_keys(struct p11g_policy *p, p11g_err *err)
{
	if (!p->n_issuers)
		return 0;
	if (!(p->jwks = calloc(p->n_issuers, sizeof(*p->jwks))))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	p->jwks_free = p11g_jwks_free;
	for (size_t i = 0; i < p->n_issuers; i++) {
		const struct p11g_issuer *is = &p->issuers[i];
		char *text = NULL;
		size_t len = 0;
		p11g_err e = {0};
		if (!is->jwks_file)
			continue;
		if (read_file(is->jwks_file, &text, &len, &e) < 0 ||
		    p11g_jwks_parse(text, len, &p->jwks[i], &e) < 0) {
			free(text);
			return p11g_err_set_at(err, P11G_E_BAD_REQUEST, is->file, is->line,
			                       is->column, "issuer \"%s\": jwks_file %s: %s",
			                       is->name, is->jwks_file, e.msg);
		}
		free(text);
	}
	return 0;
}

int p11g_policy_load(const char *path, struct p11g_policy **ret, p11g_err *err)
{
	struct p11g_policy_builder *b = p11g_policy_builder_new();
	struct stat st;
	char eb[128];
	int r;

	if (!b)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (stat(path, &st) < 0)
		r = fail(err, path, "%s", errno_text(errno, eb, sizeof(eb)));
	else if (S_ISDIR(st.st_mode))
		r = load_dir(b, path, err);
	else if (S_ISREG(st.st_mode))
		r = load_file(b, path, err);
	else
		r = fail(err, path, "not a regular file or directory");
	if (r < 0) {
		p11g_policy_builder_free(b);
		return -1;
	}
	struct p11g_policy *p = NULL;
	if (p11g_policy_builder_finish(b, &p, err) < 0)
		return -1;
	if (load_issuer_keys(p, err) < 0) {
		p11g_policy_free(p);
		return -1;
	}
	*ret = p;
	return 0;
}
