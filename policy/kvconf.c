/* The `key = value` tokenizer both configurations share (kvconf.h): bytes in, settings out. */
#include <string.h>

#include "p11gate/kvconf.h"

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int refuse(struct p11g_kv *ret, size_t at, const char *why)
{
	ret->column = (unsigned)at + 1;
	ret->error = why;
	return -1;
}

int p11g_kv_parse_line(const char *line, size_t len, enum p11g_kv_comments comments,
                       struct p11g_kv *ret)
{
	static const char no_setting[] = "expected \"key = value\"";
	const char *eq, *nul;
	size_t b = 0, e = len, ke, vb;

	for (size_t i = 0; i < len; i++) {
		if (line[i] == '#' &&
		    (comments == P11G_KV_COMMENT_ANYWHERE || i == 0 || is_blank(line[i - 1]))) {
			e = i;
			break;
		}
	}
	while (b < e && is_blank(line[b]))
		b++;
	while (e > b && is_blank(line[e - 1]))
		e--;
	ret->error = NULL;
	if (b == e)
		return 0;
	ret->column = (unsigned)b + 1;
	/* A NUL byte is refused, not taken for the end of the key or value:
	 * "socket\0x = v" must not set socket. */
	nul = memchr(line + b, '\0', e - b);
	if (nul)
		return refuse(ret, (size_t)(nul - line), "a NUL byte in a setting");
	eq = memchr(line + b, '=', e - b);
	if (!eq) {
		/* At what stands where the '=' should: after the first word. */
		size_t at = b;
		while (at < e && !is_blank(line[at]))
			at++;
		while (at < e && is_blank(line[at]))
			at++;
		return refuse(ret, at, no_setting);
	}
	ke = (size_t)(eq - line);
	vb = ke + 1;
	while (ke > b && is_blank(line[ke - 1]))
		ke--;
	while (vb < e && is_blank(line[vb]))
		vb++;
	if (ke == b)
		return refuse(ret, (size_t)(eq - line), no_setting);
	ret->key = line + b;
	ret->key_len = ke - b;
	ret->value = line + vb;
	ret->value_len = e - vb;
	ret->value_column = (unsigned)vb + 1;
	return 1;
}

int p11g_kv_next(struct p11g_kv_reader *r, struct p11g_kv *ret)
{
	while (r->pos < r->len) {
		const char *line = r->text + r->pos, *nl = memchr(line, '\n', r->len - r->pos);
		size_t n = nl ? (size_t)(nl - line) : r->len - r->pos;
		int rc;

		r->pos += n + (nl ? 1 : 0);
		r->line++;
		rc = p11g_kv_parse_line(line, n, r->comments, ret);
		if (rc != 0) {
			ret->line = r->line;
			return rc;
		}
	}
	return 0;
}

int p11g_err_vset_at(p11g_err *err, const char *code, const char *file, unsigned line,
                     unsigned column, const char *fmt, va_list ap)
{
	char pos[2 * 11 + 3] = "";
	size_t flen = strlen(file), room;
	int n;

	if (!err)
		return -1;
	err->code = code;
	if (line)
		snprintf(pos, sizeof(pos), ":%u:%u", line, column);
	room = sizeof(err->msg) / 2 - strlen(pos) - sizeof(": ");
	if (flen <= room) {
		n = snprintf(err->msg, sizeof(err->msg), "%s%s: ", file, pos);
	} else {
		/* The end of a path says most (the file's name); start on a character. */
		const char *tail = file + flen - (room - 3);
		while ((*tail & 0xc0) == 0x80)
			tail++;
		n = snprintf(err->msg, sizeof(err->msg), "...%s%s: ", tail, pos);
	}
	if (n < 0 || (size_t)n >= sizeof(err->msg))
		return -1;
	vsnprintf(err->msg + n, sizeof(err->msg) - (size_t)n, fmt, ap);
	return -1;
}

int p11g_err_set_at(p11g_err *err, const char *code, const char *file, unsigned line,
                    unsigned column, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	p11g_err_vset_at(err, code, file, line, column, fmt, ap);
	va_end(ap);
	return -1;
}
