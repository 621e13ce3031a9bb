/* Pipeline identity in policy texts (issue 19): the top-level "issuers" (trusted issuers of
 * CI ID tokens) and a rule's "claims" and "actor_claim", parsed strictly with
 * file:line:column messages. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"

/* ---- pipeline identity: claims and issuers ------------------------------------ */

#define CLAIM_NAME_MAX    64
#define CLAIM_PATTERN_MAX 256
#define ISSUER_TEXT_MAX   256
#define ISSUER_URL_MAX    2048

/* A claim's name: 1 to 64 of A-Z a-z 0-9 _ . : - (every claim GitHub and GitLab send). */
static bool valid_claim_name(const char *s, size_t len)
{
	if (len == 0 || len > CLAIM_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("_.:-", s[i]))
			return false;
	return true;
}

/* Text a person wrote for a claim or an issuer: no control characters. */
static bool plain_text(const char *s, size_t len, size_t max)
{
	if (len == 0 || len > max)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

int pol_claim_name_member(struct rule_ctx *c, const struct pjson_member *m, char **ret)
{
	if (pol_expect_type(c, m, PJSON_STRING) < 0)
		return -1;
	if (!valid_claim_name(m->value->u.str.s, m->value->u.str.len))
		return pol_fail_at_value(c, m->value,
		                         "bad claim name \"%s\": 1 to %d of A-Z a-z 0-9 _ . : -",
		                         m->value->u.str.s, CLAIM_NAME_MAX);
	return (*ret = strdup(m->value->u.str.s)) ? 0 : pol_fail_oom(c);
}

/* "claims": {"issuer": NAME, "match": {CLAIM: PATTERN, ...}}. */
int pol_parse_claims(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r)
{
	const struct pjson_value *v = m->value;
	const struct pjson_member *issuer = NULL, *match = NULL;

	if (pol_expect_type(c, m, PJSON_OBJECT) < 0)
		return -1;
	if (!(r->claims = calloc(1, sizeof(*r->claims))))
		return pol_fail_oom(c);
	for (size_t i = 0; i < v->u.obj.n; i++) {
		const struct pjson_member *e = &v->u.obj.v[i];
		if (strcmp(e->name, "issuer") == 0) {
			issuer = e;
			if (pol_expect_type(c, e, PJSON_STRING) < 0)
				return -1;
			if (!pol_valid_rule_name(e->value->u.str.s, e->value->u.str.len))
				return pol_fail_at_value(c, e->value, "bad issuer name \"%s\"",
				                         e->value->u.str.s);
			if (!(r->claims->issuer = strdup(e->value->u.str.s)))
				return pol_fail_oom(c);
			r->claims->line = e->value->line;
			r->claims->column = e->value->column;
		} else if (strcmp(e->name, "match") == 0) {
			const struct pjson_value *mv = e->value;
			match = e;
			if (pol_expect_type(c, e, PJSON_OBJECT) < 0)
				return -1;
			if (mv->u.obj.n > P11G_CLAIMS_MATCH_MAX)
				return pol_fail_at_value(c, mv,
				                         "\"match\" names more than %d claims",
				                         P11G_CLAIMS_MATCH_MAX);
			r->claims->names = calloc(mv->u.obj.n + 1, sizeof(char *));
			r->claims->patterns = calloc(mv->u.obj.n + 1, sizeof(char *));
			if (!r->claims->names || !r->claims->patterns)
				return pol_fail_oom(c);
			for (size_t k = 0; k < mv->u.obj.n; k++) {
				const struct pjson_member *cm = &mv->u.obj.v[k];
				if (!valid_claim_name(cm->name, cm->name_len))
					return pol_fail_at(
					    c->err, c->file, cm->line, cm->column,
					    "bad claim name \"%s\": 1 to %d of A-Z a-z 0-9 _ "
					    ". : -",
					    cm->name, CLAIM_NAME_MAX);
				if (pol_expect_type(c, cm, PJSON_STRING) < 0)
					return -1;
				if (!plain_text(cm->value->u.str.s, cm->value->u.str.len,
				                CLAIM_PATTERN_MAX))
					return pol_fail_at_value(
					    c, cm->value,
					    "a claim's pattern is 1 to %d bytes, no "
					    "control characters",
					    CLAIM_PATTERN_MAX);
				if (!(r->claims->names[k] = strdup(cm->name)) ||
				    !(r->claims->patterns[k] = strdup(cm->value->u.str.s)))
					return pol_fail_oom(c);
				r->claims->n = k + 1;
			}
		} else {
			return pol_fail_unknown(c, e,
			                        "\"claims\" (expected \"issuer\" and \"match\")");
		}
	}
	if (!issuer)
		return pol_fail_at_value(c, v,
		                         "\"claims\" needs \"issuer\" (one of the policy's "
		                         "\"issuers\")");
	/* any repository can have a token of a public CI issuer made for any audience: a rule
	 * must say which pipelines it trusts */
	bool constrains = false;
	for (size_t k = 0; k < r->claims->n && !constrains; k++)
		constrains = strspn(r->claims->patterns[k], "*") != strlen(r->claims->patterns[k]);
	if (!constrains)
		return pol_fail_at_value(c, match ? match->value : v,
		                         "\"claims\" needs \"match\" with at least one claim "
		                         "pattern other than \"*\" (which pipelines are trusted: "
		                         "any project can get a token of a public CI issuer)");
	return 0;
}

void pol_issuer_clear(struct p11g_issuer *is)
{
	free(is->name);
	free(is->issuer);
	free(is->audience);
	free(is->jwks_file);
	free(is->jwks_url);
	free(is->jwks_ca_file);
	for (size_t i = 0; i < is->n_algorithms; i++)
		free(is->algorithms[i]);
	free(is->algorithms);
	for (size_t i = 0; i < is->n_show; i++)
		free(is->show[i]);
	free(is->show);
	free(is->file);
	memset(is, 0, sizeof(*is));
}

/* The algorithms an issuer may sign with: RSA (PKCS#1 v1.5 and PSS) and ECDSA. */
static const char *const issuer_algs[] = {"RS256", "RS384", "RS512", "PS256", "PS384",
                                          "PS512", "ES256", "ES384", "ES512", NULL};

static int issuer_string(struct rule_ctx *c, const struct pjson_member *m, const char *prefix,
                         size_t max, char **ret)
{
	if (pol_expect_type(c, m, PJSON_STRING) < 0)
		return -1;
	const char *s = m->value->u.str.s;
	if (!plain_text(s, m->value->u.str.len, max) ||
	    (prefix && (strncmp(s, prefix, strlen(prefix)) != 0 || !s[strlen(prefix)])))
		return pol_fail_at_value(c, m->value, "\"%s\" must be %s%s%s (1 to %zu bytes)",
		                         m->name,
		                         !prefix                ? "text"
		                         : !strcmp(prefix, "/") ? "an absolute path"
		                                                : "a URL starting with ",
		                         prefix && strcmp(prefix, "/") ? prefix : "",
		                         prefix ? "" : " without control characters", max);
	if (*ret)
		free(*ret);
	return (*ret = strdup(s)) ? 0 : pol_fail_oom(c);
}

static int parse_issuer(struct rule_ctx *c, const struct pjson_value *v, struct p11g_issuer *is)
{
	const struct pjson_member *name = NULL, *iss = NULL, *aud = NULL, *file = NULL, *url = NULL,
	                          *ca = NULL;

	if (v->type != PJSON_OBJECT)
		return pol_fail_at_value(c, v, "an issuer must be an object, not %s",
		                         pjson_type_name(v->type));
	if (!(is->file = strdup(c->file)))
		return pol_fail_oom(c);
	is->line = v->line;
	is->column = v->column;
	for (size_t i = 0; i < v->u.obj.n; i++) {
		const struct pjson_member *m = &v->u.obj.v[i];
		int r;
		if (strcmp(m->name, "name") == 0) {
			name = m;
			if (pol_expect_type(c, m, PJSON_STRING) < 0)
				return -1;
			if (!pol_valid_rule_name(m->value->u.str.s, m->value->u.str.len))
				return pol_fail_at_value(
				    c, m->value,
				    "bad issuer name \"%s\": 1 to %d of A-Z a-z 0-9 . _ -",
				    m->value->u.str.s, RULE_NAME_MAX);
			r = (is->name = strdup(m->value->u.str.s)) ? 0 : pol_fail_oom(c);
		} else if (strcmp(m->name, "issuer") == 0) {
			iss = m;
			r = issuer_string(c, m, "https://", ISSUER_TEXT_MAX, &is->issuer);
		} else if (strcmp(m->name, "audience") == 0) {
			aud = m;
			r = issuer_string(c, m, NULL, ISSUER_TEXT_MAX, &is->audience);
		} else if (strcmp(m->name, "jwks_file") == 0) {
			file = m;
			r = issuer_string(c, m, "/", ISSUER_URL_MAX, &is->jwks_file);
		} else if (strcmp(m->name, "jwks_url") == 0) {
			url = m;
			r = issuer_string(c, m, "https://", ISSUER_URL_MAX, &is->jwks_url);
		} else if (strcmp(m->name, "jwks_ca_file") == 0) {
			ca = m;
			r = issuer_string(c, m, "/", ISSUER_URL_MAX, &is->jwks_ca_file);
		} else if (strcmp(m->name, "algorithms") == 0 || strcmp(m->name, "show") == 0) {
			bool algs = m->name[0] == 'a';
			const struct pjson_value *a = m->value;
			if (pol_expect_strings(c, m, algs) < 0)
				return -1;
			size_t max = algs ? 16 : P11G_ISSUER_SHOW_MAX;
			if (a->u.arr.n > max)
				return pol_fail_at_value(c, a, "\"%s\" has more than %zu entries",
				                         m->name, max);
			char ***list = algs ? &is->algorithms : &is->show;
			size_t *n = algs ? &is->n_algorithms : &is->n_show;
			if (!(*list = calloc(a->u.arr.n + 1, sizeof(char *))))
				return pol_fail_oom(c);
			for (size_t k = 0; k < a->u.arr.n; k++) {
				const struct pjson_value *e = a->u.arr.v[k];
				size_t j = 0;
				if (algs) {
					for (; issuer_algs[j] && strcmp(issuer_algs[j], e->u.str.s);
					     j++)
						;
					if (!issuer_algs[j])
						return pol_fail_at_value(
						    c, e,
						    "algorithm \"%s\" is never accepted (RS256, "
						    "RS384, RS512, "
						    "PS256, PS384, PS512, ES256, ES384, ES512; "
						    "never none or "
						    "an HMAC)",
						    e->u.str.s);
				} else if (!valid_claim_name(e->u.str.s, e->u.str.len)) {
					return pol_fail_at_value(
					    c, e,
					    "bad claim name \"%s\": 1 to %d of A-Z a-z 0-9 _ "
					    ". : -",
					    e->u.str.s, CLAIM_NAME_MAX);
				}
				if (!((*list)[k] = strdup(e->u.str.s)))
					return pol_fail_oom(c);
				*n = k + 1;
			}
			r = 0;
		} else {
			r = pol_fail_unknown(
			    c, m,
			    "an issuer (expected \"name\", \"issuer\", \"audience\", "
			    "\"jwks_file\" or \"jwks_url\", \"jwks_ca_file\", \"algorithms\", "
			    "\"show\")");
		}
		if (r < 0)
			return -1;
	}
	if (!name || !iss || !aud)
		return pol_fail_at_value(c, v, "an issuer needs \"%s\"",
		                         !name  ? "name"
		                         : !iss ? "issuer"
		                                : "audience");
	if (!file == !url)
		return pol_fail_at_value(c, file && url ? url->value : v,
		                         "an issuer needs one of \"jwks_file\" and \"jwks_url\"%s",
		                         file && url ? ", not both" : "");
	if (ca && !url)
		return pol_fail_at_value(
		    c, ca->value,
		    "\"jwks_ca_file\" is for \"jwks_url\" (the CA certificates "
		    "its TLS server is verified with)");
	if (!is->n_algorithms) {
		if (!(is->algorithms = calloc(3, sizeof(char *))) ||
		    !(is->algorithms[0] = strdup("RS256")) ||
		    !(is->algorithms[1] = strdup("ES256")))
			return pol_fail_oom(c);
		is->n_algorithms = 2;
	}
	return 0;
}

int pol_loader_add_issuers(struct p11g_policy_builder *ld, struct rule_ctx *c,
                           const struct pjson_member *m)
{
	struct p11g_policy *p = ld->pol;
	if (pol_expect_type(c, m, PJSON_ARRAY) < 0)
		return -1;
	for (size_t k = 0; k < m->value->u.arr.n; k++) {
		struct p11g_issuer is = {0};
		const struct pjson_value *v = m->value->u.arr.v[k];
		if (parse_issuer(c, v, &is) < 0) {
			pol_issuer_clear(&is);
			return -1;
		}
		const struct p11g_issuer *dup = p11g_policy_issuer(p, is.name);
		if (dup) {
			pol_fail_at_value(c, v,
			                  "issuer \"%s\" is defined twice (first at %s:%u:%u)",
			                  is.name, dup->file, dup->line, dup->column);
			pol_issuer_clear(&is);
			return -1;
		}
		struct p11g_issuer *n = reallocarray(p->issuers, p->n_issuers + 1, sizeof(*n));
		if (!n) {
			pol_issuer_clear(&is);
			return pol_fail_oom(c);
		}
		p->issuers = n;
		p->issuers[p->n_issuers++] = is;
	}
	return 0;
}

const struct p11g_issuer *p11g_policy_issuer(const struct p11g_policy *p, const char *name)
{
	for (size_t i = 0; p && name && i < p->n_issuers; i++)
		if (!strcmp(p->issuers[i].name, name))
			return &p->issuers[i];
	return NULL;
}
