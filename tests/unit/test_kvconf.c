/* Unit tests for the `key = value` tokenizer both configurations share (kvconf.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "p11gate/common.h"
#include "p11gate/kvconf.h"

static void assert_kv(const struct p11g_kv *kv, const char *key, const char *value, unsigned line,
                      unsigned column, unsigned value_column)
{
	assert_int_equal(kv->key_len, strlen(key));
	assert_memory_equal(kv->key, key, kv->key_len);
	assert_int_equal(kv->value_len, strlen(value));
	assert_memory_equal(kv->value, value, kv->value_len);
	assert_int_equal(kv->line, line);
	assert_int_equal(kv->column, column);
	assert_int_equal(kv->value_column, value_column);
}

static void test_text(void **state)
{
	static const char text[] = "# a comment\n"
	                           "\n"
	                           "  \t\r\n"
	                           "module = /usr/lib/x.so\n"
	                           "socket=/run/a#b.sock   # trailing comment\n"
	                           "  wait   =  30\t\r\n"
	                           "empty =\n"
	                           "eq = a=b\n"
	                           "last = no newline";
	static const struct {
		const char *key, *value;
		unsigned line, column, value_column;
	} want[] = {
	    {"module", "/usr/lib/x.so", 4, 1, 10},
	    {"socket", "/run/a#b.sock", 5, 1, 8},
	    {"wait", "30", 6, 3, 13},
	    {"empty", "", 7, 1, 8},
	    {"eq", "a=b", 8, 1, 6},
	    {"last", "no newline", 9, 1, 8},
	};
	struct p11g_kv_reader r = {.text = text, .len = sizeof(text) - 1};
	struct p11g_kv kv;
	(void)state;

	for (size_t i = 0; i < P11G_ARRAY_SIZE(want); i++) {
		assert_int_equal(p11g_kv_next(&r, &kv), 1);
		assert_kv(&kv, want[i].key, want[i].value, want[i].line, want[i].column,
		          want[i].value_column);
	}
	assert_int_equal(p11g_kv_next(&r, &kv), 0);
	assert_int_equal(p11g_kv_next(&r, &kv), 0);

	struct p11g_kv_reader none = {.text = "", .len = 0};
	assert_int_equal(p11g_kv_next(&none, &kv), 0);
}

static void test_comments(void **state)
{
	struct p11g_kv kv = {0};
	(void)state;

	/* After a blank only: a path may hold '#'. */
	assert_int_equal(p11g_kv_parse_line("a = /x#y #z", 11, P11G_KV_COMMENT_AFTER_BLANK, &kv),
	                 1);
	assert_kv(&kv, "a", "/x#y", 0, 1, 5); /* a line alone has no line number */
	assert_int_equal(p11g_kv_parse_line("a=#x", 4, P11G_KV_COMMENT_AFTER_BLANK, &kv), 1);
	assert_int_equal(kv.value_len, 2);
	assert_int_equal(
	    p11g_kv_parse_line("\t# all comment", 14, P11G_KV_COMMENT_AFTER_BLANK, &kv), 0);
	/* Anywhere: approvald's files. */
	assert_int_equal(p11g_kv_parse_line("a = /x#y #z", 11, P11G_KV_COMMENT_ANYWHERE, &kv), 1);
	assert_int_equal(kv.value_len, 2);
	assert_memory_equal(kv.value, "/x", 2);
	assert_int_equal(p11g_kv_parse_line("a=#x", 4, P11G_KV_COMMENT_ANYWHERE, &kv), 1);
	assert_int_equal(kv.value_len, 0);
	assert_int_equal(p11g_kv_parse_line("  #= x", 6, P11G_KV_COMMENT_ANYWHERE, &kv), 0);
	/* A '#' that starts no comment is no line end either. */
	assert_int_equal(p11g_kv_parse_line("k#=v", 4, P11G_KV_COMMENT_AFTER_BLANK, &kv), 1);
	assert_int_equal(kv.key_len, 2);
	assert_int_equal(p11g_kv_parse_line("k#=v", 4, P11G_KV_COMMENT_ANYWHERE, &kv), -1);
	assert_int_equal(kv.column, 2); /* where the '=' should be */
}

/* A refused line names its line, the column of what is wrong and what it is. */
static void test_errors(void **state)
{
	static const char *const no_setting = "expected \"key = value\"",
	                         *const nul = "a NUL byte in a setting";
	static const struct {
		const char *text;
		size_t len; /* 0: strlen */
		unsigned line, column;
		const char *error;
	} bad[] = {
	    /* no '=': at what stands where it should, after the first word */
	    {"module /a.so\n", 0, 1, 8, no_setting},
	    {"a = 1\n  b\n", 0, 2, 4, no_setting}, /* nothing: just past the line */
	    {"a = 1\n  b  \t\n", 0, 2, 4, no_setting},
	    {"  a b c\n", 0, 1, 5, no_setting},
	    {"k #= v\n", 0, 1, 2, no_setting}, /* the comment is no part of the line */
	    /* nothing before the '=': at the '=' */
	    {"= /a.so\n", 0, 1, 1, no_setting},
	    {"\n\n   \t= x\n", 0, 3, 5, no_setting},
	    {"a = 1\n \t =\n", 0, 2, 4, no_setting},
	    /* a NUL byte, in the key, the value or alone: at it, before any other fault */
	    {"k\0ey = v\n", 10, 1, 2, nul},
	    {"a = 1\nkey = va\0lue\n", 20, 2, 9, nul},
	    {"\t\0\n", 3, 1, 2, nul},
	    {"no equals\0\n", 11, 1, 10, nul},
	};
	(void)state;

	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		struct p11g_kv_reader r = {.text = bad[i].text,
		                           .len = bad[i].len ? bad[i].len : strlen(bad[i].text)};
		struct p11g_kv kv = {0};
		int rc;
		while ((rc = p11g_kv_next(&r, &kv)) == 1)
			assert_null(kv.error);
		if (rc != -1 || kv.line != bad[i].line || kv.column != bad[i].column || !kv.error ||
		    strcmp(kv.error, bad[i].error))
			fail_msg("case %zu: %d at %u:%u (%s), expected -1 at %u:%u (%s)", i, rc,
			         kv.line, kv.column, kv.error ? kv.error : "no error", bad[i].line,
			         bad[i].column, bad[i].error);
	}
	/* A line alone, too. */
	struct p11g_kv kv = {0};
	assert_int_equal(p11g_kv_parse_line("k\0=v", 4, P11G_KV_COMMENT_AFTER_BLANK, &kv), -1);
	assert_int_equal(kv.column, 2);
	assert_string_equal(kv.error, nul);
}

/* Bytes are bytes: lines end at '\n' alone, a CR is a blank, and a NUL byte is refused
 * where a setting would hold it but not in a comment. */
static void test_bytes(void **state)
{
	static const char text[] = "key = value\r\nx = 1 # a \0 in a comment\ny=2";
	struct p11g_kv_reader r = {.text = text, .len = sizeof(text) - 1};
	struct p11g_kv kv;
	(void)state;

	assert_int_equal(p11g_kv_next(&r, &kv), 1);
	assert_kv(&kv, "key", "value", 1, 1, 7);
	assert_int_equal(p11g_kv_next(&r, &kv), 1);
	assert_kv(&kv, "x", "1", 2, 1, 5);
	assert_null(kv.error);
	assert_int_equal(p11g_kv_next(&r, &kv), 1);
	assert_kv(&kv, "y", "2", 3, 1, 3);
	assert_int_equal(p11g_kv_next(&r, &kv), 0);
}

/* The message form of every text p11gate reads: FILE:LINE:COLUMN: message. */
static void test_err_set_at(void **state)
{
	p11g_err e = {0};
	char path[2048];
	(void)state;

	assert_int_equal(p11g_err_set_at(&e, "bad_request", "a.conf", 3, 7, "%s %d", "x", 1), -1);
	assert_string_equal(e.code, "bad_request");
	assert_string_equal(e.msg, "a.conf:3:7: x 1");
	p11g_err_set_at(&e, "internal", "P11GATE_WAIT", 0, 0, "no place");
	assert_string_equal(e.code, "internal");
	assert_string_equal(e.msg, "P11GATE_WAIT: no place");
	assert_int_equal(p11g_err_set_at(NULL, "internal", "f", 1, 1, "x"), -1);

	/* A path too long for the message keeps its end, the position and the message. */
	memset(path, 'd', sizeof(path));
	memcpy(path, "/", 1);
	memcpy(path + sizeof(path) - 12, "/name.conf", 11);
	p11g_err_set_at(&e, "bad_request", path, 12, 34, "unknown setting \"%s\"", "x");
	const char *want = "/name.conf:12:34: unknown setting \"x\"";
	size_t ml = strlen(e.msg), wl = strlen(want);
	assert_true(ml < sizeof(e.msg) && ml > wl);
	assert_string_equal(e.msg + ml - wl, want);
	assert_memory_equal(e.msg, "...ddd", 6);
	/* and a long message is cut at its end, never before the position */
	char longmsg[2048];
	memset(longmsg, 'm', sizeof(longmsg) - 1);
	longmsg[sizeof(longmsg) - 1] = '\0';
	p11g_err_set_at(&e, "bad_request", path, 12, 34, "%s", longmsg);
	assert_int_equal(strlen(e.msg), sizeof(e.msg) - 1);
	assert_non_null(strstr(e.msg, "/name.conf:12:34: mmm"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_text),       cmocka_unit_test(test_comments),
	    cmocka_unit_test(test_errors),     cmocka_unit_test(test_bytes),
	    cmocka_unit_test(test_err_set_at),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
