/* Reading policy files and directories for approvald: their bytes go to policy/'s builder. */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "approvald/policy_load.h"

/* The size of the policy parser's messages, so one about a file reads the same. */
#define MSG_MAX 1024

/* "path: message" into *ret_error; -1. */
__attribute__((format(printf, 3, 4))) static int fail(char **ret_error, const char *path,
                                                      const char *fmt, ...)
{
	char msg[MSG_MAX];
	va_list ap;
	int n = snprintf(msg, sizeof(msg), "%s: ", path);

	if (n >= 0 && (size_t)n < sizeof(msg)) {
		va_start(ap, fmt);
		vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	if (ret_error)
		*ret_error = strdup(msg);
	return -1;
}

static const char *errno_text(int e, char *buf, size_t size)
{
	/* GNU strerror_r: thread-safe, may return a static string instead of buf. */
	return strerror_r(e, buf, size);
}

/* Reads a whole regular file of at most P11G_POLICY_TEXT_MAX bytes. */
static int read_file(const char *path, char **ret, size_t *ret_len, char **ret_error)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t len = 0;
	char eb[128];

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return fail(ret_error, path, "cannot open: %s", errno_text(errno, eb, sizeof(eb)));
	if (fstat(fd, &st) < 0)
		return fail(ret_error, path, "cannot stat: %s", errno_text(errno, eb, sizeof(eb)));
	if (!S_ISREG(st.st_mode))
		return fail(ret_error, path, "not a regular file");
	buf = malloc(P11G_POLICY_TEXT_MAX + 1);
	if (!buf)
		return fail(ret_error, path, "out of memory");
	for (;;) {
		ssize_t n = read(fd, buf + len, P11G_POLICY_TEXT_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail(ret_error, path, "cannot read: %s",
			            errno_text(errno, eb, sizeof(eb)));
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > P11G_POLICY_TEXT_MAX)
			return fail(ret_error, path, "larger than 1 MiB");
	}
	*ret = buf;
	buf = NULL;
	*ret_len = len;
	return 0;
}

static int load_file(struct p11g_policy_builder *b, const char *path, char **ret_error)
{
	_cleanup_free_ char *text = NULL;
	size_t len;

	if (read_file(path, &text, &len, ret_error) < 0)
		return -1;
	return p11g_policy_builder_add(b, path, text, len, ret_error);
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
static int load_dir(struct p11g_policy_builder *b, const char *dir, char **ret_error)
{
	DIR *d = opendir(dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	char eb[128];
	int r = -1;

	if (!d)
		return fail(ret_error, dir, "cannot open directory: %s",
		            errno_text(errno, eb, sizeof(eb)));
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno) {
				fail(ret_error, dir, "cannot read directory: %s",
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
			fail(ret_error, dir, "out of memory");
			goto out;
		}
		if (stat(path, &st) < 0) {
			fail(ret_error, path, "cannot stat: %s", errno_text(errno, eb, sizeof(eb)));
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
				fail(ret_error, dir, "out of memory");
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
		if (load_file(b, names[i], ret_error) < 0)
			goto out;
	r = 0;
out:
	free_names(names, n);
	closedir(d);
	return r;
}

int p11g_policy_load(const char *path, struct p11g_policy **ret, char **ret_error)
{
	struct p11g_policy_builder *b = p11g_policy_builder_new();
	struct stat st;
	char eb[128];
	int r;

	if (!b) {
		if (ret_error)
			*ret_error = strdup("out of memory");
		return -1;
	}
	if (stat(path, &st) < 0)
		r = fail(ret_error, path, "%s", errno_text(errno, eb, sizeof(eb)));
	else if (S_ISDIR(st.st_mode))
		r = load_dir(b, path, ret_error);
	else if (S_ISREG(st.st_mode))
		r = load_file(b, path, ret_error);
	else
		r = fail(ret_error, path, "not a regular file or directory");
	if (r < 0) {
		p11g_policy_builder_free(b);
		return -1;
	}
	return p11g_policy_builder_finish(b, ret, ret_error);
}
