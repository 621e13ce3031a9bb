/* Tests of what a person's text may hold and how the rest is shown (approvald/textsafe.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "approvald/textsafe.h"

#define S(lit) (lit), sizeof(lit) - 1

static void assert_escaped(const char *s, size_t len, const char *want)
{
	char *e = p11g_text_escaped(s, len);
	assert_non_null(e);
	assert_string_equal(e, want);
	assert_int_equal(p11g_text_escape(NULL, 0, s, len), strlen(want));
	free(e);
}

static void test_refused_set(void **state)
{
	(void)state;
	for (uint32_t cp = 0; cp < 0x20; cp++)
		assert_int_equal(p11g_text_refused(cp), cp != '\t');
	for (uint32_t cp = 0x20; cp < 0x7f; cp++)
		assert_false(p11g_text_refused(cp));
	for (uint32_t cp = 0x7f; cp <= 0x9f; cp++)
		assert_true(p11g_text_refused(cp));
	assert_false(p11g_text_refused(0xa0));
	assert_false(p11g_text_refused(0xfc));
	static const uint32_t bidi[] = {0x061c, 0x200e, 0x200f, 0x2028, 0x2029, 0x202a, 0x202b,
	                                0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069};
	for (size_t i = 0; i < sizeof(bidi) / sizeof(bidi[0]); i++)
		assert_true(p11g_text_refused(bidi[i]));
	static const uint32_t invisible[] = {0x00ad, 0x034f, 0x115f, 0x1160,  0x17b4,  0x17b5,
	                                     0x180e, 0x200b, 0x2060, 0x2064,  0x3164,  0xfeff,
	                                     0xffa0, 0xfff9, 0xfffb, 0xe0001, 0xe0041, 0xe007f};
	for (size_t i = 0; i < sizeof(invisible) / sizeof(invisible[0]); i++) {
		assert_true(p11g_text_refused(invisible[i]));
		assert_string_equal(p11g_text_kind(invisible[i]), "an invisible character");
	}
	/* joiners and variation selectors stay: Persian, Indic and emoji need them */
	static const uint32_t fine[] = {0x061b, 0x061d, 0x05d0, 0x200c, 0x200d,  0x2027,
	                                0x202f, 0x2065, 0x206a, 0x4e2d, 0x1f600, 0xfe0f,
	                                0xfe00, 0x00ac, 0x00ae, 0x2059, 0xe0080};
	for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++)
		assert_false(p11g_text_refused(fine[i]));
	assert_string_equal(p11g_text_kind(0x1b), "a control character");
	assert_string_equal(p11g_text_kind(0x9b), "a control character");
	assert_string_equal(p11g_text_kind(0x202e), "a bidirectional formatting character");
	assert_string_equal(p11g_text_kind(0x061c), "a bidirectional formatting character");
	assert_string_equal(p11g_text_kind(0x2028), "a line or paragraph separator");
	assert_string_equal(p11g_text_kind(P11G_TEXT_NOT_UTF8 | 0xff), "a byte that is not UTF-8");
}

static void test_find(void **state)
{
	uint32_t cp = 0;
	(void)state;
	assert_int_equal(p11g_text_find(S("release 1.2\tok"), &cp), -1);
	assert_int_equal(
	    p11g_text_find(S("f\xc3\xbcr \xd7\xa9\xd7\x9c \xe4\xb8\xad \xf0\x9f\x98\x80"), &cp),
	    -1);
	assert_int_equal(p11g_text_find(S(""), &cp), -1);
	assert_int_equal(p11g_text_find(S("ab\x1b[2J"), &cp), 2);
	assert_int_equal(cp, 0x1b);
	assert_int_equal(p11g_text_find(S("a\nb"), &cp), 1);
	assert_int_equal(cp, '\n');
	assert_int_equal(p11g_text_find(S("a\rb"), &cp), 1);
	assert_int_equal(p11g_text_find(S("x\x7f"), &cp), 1);
	assert_int_equal(cp, 0x7f);
	/* a NUL inside the length counts */
	assert_int_equal(p11g_text_find("ab\0c", 4, &cp), 2);
	assert_int_equal(cp, 0);
	/* C1 CSI, encoded */
	assert_int_equal(p11g_text_find(S("\xc3\xa9\xc2\x9b"), &cp), 2);
	assert_int_equal(cp, 0x9b);
	/* RLO after a two-byte character */
	assert_int_equal(p11g_text_find(S("\xc3\xa9x\xe2\x80\xae"), &cp), 3);
	assert_int_equal(cp, 0x202e);
	assert_int_equal(p11g_text_find(S("\xe2\x81\xa6"), &cp), 0);
	assert_int_equal(cp, 0x2066);
	assert_int_equal(p11g_text_find(S("\xd8\x9c"), &cp), 0);
	assert_int_equal(cp, 0x061c);
	/* not UTF-8: a lone continuation byte, an overlong ESC, a surrogate, cut short */
	assert_int_equal(p11g_text_find(S("ok\x80"), &cp), 2);
	assert_int_equal(cp, P11G_TEXT_NOT_UTF8 | 0x80);
	assert_int_equal(p11g_text_find(S("\xc0\x9b"), &cp), 0);
	assert_int_equal(cp, P11G_TEXT_NOT_UTF8 | 0xc0);
	assert_int_equal(p11g_text_find(S("\xed\xa0\x80"), &cp), 0);
	assert_int_equal(p11g_text_find(S("ab\xe2\x80"), &cp), 2);
	assert_int_equal(p11g_text_find(S("\xf4\x90\x80\x80"), &cp), 0);
	assert_int_equal(p11g_text_find(S("x\x1b"), NULL), 1);
}

static void test_escape(void **state)
{
	(void)state;
	assert_escaped(S("plain text, f\xc3\xbcr M\xc3\xbcller \xe4\xb8\xad"),
	               "plain text, f\xc3\xbcr M\xc3\xbcller \xe4\xb8\xad");
	assert_escaped(S("a\x1b[2Kb"), "a\\x1b[2Kb");
	/* invisible characters, a tag character beyond the BMP among them */
	assert_escaped(S("a\xc2\xad\xe2\x80\x8b\xef\xbb\xbf\xf3\xa0\x81\x81"
	                 "b"),
	               "a\\u00ad\\u200b\\ufeff\\U000e0041b");
	assert_escaped(S("\r\n\t\\"), "\\r\\n\\t\\\\");
	assert_escaped(S("\x07\x7f\x01"), "\\x07\\x7f\\x01");
	assert_escaped("a\0b", 3, "a\\x00b");
	assert_escaped(S("\xc2\x9b"
	                 "2J"),
	               "\\u009b2J");
	assert_escaped(S("\xe2\x80\xae"
	                 "ce-wf\xe2\x80\xac"),
	               "\\u202ece-wf\\u202c");
	assert_escaped(S("\xe2\x80\x8e\xe2\x80\x8f\xd8\x9c\xe2\x80\xa8\xe2\x81\xa9"),
	               "\\u200e\\u200f\\u061c\\u2028\\u2069");
	/* bytes that are not UTF-8 are shown as bytes; what follows them is still read */
	assert_escaped(S("\xff\xc0\x9b"
	                 "ok\xe2\x80"),
	               "\\xff\\xc0\\x9bok\\xe2\\x80");
	/* the escaped form of a literal "\x1b" differs from that of ESC */
	assert_escaped(S("\\x1b"), "\\\\x1b");
	/* nothing refused survives escaping */
	char *e = p11g_text_escaped(S("\x1b\xc2\x85\xe2\x80\xae\n"));
	assert_int_equal(p11g_text_find(e, strlen(e), NULL), -1);
	free(e);
}

static void test_escape_cut_short(void **state)
{
	char buf[8];
	(void)state;
	/* like snprintf: the whole length, and a cut between escapes */
	assert_int_equal(p11g_text_escape(buf, sizeof(buf), S("ab\x1b[2J")), 9);
	assert_string_equal(buf, "ab\\x1b[");
	assert_int_equal(p11g_text_escape(buf, 5, S("ab\x1b")), 6);
	assert_string_equal(buf, "ab");
	/* never inside a UTF-8 sequence */
	assert_int_equal(p11g_text_escape(buf, 4, S("a\xe4\xb8\xad")), 4);
	assert_string_equal(buf, "a");
	assert_int_equal(p11g_text_escape(buf, 1, S("abc")), 3);
	assert_string_equal(buf, "");
	/* a later piece that fits after one that did not is not written either */
	assert_int_equal(p11g_text_escape(buf, 4, S("\x1bz")), 5);
	assert_string_equal(buf, "");
}

static void test_escape_json(void **state)
{
	(void)state;
	json_t *in = json_pack("{s:s, s:[s, i, {s:s}], s:b, s:n}", "desc\x1b", "a\xe2\x80\xaez",
	                       "keys", "x\ny", 7, "uri", "p\xc2\x9b", "ok", 1, "none");
	assert_non_null(in);
	json_t *out = p11g_text_escape_json(in);
	assert_non_null(out);
	char *text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(text, "{\"desc\\\\x1b\":\"a\\\\u202ez\",\"keys\":[\"x\\\\ny\",7,"
	                          "{\"uri\":\"p\\\\u009b\"}],\"none\":null,\"ok\":true}");
	free(text);
	/* the original is left as it was */
	assert_string_equal(json_string_value(json_object_get(in, "desc\x1b")), "a\xe2\x80\xaez");
	json_decref(out);
	json_decref(in);
}

static void test_json_safe(void **state)
{
	(void)state;
	json_t *in = json_pack("{s:s, s:s}", "d",
	                       "a\x1b\x7f\xc2\x85\xe2\x80\xae\xe2\x81\xa6 "
	                       "f\xc3\xbcr \xe4\xb8\xad\n",
	                       "e\xe2\x80\x8f", "x");
	/* beyond the BMP: a surrogate pair, the same character to any JSON reader */
	json_t *tag = json_string("t\xf3\xa0\x81\x81");
	char *tdump = json_dumps(tag, JSON_ENCODE_ANY);
	char *tsafe = p11g_text_json_safe(tdump);
	assert_string_equal(tsafe, "\"t\\uDB40\\uDC41\"");
	json_t *tback = json_loads(tsafe, JSON_DECODE_ANY, NULL);
	assert_true(json_equal(tback, tag));
	json_decref(tback);
	json_decref(tag);
	free(tdump);
	free(tsafe);
	char *dumped = json_dumps(in, JSON_INDENT(2) | JSON_SORT_KEYS);
	char *safe = p11g_text_json_safe(dumped);
	assert_non_null(safe);
	assert_string_equal(safe, "{\n  \"d\": \"a\\u001B\\u007F\\u0085\\u202E\\u2066 "
	                          "f\xc3\xbcr \xe4\xb8\xad\\n\",\n  \"e\\u200F\": \"x\"\n}");
	/* the same JSON value */
	json_error_t jerr;
	json_t *back = json_loads(safe, 0, &jerr);
	assert_non_null(back);
	assert_true(json_equal(back, in));
	json_decref(back);
	free(safe);
	free(dumped);
	json_decref(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_refused_set), cmocka_unit_test(test_find),
	    cmocka_unit_test(test_escape),      cmocka_unit_test(test_escape_cut_short),
	    cmocka_unit_test(test_escape_json), cmocka_unit_test(test_json_safe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
