/* Unit tests for ocisign's WWW-Authenticate parsing, token replies and base64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "auth.h"

static int parse(const char *s, struct oci_challenge *c)
{
	memset(c, 0, sizeof(*c));
	return oci_challenge_parse(s, strlen(s), c);
}

static void test_docker_hub_bearer(void **state)
{
	(void)state;
	struct oci_challenge c;
	assert_int_equal(
	    parse("Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
	          "scope=\"repository:library/busybox:pull\"",
	          &c),
	    0);
	assert_int_equal(c.scheme, OCI_AUTH_BEARER);
	assert_string_equal(c.realm, "https://auth.docker.io/token");
	assert_string_equal(c.service, "registry.docker.io");
	assert_string_equal(c.scope, "repository:library/busybox:pull");
	assert_string_equal(c.error, "");
}

static void test_forms(void **state)
{
	(void)state;
	struct oci_challenge c;
	/* case-insensitive scheme and names, spaces, token values, an error parameter */
	assert_int_equal(parse("bEaReR  Realm = \"https://a.example/t\" , "
	                       "SERVICE=svc,error=\"insufficient_scope\","
	                       " scope=\"repository:a/b:pull,push repository:c:pull\"",
	                       &c),
	                 0);
	assert_string_equal(c.realm, "https://a.example/t");
	assert_string_equal(c.service, "svc");
	assert_string_equal(c.error, "insufficient_scope");
	assert_string_equal(c.scope, "repository:a/b:pull,push repository:c:pull");
	/* quoted-pair escapes */
	assert_int_equal(parse("Bearer realm=\"https://x/\\\"q\\\\\"", &c), 0);
	assert_string_equal(c.realm, "https://x/\"q\\");
	/* Basic, with or without a realm */
	assert_int_equal(parse("Basic realm=\"Registry Realm\"", &c), 0);
	assert_int_equal(c.scheme, OCI_AUTH_BASIC);
	assert_string_equal(c.realm, "Registry Realm");
	assert_int_equal(parse("Basic", &c), 0);
	assert_int_equal(c.scheme, OCI_AUTH_BASIC);
	/* several challenges: Bearer is preferred wherever it stands */
	assert_int_equal(parse("Basic realm=\"r\", Bearer realm=\"https://t\",service=\"s\"", &c),
	                 0);
	assert_int_equal(c.scheme, OCI_AUTH_BEARER);
	assert_string_equal(c.realm, "https://t");
	assert_int_equal(parse("Bearer realm=\"https://t\", Basic realm=\"r\"", &c), 0);
	assert_int_equal(c.scheme, OCI_AUTH_BEARER);
	/* an unknown scheme is skipped */
	assert_int_equal(parse("Digest realm=\"d\", nonce=\"n\", Basic realm=\"b\"", &c), 0);
	assert_int_equal(c.scheme, OCI_AUTH_BASIC);
	assert_string_equal(c.realm, "b");
}

static void test_refusals(void **state)
{
	(void)state;
	struct oci_challenge c;
	static const char *const bad[] = {
	    "",
	    "   ",
	    "Bearer",                          /* no realm */
	    "Bearer service=\"s\"",            /* no realm */
	    "Bearer realm=\"https://t",        /* unterminated */
	    "Bearer realm=\"https://t\\",      /* escape at the end */
	    "Bearer realm=\"https://t\" junk", /* garbage after a parameter */
	    "Digest realm=\"d\"",              /* nothing we can answer */
	    "=x",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (parse(bad[i], &c) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
	/* a value longer than we keep is refused, not cut */
	char big[3000];
	int n = snprintf(big, sizeof(big), "Bearer realm=\"https://");
	memset(big + n, 'a', 1500);
	snprintf(big + n + 1500, sizeof(big) - (size_t)n - 1500, "\"");
	assert_int_equal(parse(big, &c), -1);
	/* not NUL-terminated input: only len bytes are read */
	const char *s = "Basic realm=\"r\"XYZ";
	assert_int_equal(oci_challenge_parse(s, 15, &c), 0);
	assert_string_equal(c.realm, "r");
}

static void test_token_reply(void **state)
{
	(void)state;
	char *tok = NULL;
	long exp = 0;
	p11g_err err;
	const char *a = "{\"token\":\"abc\",\"expires_in\":300}";
	assert_int_equal(oci_token_parse(a, strlen(a), &tok, &exp, &err), 0);
	assert_string_equal(tok, "abc");
	assert_int_equal(exp, 300);
	free(tok);
	const char *b = "{\"access_token\":\"xyz\"}";
	assert_int_equal(oci_token_parse(b, strlen(b), &tok, &exp, &err), 0);
	assert_string_equal(tok, "xyz");
	assert_int_equal(exp, 60); /* the token spec's default */
	free(tok);
	const char *c = "{\"token\":\"a\\r\\nX-Evil: 1\"}";
	assert_int_equal(oci_token_parse(c, strlen(c), &tok, &exp, &err), -1);
	assert_string_equal(err.code, P11G_E_PROTOCOL);
	assert_int_equal(oci_token_parse("{}", 2, &tok, &exp, &err), -1);
	assert_string_equal(err.code, P11G_E_PROTOCOL);
	assert_int_equal(oci_token_parse("nope", 4, &tok, &exp, &err), -1);
	assert_string_equal(err.code, P11G_E_PROTOCOL);
}

static void test_base64(void **state)
{
	(void)state;
	static const struct {
		const char *plain, *b64;
	} v[] = {{"", ""},        {"f", "Zg=="},        {"fo", "Zm8="},
	         {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"AWS:password", "QVdTOnBhc3N3b3Jk"}};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *e = oci_b64_encode((const unsigned char *)v[i].plain, strlen(v[i].plain));
		assert_string_equal(e, v[i].b64);
		free(e);
		unsigned char *d;
		size_t dl;
		assert_int_equal(oci_b64_decode(v[i].b64, strlen(v[i].b64), &d, &dl), 0);
		assert_int_equal(dl, strlen(v[i].plain));
		assert_memory_equal(d, v[i].plain, dl);
		free(d);
	}
	static const char *const bad[] = {"Zg=", "Z===", "Zm9v\n", "Zm!v", "=Zm9"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		unsigned char *d = NULL;
		size_t dl;
		if (oci_b64_decode(bad[i], strlen(bad[i]), &d, &dl) == 0)
			fail_msg("decoded \"%s\"", bad[i]);
	}
}

static void test_creds_option(void **state)
{
	(void)state;
	char *b = NULL;
	p11g_err err;
	assert_int_equal(oci_creds_lookup("reg.io", "user:pa:ss", &b, &err), 0);
	assert_string_equal(b, "dXNlcjpwYTpzcw==");
	free(b);
	assert_int_equal(oci_creds_lookup("reg.io", "nocolon", &b, &err), -1);
	assert_string_equal(err.code, P11G_E_BAD_REQUEST);
	/* an ECR authorization token is base64("AWS:..."), passed on as it is */
	assert_int_equal(
	    oci_creds_lookup("1.dkr.ecr.eu-west-1.amazonaws.com", "QVdTOnBhc3N3b3Jk", &b, &err), 0);
	assert_string_equal(b, "QVdTOnBhc3N3b3Jk");
	free(b);
	assert_int_equal(oci_creds_lookup("reg.io", "Zm9v", &b, &err), -1); /* base64 of "foo" */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_docker_hub_bearer),
	    cmocka_unit_test(test_forms),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_token_reply),
	    cmocka_unit_test(test_base64),
	    cmocka_unit_test(test_creds_option),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
