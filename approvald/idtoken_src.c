/* Where a client finds the pipeline's ID token (p11gate/idtoken_src.h). */
#include "p11gate/idtoken_src.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p11gate/errors.h"

void p11g_id_token_free(char *tok)
{
	if (tok) {
		explicit_bzero(tok, strlen(tok));
		free(tok);
	}
}

char *p11g_id_token_load(const char *path, const char *env, p11g_err *err)
{
	char buf[P11G_ID_TOKEN_MAX + 2];
	size_t len = 0;
	const char *where = path ? path : env;
	char what[300];

	snprintf(what, sizeof(what), "%s%s", path ? "ID token file " : "ID token variable $",
	         where ? where : "?");
	if (path) {
		FILE *f = strcmp(path, "-") ? fopen(path, "re") : stdin;
		if (!f) {
			p11g_err_set(err, P11G_E_BAD_REQUEST, "%s: %s", what, strerror(errno));
			return NULL;
		}
		len = fread(buf, 1, sizeof(buf) - 1, f);
		bool bad = ferror(f);
		if (f != stdin)
			fclose(f);
		if (bad) {
			explicit_bzero(buf, sizeof(buf));
			p11g_err_set(err, P11G_E_BAD_REQUEST, "%s: cannot read it", what);
			return NULL;
		}
	} else {
		const char *v = env ? getenv(env) : NULL;
		if (!v) {
			p11g_err_set(err, P11G_E_BAD_REQUEST, "%s is not set", what);
			return NULL;
		}
		len = strnlen(v, sizeof(buf) - 1);
		memcpy(buf, v, len);
	}
	size_t start = 0;
	while (len && isspace((unsigned char)buf[len - 1]))
		len--;
	while (start < len && isspace((unsigned char)buf[start]))
		start++;
	char *tok = NULL;
	if (len - start > P11G_ID_TOKEN_MAX)
		p11g_err_set(err, P11G_E_BAD_REQUEST, "%s: longer than 16 KiB", what);
	else if (len == start || memchr(buf + start, '\0', len - start))
		p11g_err_set(err, P11G_E_BAD_REQUEST, "%s: %s", what,
		             len == start ? "empty" : "holds a NUL byte");
	else if (!(tok = strndup(buf + start, len - start)))
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	explicit_bzero(buf, sizeof(buf));
	return tok;
}
