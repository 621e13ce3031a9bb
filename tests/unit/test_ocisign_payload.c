/* Unit tests for ocisign's payload builder: cosign's bytes, Go's string escapes, the reference
 * vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <jansson.h>

#include "payload.h"
#include "ref.h"

#define DIGEST "sha256:3fbc632167424a6d997e74f52b878d7cc478225cffac6bc977eedfe51c7f4e79"

static char *build(const char *ref, const struct oci_annotation *a, size_t n)
{
	char *out = NULL;
	size_t len;
	p11g_err err;
	assert_int_equal(oci_payload_build(ref, DIGEST, a, n, &out, &len, &err), 0);
	assert_int_equal(strlen(out), len);
	return out;
}

static void test_no_annotations_is_null(void **state)
{
	(void)state;
	char *p = build("index.docker.io/library/busybox", NULL, 0);
	assert_string_equal(p, "{\"critical\":{\"identity\":{\"docker-reference\":"
	                       "\"index.docker.io/library/busybox\"},\"image\":{\"docker-manifest-"
	                       "digest\":\"" DIGEST "\"},\"type\":\"cosign container image "
	                       "signature\"},\"optional\":null}");
	free(p);
}

static void test_annotations_sorted_last_wins(void **state)
{
	(void)state;
	struct oci_annotation a[] = {
	    {"zeta", "1"}, {"alpha", "2"}, {"Beta", "3"}, {"alpha", "4"}, {"", "empty key"}};
	char *p = build("r.example/x/y", a, 5);
	const char *opt = strstr(p, "\"optional\":");
	assert_non_null(opt);
	/* bytewise order: "" < "Beta" < "alpha" < "zeta" */
	assert_string_equal(opt, "\"optional\":{\"\":\"empty key\",\"Beta\":\"3\",\"alpha\":\"4\","
	                         "\"zeta\":\"1\"}}");
	free(p);
}

static void test_go_string_escapes(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		size_t len;
		const char *out;
	} cases[] = {
	    {"plain", 5, "\"plain\""},
	    {"<a href=\"x\">&</a>", 17,
	     "\"\\u003ca href=\\\"x\\\"\\u003e\\u0026\\u003c/a\\u003e\""},
	    {"back\\slash/", 11, "\"back\\\\slash/\""},
	    {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
	    {"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\x7f\""},
	    {"\xc3\xa9t\xc3\xa9", 5, "\"\xc3\xa9t\xc3\xa9\""},     /* UTF-8 as it is */
	    {"\xe2\x80\xa8\xe2\x80\xa9", 6, "\"\\u2028\\u2029\""}, /* JS line separators */
	    {"a\xff"
	     "b\xc3",
	     4, "\"a\\ufffdb\\ufffd\""},                      /* invalid bytes */
	    {"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""}, /* a surrogate is invalid */
	    {"\xf0\x9f\x94\x91", 4, "\"\xf0\x9f\x94\x91\""},  /* 4-byte sequence */
	    {"nul\0x", 5, "\"nul\\u0000x\""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct oci_buf b;
		oci_buf_init(&b, 1024);
		assert_int_equal(oci_json_go_string(&b, cases[i].in, cases[i].len), 0);
		assert_string_equal((char *)b.data, cases[i].out);
		oci_buf_free(&b);
	}
}

static void test_annotation_parse(void **state)
{
	(void)state;
	struct oci_annotation a;
	p11g_err err;
	assert_int_equal(oci_annotation_parse("k=v", &a, &err), 0);
	assert_string_equal(a.key, "k");
	assert_string_equal(a.value, "v");
	free(a.key);
	assert_int_equal(oci_annotation_parse("=v", &a, &err), 0);
	assert_string_equal(a.key, "");
	free(a.key);
	assert_int_equal(oci_annotation_parse("k=", &a, &err), 0);
	assert_string_equal(a.value, "");
	free(a.key);
	/* cosign splits on every '=' and refuses more than two parts */
	assert_int_equal(oci_annotation_parse("k=v=w", &a, &err), -1);
	assert_int_equal(oci_annotation_parse("novalue", &a, &err), -1);
	assert_non_null(strstr(err.msg, "KEY=VALUE"));
	assert_string_equal(err.code, P11G_E_BAD_REQUEST);
}

static void test_payload_too_large(void **state)
{
	(void)state;
	char *big = malloc(300 * 1024);
	memset(big, 'x', 300 * 1024 - 1);
	big[300 * 1024 - 1] = '\0';
	struct oci_annotation a = {"k", big};
	char *out = NULL;
	size_t len;
	p11g_err err;
	assert_int_equal(oci_payload_build("r.example/x/y", DIGEST, &a, 1, &out, &len, &err), -1);
	assert_non_null(strstr(err.msg, "larger than"));
	assert_string_equal(err.code, P11G_E_BAD_REQUEST);
	free(big);
}

static void test_parse_roundtrip_and_refusals(void **state)
{
	(void)state;
	char digest[OCI_DIGEST_LEN + 1], ref[300];
	p11g_err err;
	char *p = build("r.example/x/y", NULL, 0);
	assert_int_equal(
	    oci_payload_parse((unsigned char *)p, strlen(p), digest, ref, sizeof(ref), &err), 0);
	assert_string_equal(digest, DIGEST);
	assert_string_equal(ref, "r.example/x/y");
	free(p);
	static const char *const bad[] = {
	    "not json",
	    "{\"critical\":{\"type\":\"something else\"}}",
	    "{\"critical\":{\"identity\":{\"docker-reference\":\"a/"
	    "b\"},\"image\":{\"docker-manifest-"
	    "digest\":\"sha256:12\"},\"type\":\"cosign container image signature\"}}",
	    "{\"critical\":{\"type\":\"cosign container image signature\",\"type\":\"x\"}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(oci_payload_parse((const unsigned char *)bad[i], strlen(bad[i]),
		                                   digest, ref, sizeof(ref), &err),
		                 -1);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
	}

	/* A reference one byte too long for the buffer is refused, not cut (the fuzzer found
	 * a cut inside a UTF-8 sequence); one that just fits comes back whole. */
	char name[sizeof(ref) + 1];
	memset(name, 'a', sizeof(name) - 1);
	memcpy(name, "r.example/", 10);
	for (size_t n = sizeof(ref) - 1; n <= sizeof(ref); n++) {
		name[n] = '\0';
		p = build(name, NULL, 0);
		memset(ref, 'x', sizeof(ref));
		int r = oci_payload_parse((unsigned char *)p, strlen(p), digest, ref, sizeof(ref),
		                          &err);
		if (n < sizeof(ref)) {
			assert_int_equal(r, 0);
			assert_string_equal(ref, name);
		} else {
			assert_int_equal(r, -1);
			assert_non_null(
			    strstr(err.msg, "docker-reference is longer than 299 bytes"));
		}
		free(p);
		name[n] = 'a';
	}
}

/* The hand-written vectors of tests/vectors/generate.txt, rebuilt from their
 * arguments without the CLI (all name a digest: no registry needed). */
static void test_reference_vectors(void **state)
{
	(void)state;
	char line[2048], path[1024];
	snprintf(path, sizeof(path), "%s/generate.txt", VECTORS);
	FILE *f = fopen(path, "re");
	assert_non_null(f);
	int n = 0;
	while (fgets(line, sizeof(line), f)) {
		if (line[0] == '#' || line[0] == '\n')
			continue;
		char *sep = strstr(line, " | ");
		assert_non_null(sep);
		*sep = '\0';
		json_t *args = json_loads(sep + 3, 0, NULL);
		assert_true(json_is_array(args));
		struct oci_annotation ann[16];
		size_t na = 0, nargs = json_array_size(args);
		const char *image = NULL;
		p11g_err err;
		for (size_t i = 0; i < nargs; i++) {
			const char *s = json_string_value(json_array_get(args, i));
			if (!strcmp(s, "-a")) {
				assert_true(na < 16);
				assert_int_equal(oci_annotation_parse(
				                     json_string_value(json_array_get(args, ++i)),
				                     &ann[na++], &err),
				                 0);
			} else {
				image = s;
			}
		}
		assert_non_null(image);
		/* the image goes through the reference parser, as in `ocisign generate` */
		struct oci_ref r;
		char name[600];
		assert_int_equal(oci_ref_parse(image, &r, &err), 0);
		oci_ref_name(&r, name, sizeof(name));
		char want_path[sizeof(line) + 1024];
		snprintf(want_path, sizeof(want_path), "%s/%s", VECTORS, line);
		struct oci_buf want;
		assert_int_equal(oci_read_file(want_path, 4096, &want, "vector", &err), 0);
		char *got = NULL;
		size_t glen;
		assert_int_equal(oci_payload_build(name, r.digest, ann, na, &got, &glen, &err), 0);
		assert_int_equal(glen, want.len);
		assert_memory_equal(got, want.data, glen);
		free(got);
		oci_buf_free(&want);
		for (size_t i = 0; i < na; i++)
			free(ann[i].key);
		json_decref(args);
		n++;
	}
	fclose(f);
	assert_true(n >= 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_no_annotations_is_null),
	    cmocka_unit_test(test_annotations_sorted_last_wins),
	    cmocka_unit_test(test_go_string_escapes),
	    cmocka_unit_test(test_annotation_parse),
	    cmocka_unit_test(test_payload_too_large),
	    cmocka_unit_test(test_parse_roundtrip_and_refusals),
	    cmocka_unit_test(test_reference_vectors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
