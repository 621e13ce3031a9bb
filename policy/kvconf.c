/* The `key = value` tokenizer both configurations share (kvconf.h): bytes in, settings out. */
#include <string.h>

#include "p11gate/kvconf.h"

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

int p11g_kv_parse_line(const char *line, size_t len, enum p11g_kv_comments comments,
                       struct p11g_kv *ret)
{
	const char *eq;
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
	if (b == e)
		return 0;
	ret->column = (unsigned)b + 1;
	eq = memchr(line + b, '=', e - b);
	if (!eq)
		return -1;
	ke = (size_t)(eq - line);
	vb = ke + 1;
	while (ke > b && is_blank(line[ke - 1]))
		ke--;
	while (vb < e && is_blank(line[vb]))
		vb++;
	if (ke == b)
		return -1;
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
