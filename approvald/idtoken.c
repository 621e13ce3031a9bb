/* OIDC ID tokens of CI pipelines (idtoken.h).  libcjose parses the key set and the JWS and
 * checks the signature; what a token must be before and after that is decided here, refusing
 * by default: an algorithm outside the issuer's list (never "none" or HMAC), a key the token
 * brings or points at, a key of another type than its algorithm's, a claim missing or out of
 * its time. */
#include "approvald/idtoken.h"

#include <inttypes.h>
#include <string.h>

#include <cjose/cjose.h>

#include "p11gate/errors.h"

#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

struct jwks_key {
	cjose_jwk_t *jwk;
	char kid[128]; /* "" when the set gave none */
	cjose_jwk_kty_t kty;
	int curve; /* EC: the NID */
};

struct p11g_jwks {
	struct jwks_key keys[P11G_JWKS_KEYS_MAX];
	size_t n;
};

static const struct {
	const char *name;
	unsigned bit;
} algs[] = {
    {"RS256", P11G_ALG_RS256}, {"RS384", P11G_ALG_RS384}, {"RS512", P11G_ALG_RS512},
    {"PS256", P11G_ALG_PS256}, {"PS384", P11G_ALG_PS384}, {"PS512", P11G_ALG_PS512},
    {"ES256", P11G_ALG_ES256}, {"ES384", P11G_ALG_ES384}, {"ES512", P11G_ALG_ES512},
};

unsigned p11g_idtoken_alg(const char *name)
{
	for (size_t i = 0; name && i < sizeof(algs) / sizeof(algs[0]); i++)
		if (!strcmp(algs[i].name, name))
			return algs[i].bit;
	return 0;
}

/* The key an algorithm needs: RSA for RS and PS, EC on its curve for ES. */
static bool key_fits(const struct jwks_key *k, unsigned alg)
{
	if (alg & (P11G_ALG_RS256 | P11G_ALG_RS384 | P11G_ALG_RS512 | P11G_ALG_PS256 |
	           P11G_ALG_PS384 | P11G_ALG_PS512))
		return k->kty == CJOSE_JWK_KTY_RSA;
	if (k->kty != CJOSE_JWK_KTY_EC)
		return false;
	return (alg == P11G_ALG_ES256 && k->curve == CJOSE_JWK_EC_P_256) ||
	       (alg == P11G_ALG_ES384 && k->curve == CJOSE_JWK_EC_P_384) ||
	       (alg == P11G_ALG_ES512 && k->curve == CJOSE_JWK_EC_P_521);
}

void p11g_jwks_free(struct p11g_jwks *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n; i++)
		cjose_jwk_release(k->keys[i].jwk);
	free(k);
}

size_t p11g_jwks_count(const struct p11g_jwks *k)
{
	return k ? k->n : 0;
}

static bool printable(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

/* base64url without padding, of a length that can be one: libcjose's decoder asserts (the
 * process aborts) on some malformed input, such as a '=' inside, so nothing else reaches it. */
static bool b64url_clean(const json_t *v)
{
	const char *s = json_string_value(v);
	size_t n = s ? json_string_length(v) : 0;
	if (!s || n == 0 || n % 4 == 1 || strlen(s) != n)
		return false;
	for (; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
			return false;
	return true;
}

/* One key of the set: 1 kept, 0 left out (not for signatures), -1 with err. */
static int jwks_key(struct p11g_jwks *set, size_t i, json_t *key, p11g_err *err)
{
	static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "k", NULL};
	const char *kty = json_string_value(json_object_get(key, "kty")),
	           *use = json_string_value(json_object_get(key, "use")),
	           *kid = json_string_value(json_object_get(key, "kid"));
	const json_t *alg = json_object_get(key, "alg");
	cjose_err cerr;

	if (!json_is_object(key) || !kty)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key %zu: not a key (no \"kty\")", i);
	for (size_t m = 0; private_members[m]; m++)
		if (json_object_get(key, private_members[m]))
			return p11g_err_set(
			    err, P11G_E_BAD_REQUEST,
			    "key %zu: has private member \"%s\" (a key set to verify "
			    "with holds public keys only)",
			    i, private_members[m]);
	if (json_object_get(key, "use") && !use)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key %zu: \"use\" is not a string", i);
	if (use && strcmp(use, "sig") != 0)
		return 0; /* for encryption */
	if (strcmp(kty, "RSA") != 0 && strcmp(kty, "EC") != 0)
		return 0; /* OKP and others: not verified here */
	if (alg && (!json_is_string(alg) || !p11g_idtoken_alg(json_string_value(alg))))
		return 0; /* announced for an algorithm never accepted */
	if (json_object_get(key, "kid") && (!kid || !printable(kid, 127)))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "key %zu: \"kid\" is not 1 to 127 printable characters", i);
	static const char *const rsa_members[] = {"n", "e", NULL}, *const ec_members[] = {"x", "y",
	                                                                                  NULL};
	const char *const *members = strcmp(kty, "RSA") == 0 ? rsa_members : ec_members;
	for (size_t m = 0; members[m]; m++)
		if (!b64url_clean(json_object_get(key, members[m])))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "key %zu: \"%s\" is not base64url (unpadded)", i,
			                    members[m]);
	const char *crv = json_string_value(json_object_get(key, "crv"));
	if (members == ec_members &&
	    (!crv || (strcmp(crv, "P-256") && strcmp(crv, "P-384") && strcmp(crv, "P-521"))))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "key %zu: \"crv\" is not P-256, P-384 or P-521", i);
	for (size_t j = 0; kid && j < set->n; j++)
		if (!strcmp(set->keys[j].kid, kid))
			return p11g_err_set(err, P11G_E_BAD_REQUEST, "key %zu: kid \"%s\" twice", i,
			                    kid);
	if (set->n == P11G_JWKS_KEYS_MAX)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "more than %d keys",
		                    P11G_JWKS_KEYS_MAX);
	cjose_jwk_t *jwk = cjose_jwk_import_json((cjose_header_t *)key, &cerr);
	if (!jwk)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key %zu: %s", i,
		                    cerr.message ? cerr.message : "not a key");
	struct jwks_key *k = &set->keys[set->n];
	memset(k, 0, sizeof(*k));
	k->jwk = jwk;
	k->kty = cjose_jwk_get_kty(jwk, &cerr);
	if (k->kty == CJOSE_JWK_KTY_RSA && cjose_jwk_get_keysize(jwk, &cerr) < 2048) {
		cjose_jwk_release(jwk);
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key %zu: RSA key under 2048 bits", i);
	}
	if (k->kty == CJOSE_JWK_KTY_EC)
		k->curve = (int)cjose_jwk_EC_get_curve(jwk, &cerr);
	if (kid)
		snprintf(k->kid, sizeof(k->kid), "%s", kid);
	set->n++;
	return 1;
}

int p11g_jwks_parse(const char *text, size_t len, struct p11g_jwks **ret, p11g_err *err)
{
	json_error_t jerr;
	size_t i;
	json_t *key;

	*ret = NULL;
	if (len > P11G_JWKS_MAX)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key set: longer than %d bytes",
		                    P11G_JWKS_MAX);
	_cleanup_json_ json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!doc)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "key set: not JSON (line %d: %s)",
		                    jerr.line, jerr.text);
	json_t *keys = json_object_get(doc, "keys");
	if (!json_is_array(keys))
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "key set: no \"keys\" array (a JWKS: {\"keys\": [...]})");
	struct p11g_jwks *set = calloc(1, sizeof(*set));
	if (!set)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	json_array_foreach(keys, i, key)
	{
		if (jwks_key(set, i, key, err) < 0) {
			p11g_jwks_free(set);
			return -1;
		}
	}
	if (!set->n) {
		p11g_jwks_free(set);
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "key set: no RSA or EC key to verify signatures with");
	}
	/* a key without kid is found only when it is the one of its kind */
	*ret = set;
	return 0;
}

/* ---- tokens ------------------------------------------------------------------------- */

static int invalid(p11g_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int invalid(p11g_err *err, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return p11g_err_set(err, P11G_E_TOKEN_INVALID, "ID token: %s", msg);
}

/* Compact JWS: three base64url parts, the signature not empty. */
static bool well_formed(const char *token, size_t len)
{
	size_t dots = 0, last = 0;
	for (size_t i = 0; i < len; i++) {
		char c = token[i];
		if (c == '.') {
			if (i == last)
				return false;
			dots++;
			last = i + 1;
		} else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		             (c >= '0' && c <= '9') || c == '-' || c == '_')) {
			return false;
		}
	}
	return dots == 2 && last < len;
}

static const struct jwks_key *key_for(const struct p11g_jwks *set, const char *kid, unsigned alg,
                                      const char *alg_name, bool *unknown_kid, p11g_err *err)
{
	const struct jwks_key *found = NULL;
	size_t fitting = 0;
	for (size_t i = 0; set && i < set->n; i++) {
		const struct jwks_key *k = &set->keys[i];
		if (kid && !strcmp(k->kid, kid)) {
			if (!key_fits(k, alg)) {
				invalid(err, "key \"%s\" is %s, which %s does not sign with", kid,
				        k->kty == CJOSE_JWK_KTY_RSA ? "RSA" : "EC on another curve",
				        alg_name);
				return NULL;
			}
			return k;
		}
		if (!kid && key_fits(k, alg)) {
			found = k;
			fitting++;
		}
	}
	if (kid) {
		if (unknown_kid)
			*unknown_kid = true;
		invalid(err, "no key \"%s\" in the issuer's key set", kid);
		return NULL;
	}
	if (fitting != 1) {
		invalid(err, "no \"kid\", and the issuer has %zu keys for %s", fitting, alg_name);
		return NULL;
	}
	return found;
}

static bool aud_has(const json_t *aud, const char *want)
{
	size_t i;
	const json_t *a;
	if (json_is_string(aud))
		return !strcmp(json_string_value(aud), want);
	json_array_foreach(aud, i, a) if (json_is_string(a) &&
	                                  !strcmp(json_string_value(a), want)) return true;
	return false;
}

/* A NumericDate: an integer (or a real, as some issuers write) of seconds. */
static bool numeric_date(const json_t *v, int64_t *ret)
{
	if (json_is_integer(v)) {
		*ret = (int64_t)json_integer_value(v);
		return true;
	}
	if (json_is_real(v) && json_real_value(v) > -9e15 && json_real_value(v) < 9e15) {
		*ret = (int64_t)json_real_value(v);
		return true;
	}
	return false;
}

static int check_claims(json_t *c, const struct p11g_idtoken_trust *t, int64_t now,
                        struct p11g_idtoken *ret, p11g_err *err)
{
	const char *iss = json_string_value(json_object_get(c, "iss")),
	           *sub = json_string_value(json_object_get(c, "sub")),
	           *jti = json_string_value(json_object_get(c, "jti"));
	const json_t *aud = json_object_get(c, "aud"), *exp = json_object_get(c, "exp"),
	             *nbf = json_object_get(c, "nbf"), *iat = json_object_get(c, "iat");
	int64_t e, v;

	if (!iss || strcmp(iss, t->issuer) != 0)
		return invalid(err, "issued by another issuer than %s", t->issuer);
	if (!aud || !aud_has(aud, t->audience))
		return invalid(err, "not for audience %s", t->audience);
	if (!exp || !numeric_date(exp, &e))
		return invalid(err, "no \"exp\"");
	if (now > e + P11G_IDTOKEN_SKEW)
		return invalid(err, "expired %" PRId64 " s ago", now - e);
	if (nbf && (!numeric_date(nbf, &v) || now + P11G_IDTOKEN_SKEW < v))
		return invalid(err, "not valid yet (\"nbf\")");
	if (iat && (!numeric_date(iat, &v) || v > now + P11G_IDTOKEN_SKEW))
		return invalid(err, "issued in the future (\"iat\")");
	if (!sub || !*sub)
		return invalid(err, "no \"sub\"");
	if (!jti || !printable(jti, P11G_IDTOKEN_JTI_MAX))
		return invalid(err,
		               "no \"jti\" of 1 to %d printable characters (a token that "
		               "cannot be told from its copies is refused)",
		               P11G_IDTOKEN_JTI_MAX);
	ret->iss = iss;
	ret->sub = sub;
	ret->jti = jti;
	ret->exp = e;
	return 0;
}

void p11g_idtoken_clear(struct p11g_idtoken *tok)
{
	json_decref(tok->claims);
	memset(tok, 0, sizeof(*tok));
}

int p11g_idtoken_verify(const char *token, size_t len, const struct p11g_idtoken_trust *t,
                        int64_t now, struct p11g_idtoken *ret, bool *unknown_kid, p11g_err *err)
{
	static const char *const foreign_keys[] = {"jwk", "jku", "x5u", "x5c", NULL};
	unsigned allowed = t->algs ? t->algs : P11G_ALG_DEFAULT;
	cjose_err cerr;
	uint8_t *plain = NULL;
	size_t plain_len = 0;

	memset(ret, 0, sizeof(*ret));
	if (unknown_kid)
		*unknown_kid = false;
	if (len > P11G_IDTOKEN_MAX)
		return invalid(err, "longer than %d bytes", P11G_IDTOKEN_MAX);
	if (!well_formed(token, len))
		return invalid(err, "not a signed JWT (three base64url parts)");
	cjose_jws_t *jws = cjose_jws_import(token, len, &cerr);
	if (!jws)
		return invalid(err, "not a signed JWT (%s)",
		               cerr.message ? cerr.message : "unreadable");
	json_t *hdr = (json_t *)cjose_jws_get_protected(jws);
	const char *alg_name = json_string_value(json_object_get(hdr, "alg")),
	           *kid = json_string_value(json_object_get(hdr, "kid")),
	           *typ = json_string_value(json_object_get(hdr, "typ"));
	unsigned alg = p11g_idtoken_alg(alg_name);
	int rc = -1;

	if (!alg_name)
		invalid(err, "no \"alg\"");
	else if (!alg)
		invalid(err, "algorithm %.16s is never accepted", alg_name);
	else if (!(alg & allowed))
		invalid(err, "algorithm %s is not one the issuer may use", alg_name);
	else if (json_object_get(hdr, "crit"))
		invalid(err, "\"crit\" header parameters are not understood");
	else if (json_object_get(hdr, "kid") && (!kid || !printable(kid, 127)))
		invalid(err, "\"kid\" is not 1 to 127 printable characters");
	else if (json_object_get(hdr, "typ") && (!typ || strcasecmp(typ, "JWT") != 0))
		invalid(err, "type is not JWT");
	else
		rc = 0;
	for (size_t i = 0; rc == 0 && foreign_keys[i]; i++)
		if (json_object_get(hdr, foreign_keys[i]))
			rc = invalid(
			    err, "brings its own key (\"%s\"); only the issuer's key set is used",
			    foreign_keys[i]);
	const struct jwks_key *k = NULL;
	if (rc == 0 && !(k = key_for(t->keys, kid, alg, alg_name, unknown_kid, err)))
		rc = -1;
	if (rc == 0 && !cjose_jws_verify(jws, k->jwk, &cerr))
		rc = invalid(err, "the signature does not verify with the issuer's key%s%s%s",
		             kid ? " \"" : "", kid ? kid : "", kid ? "\"" : "");
	if (rc == 0 && !cjose_jws_get_plaintext(jws, &plain, &plain_len, &cerr))
		rc = invalid(err, "no claims");
	if (rc == 0) {
		json_error_t jerr;
		ret->claims =
		    json_loadb((const char *)plain, plain_len, JSON_REJECT_DUPLICATES, &jerr);
		if (!json_is_object(ret->claims))
			rc = invalid(err, "its claims are not a JSON object");
		else
			rc = check_claims(ret->claims, t, now, ret, err);
	}
	if (rc == 0) {
		snprintf(ret->alg, sizeof(ret->alg), "%s", alg_name);
		snprintf(ret->kid, sizeof(ret->kid), "%s", kid ? kid : "");
	}
	cjose_jws_release(jws);
	if (rc < 0) {
		p11g_idtoken_clear(ret);
		return -1;
	}
	return 0;
}

/* ---- claims a rule requires --------------------------------------------------------- */

bool p11g_glob_match(const char *p, const char *s)
{
	const char *star = NULL, *resume = NULL;
	while (*s) {
		if (*p == '*') {
			star = p++;
			resume = s;
		} else if (*p == *s) {
			p++;
			s++;
		} else if (star) {
			p = star + 1;
			s = ++resume;
		} else {
			return false;
		}
	}
	while (*p == '*')
		p++;
	return !*p;
}

int p11g_claims_match(const json_t *claims, const json_t *match, char *why, size_t n)
{
	const char *name;
	const json_t *pattern;
	json_object_foreach((json_t *)match, name, pattern)
	{
		const char *pat = json_string_value(pattern);
		const json_t *v = json_object_get(claims, name), *e;
		size_t i;
		bool ok = false;
		if (!pat)
			ok = false;
		else if (json_is_string(v))
			ok = p11g_glob_match(pat, json_string_value(v));
		else if (json_is_array(v))
			json_array_foreach(v, i, e) ok =
			    ok || (json_is_string(e) && p11g_glob_match(pat, json_string_value(e)));
		if (!ok) {
			snprintf(why, n, "claim %s %s %s", name,
			         !v ? "is missing, and must match"
			         : json_is_string(v) || json_is_array(v) ? "does not match"
			                                                 : "is no string to match",
			         pat ? pat : "?");
			return 1;
		}
	}
	return 0;
}
