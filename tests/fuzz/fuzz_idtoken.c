/* libFuzzer target: what approvald reads of a pipeline's ID token and of an issuer's key set
 * (approvald/idtoken.h).  The first byte chooses: even, the rest is a token verified against a
 * fixed key set (RSA and EC keys made at start, whose private halves the input cannot know: a
 * token never verifies); odd, the rest is a key set (parsed, or refused saying why), and then
 * "PATTERN\0TEXT" for the claim glob (a pattern without '*' matches exactly itself). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjose/cjose.h>

#include "approvald/idtoken.h"
#include "p11gate/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct p11g_jwks *fixed_keys(void)
{
	static struct p11g_jwks *keys;
	if (!keys) {
		cjose_err err;
		static const uint8_t e[] = {1, 0, 1};
		cjose_jwk_t *r = cjose_jwk_create_RSA_random(2048, e, sizeof(e), &err);
		cjose_jwk_t *c = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err);
		if (!r || !c || !cjose_jwk_set_kid(r, "r1", 2, &err) ||
		    !cjose_jwk_set_kid(c, "e1", 2, &err))
			__builtin_trap();
		char *rj = cjose_jwk_to_json(r, false, &err),
		     *cj = cjose_jwk_to_json(c, false, &err);
		char text[4096];
		int n = snprintf(text, sizeof(text), "{\"keys\":[%s,%s]}", rj, cj);
		p11g_err perr = {0};
		if (n <= 0 || (size_t)n >= sizeof(text) ||
		    p11g_jwks_parse(text, (size_t)n, &keys, &perr))
			__builtin_trap();
		free(rj);
		free(cj);
		cjose_jwk_release(r);
		cjose_jwk_release(c);
	}
	return keys;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *rest = (const char *)data + 1;
	size_t len = size - 1;
	p11g_err err = {0};

	if (data[0] % 2 == 0) {
		struct p11g_idtoken_trust t = {.issuer = "https://issuer.example",
		                               .audience = "p11gate",
		                               .algs = 0x1ff,
		                               .keys = fixed_keys()};
		struct p11g_idtoken tok;
		bool unknown = false;
		if (p11g_idtoken_verify(rest, len, &t, 1800000000, &tok, &unknown, &err) == 0)
			__builtin_trap(); /* nobody but the keys' holder signs */
		if (strcmp(err.code, P11G_E_TOKEN_INVALID) != 0 || !err.msg[0] || tok.claims)
			__builtin_trap(); /* a refusal says why, and keeps nothing */
		return 0;
	}
	struct p11g_jwks *k = NULL;
	if (p11g_jwks_parse(rest, len, &k, &err) == 0) {
		if (!k || p11g_jwks_count(k) == 0 || p11g_jwks_count(k) > P11G_JWKS_KEYS_MAX)
			__builtin_trap();
		p11g_jwks_free(k);
	} else if (k || !err.msg[0]) {
		__builtin_trap();
	}
	const char *nul = memchr(rest, 0, len);
	if (nul) {
		char *text = strndup(nul + 1, len - (size_t)(nul - rest) - 1);
		if (!text)
			return 0;
		bool m = p11g_glob_match(rest, text);
		if (!strchr(rest, '*') && m != (strcmp(rest, text) == 0))
			__builtin_trap();
		if (!p11g_glob_match(rest, rest) && !strchr(rest, '*'))
			__builtin_trap();
		free(text);
	}
	return 0;
}
