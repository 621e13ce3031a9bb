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
}

static void test_errors(void **state)
{
	static const struct {
		const char *text;
		unsigned line, column;
	} bad[] = {
	    {"module /a.so\n", 1, 1}, {"= /a.so\n", 1, 1},      {"\n\n   \t= x\n", 3, 5},
	    {"a = 1\n  b\n", 2, 3},   {"a = 1\n \t =\n", 2, 4},
	};
	(void)state;

	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		struct p11g_kv_reader r = {.text = bad[i].text, .len = strlen(bad[i].text)};
		struct p11g_kv kv;
		int rc;
		while ((rc = p11g_kv_next(&r, &kv)) == 1)
			;
		if (rc != -1 || kv.line != bad[i].line || kv.column != bad[i].column)
			fail_msg("\"%s\": %d at %u:%u, expected -1 at %u:%u", bad[i].text, rc,
			         kv.line, kv.column, bad[i].line, bad[i].column);
	}
}

/* Bytes are bytes: a NUL stays in the key or value for the setting to refuse,
 * and lines end at '\n' alone. */
static void test_bytes(void **state)
{
	static const char text[] = "k\0ey = va\0lue\r\nx = 1";
	struct p11g_kv_reader r = {.text = text, .len = sizeof(text) - 1};
	struct p11g_kv kv;
	(void)state;

	assert_int_equal(p11g_kv_next(&r, &kv), 1);
	assert_int_equal(kv.key_len, 4);
	assert_memory_equal(kv.key, "k\0ey", 4);
	assert_int_equal(kv.value_len, 6);
	assert_memory_equal(kv.value, "va\0lue", 6);
	assert_int_equal(p11g_kv_next(&r, &kv), 1);
	assert_int_equal(kv.line, 2);
	assert_int_equal(p11g_kv_next(&r, &kv), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_text),
	    cmocka_unit_test(test_comments),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
