/* OIDC ID tokens (approvald/idtoken.c): the key set, and a token verified against one issuer,
 * with the known JWT attacks.  Keys are generated here; tokens are signed here with OpenSSL
 * (not with libcjose, whose verification is under test), including the malformed ones. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "approvald/idtoken.h"
#include "p11gate/errors.h"

#define NOW      1800000000
#define ISSUER   "https://token.actions.githubusercontent.com"
#define AUDIENCE "p11gate"

static EVP_PKEY *rsa, *ec, *rsa2;
static char *jwks_text; /* rsa as "r1", ec as "e1" */

static void b64url(const unsigned char *in, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
		             (i + 2 < n ? in[i + 2] : 0);
		out[o++] = a[(v >> 18) & 63];
		out[o++] = a[(v >> 12) & 63];
		if (i + 1 < n)
			out[o++] = a[(v >> 6) & 63];
		if (i + 2 < n)
			out[o++] = a[v & 63];
	}
	out[o] = 0;
}

static void b64url_str(const char *s, char *out)
{
	b64url((const unsigned char *)s, strlen(s), out);
}

static void bn_b64(EVP_PKEY *k, const char *param, char *out, size_t pad)
{
	BIGNUM *bn = NULL;
	unsigned char buf[1024];
	assert_int_equal(EVP_PKEY_get_bn_param(k, param, &bn), 1);
	int n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
	assert_true(n > 0);
	b64url(buf, (size_t)n, out);
	BN_free(bn);
}

static char *jwk_rsa(EVP_PKEY *k, const char *kid)
{
	char n[800], e[16], *out = NULL;
	bn_b64(k, OSSL_PKEY_PARAM_RSA_N, n, 0);
	bn_b64(k, OSSL_PKEY_PARAM_RSA_E, e, 0);
	assert_true(asprintf(&out,
	                     "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"n\":\"%s\","
	                     "\"e\":\"%s\"}",
	                     kid, n, e) > 0);
	return out;
}

static char *jwk_ec(EVP_PKEY *k, const char *kid)
{
	char x[64], y[64], *out = NULL;
	bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, x, 32);
	bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, y, 32);
	assert_true(asprintf(&out,
	                     "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\",\"x\":\"%s\","
	                     "\"y\":\"%s\"}",
	                     kid, x, y) > 0);
	return out;
}

/* header and claims (JSON) signed with key as alg ("none": no signature; HS256: with secret). */
static char *token(const char *header, const char *claims, EVP_PKEY *key, const char *secret)
{
	char h[2048], c[8192], sig[1024], *out = NULL, *input = NULL;
	unsigned char raw[1024];
	size_t rawlen = sizeof(raw);
	b64url_str(header, h);
	b64url_str(claims, c);
	assert_true(asprintf(&input, "%s.%s", h, c) > 0);
	sig[0] = 0;
	if (secret) {
		unsigned int l = 0;
		HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)input,
		     strlen(input), raw, &l);
		b64url(raw, l, sig);
	} else if (key) {
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key), 1);
		assert_int_equal(
		    EVP_DigestSign(ctx, raw, &rawlen, (unsigned char *)input, strlen(input)), 1);
		EVP_MD_CTX_free(ctx);
		if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
			/* JWS wants r || s, 32 bytes each */
			const unsigned char *p = raw;
			ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)rawlen);
			unsigned char rs[64];
			assert_non_null(s);
			BN_bn2binpad(ECDSA_SIG_get0_r(s), rs, 32);
			BN_bn2binpad(ECDSA_SIG_get0_s(s), rs + 32, 32);
			ECDSA_SIG_free(s);
			b64url(rs, 64, sig);
		} else {
			b64url(raw, rawlen, sig);
		}
	}
	assert_true(asprintf(&out, "%s.%s", input, sig) > 0);
	free(input);
	return out;
}

static char *claims(const char *extra)
{
	char *out = NULL;
	assert_true(asprintf(&out,
	                     "{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"repo:acme/"
	                     "app:ref:refs/heads/main\",\"jti\":\"j-1\",\"exp\":%d,\"iat\":%d,"
	                     "\"nbf\":%d,\"repository\":\"acme/app\",\"ref\":\"refs/heads/main\","
	                     "\"actor\":\"octocat\"%s}",
	                     NOW + 300, NOW - 10, NOW - 10, extra ? extra : "") > 0);
	return out;
}

static struct p11g_jwks *keys(void)
{
	struct p11g_jwks *k = NULL;
	p11g_err err = {0};
	assert_int_equal(p11g_jwks_parse(jwks_text, strlen(jwks_text), &k, &err), 0);
	assert_int_equal(p11g_jwks_count(k), 2);
	return k;
}

/* Verifies tok against the test issuer: 0 or -1 (then err's code is token_invalid and its
 * message contains want). */
static int check(const char *tok, unsigned algs, const char *want, bool *unknown_kid)
{
	struct p11g_jwks *k = keys();
	struct p11g_idtoken_trust t = {
	    .issuer = ISSUER, .audience = AUDIENCE, .algs = algs, .keys = k};
	struct p11g_idtoken got;
	p11g_err err = {0};
	int r = p11g_idtoken_verify(tok, strlen(tok), &t, NOW, &got, unknown_kid, &err);
	if (r == 0) {
		assert_string_equal(got.iss, ISSUER);
		assert_string_equal(got.jti, "j-1");
		p11g_idtoken_clear(&got);
	} else {
		assert_string_equal(err.code, P11G_E_TOKEN_INVALID);
		if (want && !strstr(err.msg, want))
			fail_msg("\"%s\" does not say \"%s\"", err.msg, want);
		if (strlen(tok) > 8) /* never quotes the token */
			assert_null(strstr(err.msg, tok));
	}
	p11g_jwks_free(k);
	return r;
}

static void good_tokens_verify(void **state)
{
	(void)state;
	char *c = claims(NULL);
	char *t1 = token("{\"alg\":\"RS256\",\"kid\":\"r1\",\"typ\":\"JWT\"}", c, rsa, NULL);
	char *t2 = token("{\"alg\":\"ES256\",\"kid\":\"e1\"}", c, ec, NULL);
	assert_int_equal(check(t1, 0, NULL, NULL), 0);
	assert_int_equal(check(t2, 0, NULL, NULL), 0);
	/* an audience among several */
	char *c2 = NULL;
	assert_true(asprintf(&c2,
	                     "{\"iss\":\"" ISSUER "\",\"aud\":[\"x\",\"" AUDIENCE
	                     "\"],\"sub\":\"s\",\"jti\":\"j-1\",\"exp\":%d}",
	                     NOW + 5) > 0);
	char *t3 = token("{\"alg\":\"RS256\",\"kid\":\"r1\"}", c2, rsa, NULL);
	assert_int_equal(check(t3, 0, NULL, NULL), 0);
	free(c), free(c2), free(t1), free(t2), free(t3);
}

static void forged_and_confused_tokens_are_refused(void **state)
{
	(void)state;
	char *c = claims(NULL), *pem = NULL;
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_PUBKEY(b, rsa);
	long n = BIO_get_mem_data(b, &pem);
	char *secret = strndup(pem, (size_t)n);
	BIO_free(b);
	char *cases[][2] = {
	    /* another key's signature under our kid */
	    {token("{\"alg\":\"RS256\",\"kid\":\"r1\"}", c, rsa2, NULL), "does not verify"},
	    /* alg none, with and without a signature part */
	    {token("{\"alg\":\"none\",\"kid\":\"r1\"}", c, NULL, NULL), "three base64url"},
	    {token("{\"alg\":\"none\"}", c, NULL, "x"), "never accepted"},
	    /* HS256 with the issuer's public key (PEM, and the JWKS text) as the secret */
	    {token("{\"alg\":\"HS256\",\"kid\":\"r1\"}", c, NULL, secret), "never accepted"},
	    {token("{\"alg\":\"HS256\",\"kid\":\"r1\"}", c, NULL, jwks_text), "never accepted"},
	    /* RS256 naming the EC key; ES256 naming the RSA key */
	    {token("{\"alg\":\"RS256\",\"kid\":\"e1\"}", c, rsa, NULL), "does not sign with"},
	    {token("{\"alg\":\"ES256\",\"kid\":\"r1\"}", c, ec, NULL), "does not sign with"},
	    /* a key of its own, or pointed at */
	    {token("{\"alg\":\"RS256\",\"kid\":\"r1\",\"jwk\":{\"kty\":\"RSA\"}}", c, rsa, NULL),
	     "its own key"},
	    {token("{\"alg\":\"RS256\",\"kid\":\"r1\",\"jku\":\"https://evil/\"}", c, rsa, NULL),
	     "its own key"},
	    {token("{\"alg\":\"RS256\",\"kid\":\"r1\",\"crit\":[\"exp\"]}", c, rsa, NULL), "crit"},
	    {token("{\"alg\":\"RS256\",\"kid\":\"r1\",\"typ\":\"JWE\"}", c, rsa, NULL), "type"},
	    {token("{\"kid\":\"r1\"}", c, rsa, NULL), "not a signed JWT"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (check(cases[i][0], 0, cases[i][1], NULL) == 0)
			fail_msg("case %zu verified", i);
		free(cases[i][0]);
	}
	/* ES256 is fine, but not for an issuer that may use RS256 only */
	char *t = token("{\"alg\":\"ES256\",\"kid\":\"e1\"}", c, ec, NULL);
	assert_int_equal(check(t, P11G_ALG_RS256, "not one the issuer may use", NULL), -1);
	free(t);
	free(secret), free(c);
}

static void unknown_kid_is_told_apart(void **state)
{
	(void)state;
	bool unknown = false;
	char *c = claims(NULL);
	char *t = token("{\"alg\":\"RS256\",\"kid\":\"r2\"}", c, rsa2, NULL);
	assert_int_equal(check(t, 0, "no key \"r2\"", &unknown), -1);
	assert_true(unknown);
	/* after rotation: the set with r2 verifies it, and no longer knows r1 */
	char *j = jwk_rsa(rsa2, "r2"), *text = NULL;
	assert_true(asprintf(&text, "{\"keys\":[%s]}", j) > 0);
	struct p11g_jwks *k = NULL;
	p11g_err err = {0};
	assert_int_equal(p11g_jwks_parse(text, strlen(text), &k, &err), 0);
	struct p11g_idtoken_trust tr = {.issuer = ISSUER, .audience = AUDIENCE, .keys = k};
	struct p11g_idtoken got;
	assert_int_equal(p11g_idtoken_verify(t, strlen(t), &tr, NOW, &got, &unknown, &err), 0);
	p11g_idtoken_clear(&got);
	char *old = token("{\"alg\":\"RS256\",\"kid\":\"r1\"}", c, rsa, NULL);
	assert_int_equal(p11g_idtoken_verify(old, strlen(old), &tr, NOW, &got, &unknown, &err), -1);
	assert_true(unknown);
	/* a wrong signature is not an unknown key */
	char *bad = token("{\"alg\":\"RS256\",\"kid\":\"r1\"}", c, rsa2, NULL);
	assert_int_equal(check(bad, 0, NULL, &unknown), -1);
	assert_false(unknown);
	p11g_jwks_free(k);
	free(j), free(text), free(t), free(old), free(bad), free(c);
}

static void claims_out_of_their_time_or_place_are_refused(void **state)
{
	(void)state;
	struct {
		const char *claims, *want;
	} cases[] = {
	    {"{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"s\",\"jti\":\"j-1\","
	     "\"exp\":1799999900}",
	     "expired"},
	    {"{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"s\",\"jti\":\"j-1\","
	     "\"exp\":1800000300,\"nbf\":1800000100}",
	     "not valid yet"},
	    {"{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"s\",\"jti\":\"j-1\","
	     "\"exp\":1800000300,\"iat\":1800000100}",
	     "future"},
	    {"{\"iss\":\"" ISSUER "\",\"aud\":\"other\",\"sub\":\"s\",\"jti\":\"j-1\","
	     "\"exp\":1800000300}",
	     "audience"},
	    {"{\"iss\":\"https://gitlab.com\",\"aud\":\"" AUDIENCE
	     "\",\"sub\":\"s\",\"jti\":\"j-1\","
	     "\"exp\":1800000300}",
	     "another issuer"},
	    {"{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"s\",\"exp\":1800000300}",
	     "jti"},
	    {"{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"jti\":\"j-1\",\"exp\":1800000300}",
	     "sub"},
	    {"{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"s\",\"jti\":\"j-1\"}",
	     "no \"exp\""},
	    {"{\"iss\":\"" ISSUER "\",\"iss\":\"x\",\"aud\":\"" AUDIENCE "\",\"sub\":\"s\","
	     "\"jti\":\"j-1\",\"exp\":1800000300}",
	     "not a JSON object"},
	    {"[1]", "not a JSON object"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *t = token("{\"alg\":\"RS256\",\"kid\":\"r1\"}", cases[i].claims, rsa, NULL);
		if (check(t, 0, cases[i].want, NULL) == 0)
			fail_msg("case %zu verified", i);
		free(t);
	}
	/* within the skew: expired 30 s ago */
	char *t = token("{\"alg\":\"RS256\",\"kid\":\"r1\"}",
	                "{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"s\","
	                "\"jti\":\"j-1\",\"exp\":1799999970}",
	                rsa, NULL);
	assert_int_equal(check(t, 0, NULL, NULL), 0);
	free(t);
}

static void malformed_and_oversized_tokens_are_refused(void **state)
{
	(void)state;
	const char *bad[] = {"",
	                     ".",
	                     "..",
	                     "a.b",
	                     "a.b.",
	                     "a..c",
	                     "a.b.c.d",
	                     "a b.c.d",
	                     "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
	                     "%%%.%%%.%%%",
	                     "a.b.c\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(check(bad[i], 0, NULL, NULL), -1);
	char *c = claims(NULL);
	char *t = token("{\"alg\":\"RS256\",\"kid\":\"r1\"}", c, rsa, NULL);
	/* truncated anywhere */
	for (size_t n = 0; n < strlen(t); n += 7) {
		char *cut = strndup(t, n);
		assert_int_equal(check(cut, 0, NULL, NULL), -1);
		free(cut);
	}
	/* 16 KiB + 1: refused before it is read */
	size_t pad = P11G_IDTOKEN_MAX + 1 - strlen(t);
	char *big = malloc(P11G_IDTOKEN_MAX + 2);
	memcpy(big, t, strlen(t));
	memset(big + strlen(t), 'A', pad);
	big[P11G_IDTOKEN_MAX + 1] = 0;
	assert_int_equal(check(big, 0, "longer than", NULL), -1);
	free(big), free(t), free(c);
}

static void key_sets_hold_public_signing_keys_only(void **state)
{
	(void)state;
	struct p11g_jwks *k = NULL;
	p11g_err err = {0};
	char *r = jwk_rsa(rsa, "r1"), *text = NULL;
	struct {
		const char *fmt, *want;
	} cases[] = {
	    {"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}", "private member \"k\""},
	    {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\",\"d\":\"AA\"}]"
	     "}",
	     "private member \"d\""},
	    {"{\"keys\":[]}", "no RSA or EC key"},
	    {"{\"keys\":[{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
	     "no RSA or EC key"},
	    {"{\"keys\":{}}", "no \"keys\" array"},
	    {"{\"keys\":[1]}", "not a key"},
	    {"not json", "not JSON"},
	    /* a '=' inside: libcjose's decoder asserts on it (found by fuzz_idtoken) */
	    {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2x="
	     "1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
	     "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}]}",
	     "not base64url"},
	    {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-192\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
	     "crv"},
	    {"{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"short\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
	     "2048"},
	    {"{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"bad kid\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
	     "printable"},
	};
	assert_true(asprintf(&text, "{\"keys\":[%s, %s]}", r, r) > 0);
	assert_int_equal(p11g_jwks_parse(text, strlen(text), &k, &err), -1);
	assert_non_null(strstr(err.msg, "twice"));
	free(text);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		text = strdup(cases[i].fmt);
		assert_int_equal(p11g_jwks_parse(text, strlen(text), &k, &err), -1);
		assert_null(k);
		if (!strstr(err.msg, cases[i].want))
			fail_msg("case %zu: \"%s\" does not say \"%s\"", i, err.msg, cases[i].want);
		free(text);
	}
	free(r);
}

static void claims_match_exact_glob_and_arrays(void **state)
{
	(void)state;
	assert_true(p11g_glob_match("refs/heads/main", "refs/heads/main"));
	assert_false(p11g_glob_match("refs/heads/main", "refs/heads/main2"));
	assert_true(p11g_glob_match("refs/tags/v*", "refs/tags/v1.2"));
	assert_true(p11g_glob_match("*", ""));
	assert_true(p11g_glob_match("a*b*c", "aXXbYYc"));
	assert_false(p11g_glob_match("a*b*c", "aXXbYY"));
	assert_true(p11g_glob_match("acme/*", "acme/app/x"));
	assert_false(p11g_glob_match("acme/?pp", "acme/app"));
	json_t *c = json_pack("{s:s, s:s, s:[s, s], s:i}", "repository", "acme/app", "ref",
	                      "refs/heads/main", "groups", "dev", "release", "run", 7);
	char why[200];
	json_t *m = json_pack("{s:s, s:s}", "repository", "acme/*", "ref", "refs/heads/main");
	assert_int_equal(p11g_claims_match(c, m, why, sizeof(why)), 0);
	json_decref(m);
	m = json_pack("{s:s}", "groups", "rel*");
	assert_int_equal(p11g_claims_match(c, m, why, sizeof(why)), 0);
	json_decref(m);
	m = json_pack("{s:s, s:s}", "repository", "acme/app", "ref", "refs/heads/dev");
	assert_int_equal(p11g_claims_match(c, m, why, sizeof(why)), 1);
	assert_non_null(strstr(why, "claim ref does not match refs/heads/dev"));
	json_decref(m);
	m = json_pack("{s:s}", "environment", "prod");
	assert_int_equal(p11g_claims_match(c, m, why, sizeof(why)), 1);
	assert_non_null(strstr(why, "environment is missing"));
	json_decref(m);
	m = json_pack("{s:s}", "run", "7");
	assert_int_equal(p11g_claims_match(c, m, why, sizeof(why)), 1);
	assert_non_null(strstr(why, "no string"));
	json_decref(m);
	json_decref(c);
}

static EVP_PKEY *gen(const char *alg, const char *param, const char *value)
{
	EVP_PKEY *k = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
	if (!ctx || EVP_PKEY_keygen_init(ctx) != 1 ||
	    EVP_PKEY_CTX_ctrl_str(ctx, param, value) != 1 || EVP_PKEY_keygen(ctx, &k) != 1)
		abort();
	EVP_PKEY_CTX_free(ctx);
	return k;
}

int main(void)
{
	rsa = gen("RSA", "rsa_keygen_bits", "2048");
	rsa2 = gen("RSA", "rsa_keygen_bits", "2048");
	ec = gen("EC", "ec_paramgen_curve", "P-256");
	char *r = jwk_rsa(rsa, "r1"), *e = jwk_ec(ec, "e1");
	if (asprintf(&jwks_text, "{\"keys\":[%s,%s]}", r, e) < 0)
		return 1;
	free(r), free(e);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(good_tokens_verify),
	    cmocka_unit_test(forged_and_confused_tokens_are_refused),
	    cmocka_unit_test(unknown_kid_is_told_apart),
	    cmocka_unit_test(claims_out_of_their_time_or_place_are_refused),
	    cmocka_unit_test(malformed_and_oversized_tokens_are_refused),
	    cmocka_unit_test(key_sets_hold_public_signing_keys_only),
	    cmocka_unit_test(claims_match_exact_glob_and_arrays),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	EVP_PKEY_free(rsa), EVP_PKEY_free(rsa2), EVP_PKEY_free(ec);
	free(jwks_text);
	return rc;
}
