/* libFuzzer target: the `key = value` tokenizer (kvconf.h) under both comment rules. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "p11gate/kvconf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* What any setting must be, whatever the text: inside it, on one line, key
 * non-empty without '=' or blanks at either end, value without blanks at
 * either end, neither with a NUL byte, columns that match the pointers. */
static void check(const char *text, size_t len, const struct p11g_kv *kv,
                  enum p11g_kv_comments comments, unsigned prev_line)
{
	if (kv->key < text || kv->key_len == 0 || kv->key + kv->key_len > text + len ||
	    kv->value < kv->key + kv->key_len || kv->value + kv->value_len > text + len)
		__builtin_trap();
	if (kv->line <= prev_line || kv->column == 0 ||
	    kv->value_column - kv->column != (size_t)(kv->value - kv->key))
		__builtin_trap();
	if (memchr(kv->key, '=', kv->key_len) || memchr(kv->key, '\n', kv->key_len) ||
	    memchr(kv->value, '\n', kv->value_len) || memchr(kv->key, '\0', kv->key_len) ||
	    memchr(kv->value, '\0', kv->value_len) || kv->error)
		__builtin_trap();
	if (is_blank(kv->key[0]) || is_blank(kv->key[kv->key_len - 1]) ||
	    (kv->value_len && (is_blank(kv->value[0]) || is_blank(kv->value[kv->value_len - 1]))))
		__builtin_trap();
	if (comments == P11G_KV_COMMENT_ANYWHERE &&
	    (memchr(kv->key, '#', kv->key_len) || memchr(kv->value, '#', kv->value_len)))
		__builtin_trap();
	for (size_t i = 1; i < kv->value_len; i++)
		if (comments == P11G_KV_COMMENT_AFTER_BLANK && kv->value[i] == '#' &&
		    is_blank(kv->value[i - 1]))
			__builtin_trap();
}

/* A refused line: a message, and a column on the line or just past it; at a NUL byte
 * when the message is about one.  The message a configuration makes of it starts with
 * the position. */
static void check_refusal(const char *text, size_t len, const struct p11g_kv *kv)
{
	const char *line = text, *end = text + len, *nl;
	size_t n;

	for (unsigned i = 1; i < kv->line; i++) {
		nl = memchr(line, '\n', (size_t)(end - line));
		if (!nl)
			__builtin_trap();
		line = nl + 1;
	}
	nl = memchr(line, '\n', (size_t)(end - line));
	n = nl ? (size_t)(nl - line) : (size_t)(end - line);
	if (!kv->error || !*kv->error || kv->column == 0 || kv->column > n + 1)
		__builtin_trap();
	if (strstr(kv->error, "NUL") && line[kv->column - 1] != '\0')
		__builtin_trap();

	p11g_err e;
	char pos[64];
	snprintf(pos, sizeof(pos), "fuzz.conf:%u:%u: ", kv->line, kv->column);
	if (p11g_err_set_at(&e, "bad_request", "fuzz.conf", kv->line, kv->column, "%s",
	                    kv->error) != -1 ||
	    strncmp(e.msg, pos, strlen(pos)) || strcmp(e.msg + strlen(pos), kv->error))
		__builtin_trap();
}

/* key=value, written back without blanks, reads as the same setting. */
static void round_trip(const struct p11g_kv *kv, enum p11g_kv_comments comments)
{
	size_t n = kv->key_len + 1 + kv->value_len;
	char *line = malloc(n);
	struct p11g_kv again;

	if (!line)
		return;
	memcpy(line, kv->key, kv->key_len);
	line[kv->key_len] = '=';
	memcpy(line + kv->key_len + 1, kv->value, kv->value_len);
	if (p11g_kv_parse_line(line, n, comments, &again) != 1 || again.key_len != kv->key_len ||
	    again.value_len != kv->value_len || memcmp(again.key, kv->key, kv->key_len) ||
	    memcmp(again.value, kv->value, kv->value_len))
		__builtin_trap();
	free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum p11g_kv_comments rules[] = {P11G_KV_COMMENT_AFTER_BLANK,
	                                              P11G_KV_COMMENT_ANYWHERE};

	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		struct p11g_kv_reader r = {
		    .text = (const char *)data, .len = size, .comments = rules[i]};
		struct p11g_kv kv;
		unsigned prev = 0;
		int rc;

		while ((rc = p11g_kv_next(&r, &kv)) == 1) {
			check(r.text, size, &kv, rules[i], prev);
			round_trip(&kv, rules[i]);
			prev = kv.line;
		}
		if (rc == -1 && kv.line <= prev)
			__builtin_trap();
		if (rc == -1)
			check_refusal(r.text, size, &kv);
	}
	return 0;
}
