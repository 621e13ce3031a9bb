/* OIDC ID tokens of CI pipelines (issue 19): a trusted issuer's key set (JWKS) and a token
 * verified against one issuer, with libcjose; and the claims a rule may require (idtoken.c). */
#ifndef P11GATE_IDTOKEN_H
#define P11GATE_IDTOKEN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "p11gate/common.h"

#define P11G_IDTOKEN_MAX     16384 /* bytes of a token, compact serialisation */
#define P11G_IDTOKEN_SKEW    60    /* seconds of clock skew allowed on exp, nbf, iat */
#define P11G_JWKS_MAX        65536 /* bytes of a key set */
#define P11G_JWKS_KEYS_MAX   64
#define P11G_IDTOKEN_JTI_MAX 256

/* The signature algorithms a trusted issuer may use.  "none" and the HMAC ones are no
 * algorithm here: a key set's public key can never serve as an HMAC secret. */
enum {
	P11G_ALG_RS256 = 1 << 0,
	P11G_ALG_RS384 = 1 << 1,
	P11G_ALG_RS512 = 1 << 2,
	P11G_ALG_PS256 = 1 << 3,
	P11G_ALG_PS384 = 1 << 4,
	P11G_ALG_PS512 = 1 << 5,
	P11G_ALG_ES256 = 1 << 6,
	P11G_ALG_ES384 = 1 << 7,
	P11G_ALG_ES512 = 1 << 8,
};
#define P11G_ALG_DEFAULT (P11G_ALG_RS256 | P11G_ALG_ES256)

/* The bit of an algorithm name, or 0 (none, HS256, unknown...). */
unsigned p11g_idtoken_alg(const char *name);

/* A key set: RSA (2048 bits or more) and EC (P-256, P-384, P-521) public keys for signing, by
 * kid.  Keys for encryption ("use": "enc") and of other types are left out; private members,
 * symmetric keys, duplicate kids or a set with no key to verify with are errors. */
struct p11g_jwks;
int p11g_jwks_parse(const char *text, size_t len, struct p11g_jwks **ret, p11g_err *err);
void p11g_jwks_free(struct p11g_jwks *k);
size_t p11g_jwks_count(const struct p11g_jwks *k);

/* Whom a token must come from. */
struct p11g_idtoken_trust {
	const char *issuer;   /* exact "iss" */
	const char *audience; /* in "aud" (a string, or an array of them) */
	unsigned algs;        /* P11G_ALG_* allowed; 0: P11G_ALG_DEFAULT */
	const struct p11g_jwks *keys;
};

/* A verified token: its claims, and what every record of it names. */
struct p11g_idtoken {
	json_t *claims;              /* the payload, verified */
	const char *iss, *sub, *jti; /* in claims */
	int64_t exp;
	char alg[8];
	char kid[128]; /* "" when the token named none */
};

/*
 * Verifies token (len bytes, compact JWS) for t at now: structure and size, "alg" in t->algs,
 * no "crit", no key of the token's own ("jwk", "jku", "x5u", "x5c"), the signature with the
 * key of t->keys its "kid" names (of the type "alg" needs), then "iss", "aud", "exp", "nbf",
 * "iat" (P11G_IDTOKEN_SKEW), "sub" and "jti".  0 with *ret, or -1 with err token_invalid
 * saying why (never quoting the token); *unknown_kid (optional) true when the only fault is a
 * "kid" the key set lacks: the caller may refresh the set once and try again.
 */
int p11g_idtoken_verify(const char *token, size_t len, const struct p11g_idtoken_trust *t,
                        int64_t now, struct p11g_idtoken *ret, bool *unknown_kid, p11g_err *err);
void p11g_idtoken_clear(struct p11g_idtoken *tok);

/* Whether s matches pattern: characters match themselves, '*' any run of characters. */
bool p11g_glob_match(const char *pattern, const char *s);
/* A rule's "match" ({CLAIM: PATTERN}) against verified claims: a string claim matches its
 * pattern, an array claim when one of its strings does.  0 when all match, else 1 with why
 * (the first claim that does not, naming it; never longer than n). */
int p11g_claims_match(const json_t *claims, const json_t *match, char *why, size_t n);

#endif
