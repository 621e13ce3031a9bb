/* Policy texts: strict rule checks with file:line:column messages, matching, snapshots. */
#include <ctype.h>

#include <openssl/evp.h>

#include "policy/policy.h"
#include "policy/pjson.h"
#include "p11gate/mech.h"
#include "p11gate/errors.h"
#include "p11gate/kvconf.h"

#define RULE_NAME_MAX 64
#define COUNT_MAX     1000 /* approvals and clause counts: a resource limit, not policy */
#define MAX_USES_MAX  1000000
#define SNAPSHOT_NAME "<rule snapshot>"

/* ---- messages ------------------------------------------------------------ */

/* A bad policy text: bad_request "file:line:column: message" (kvconf.h's form); -1. */
__attribute__((format(printf, 5, 6))) static int
fail_at(p11g_err *e, const char *file, unsigned line, unsigned column, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	p11g_err_vset_at(e, P11G_E_BAD_REQUEST, file, line, column, fmt, ap);
	va_end(ap);
	return -1;
}

/* The shortest exact form: 86400 -> "1d", 90 -> "90s". */
static void duration_format(uint64_t secs, char *buf, size_t size)
{
	if (secs % 86400 == 0)
		snprintf(buf, size, "%llud", (unsigned long long)(secs / 86400));
	else if (secs % 3600 == 0)
		snprintf(buf, size, "%lluh", (unsigned long long)(secs / 3600));
	else if (secs % 60 == 0)
		snprintf(buf, size, "%llum", (unsigned long long)(secs / 60));
	else
		snprintf(buf, size, "%llus", (unsigned long long)secs);
}

/* ---- rules: freeing ----------------------------------------------------------- */

static void principals_clear(struct p11g_principals *ps)
{
	for (size_t i = 0; i < ps->n; i++)
		p11g_principal_clear(&ps->v[i]);
	free(ps->v);
	ps->v = NULL;
	ps->n = 0;
}

static void rule_clear(struct p11g_rule *r)
{
	free(r->name);
	for (size_t i = 0; i < r->n_keys; i++) {
		if (r->keys)
			free(r->keys[i]);
		if (r->key_uris && r->key_uris[i])
			p11_kit_uri_free(r->key_uris[i]);
	}
	free(r->keys);
	free(r->key_uris);
	principals_clear(&r->orderers);
	principals_clear(&r->auto_approve);
	principals_clear(&r->admins);
	for (size_t i = 0; i < r->n_quorum; i++)
		principals_clear(&r->quorum[i].from);
	free(r->quorum);
	free(r->mechanisms);
	for (size_t i = 0; i < r->n_registries; i++)
		free(r->registries[i]);
	free(r->registries);
	if (r->claims) {
		for (size_t i = 0; i < r->claims->n; i++) {
			free(r->claims->names[i]);
			free(r->claims->patterns[i]);
		}
		free(r->claims->names);
		free(r->claims->patterns);
		free(r->claims->issuer);
		free(r->claims->actor_claim);
		free(r->claims);
	}
	free(r->file);
	memset(r, 0, sizeof(*r));
}

void p11g_rule_free(struct p11g_rule *r)
{
	if (!r)
		return;
	rule_clear(r);
	free(r);
}

/* ---- rules: parsing ------------------------------------------------------------ */

struct rule_ctx {
	const char *file;
	p11g_err *err;
	bool snapshot; /* accept "defined_at", written by p11g_rule_to_json */
};

static int fail_at_value(struct rule_ctx *c, const struct pjson_value *v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_at_value(struct rule_ctx *c, const struct pjson_value *v, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	p11g_err_vset_at(c->err, P11G_E_BAD_REQUEST, c->file, v->line, v->column, fmt, ap);
	va_end(ap);
	return -1;
}

static int fail_oom(struct rule_ctx *c)
{
	return p11g_err_set_at(c->err, P11G_E_INTERNAL, c->file, 0, 0, "out of memory");
}

static int expect_type(struct rule_ctx *c, const struct pjson_member *m, enum pjson_type t)
{
	if (m->value->type == t)
		return 0;
	return fail_at_value(c, m->value, "\"%s\" must be %s, not %s", m->name, pjson_type_name(t),
	                     pjson_type_name(m->value->type));
}

static int expect_int(struct rule_ctx *c, const struct pjson_member *m, int64_t lo, int64_t hi,
                      int64_t *ret)
{
	if (expect_type(c, m, PJSON_INT) < 0)
		return -1;
	if (m->value->u.i < lo || m->value->u.i > hi)
		return fail_at_value(c, m->value, "\"%s\" must be between %lld and %lld", m->name,
		                     (long long)lo, (long long)hi);
	*ret = m->value->u.i;
	return 0;
}

/* An array member whose entries are all strings; non_empty refuses []. */
static int expect_strings(struct rule_ctx *c, const struct pjson_member *m, bool non_empty)
{
	if (expect_type(c, m, PJSON_ARRAY) < 0)
		return -1;
	if (non_empty && m->value->u.arr.n == 0)
		return fail_at_value(c, m->value, "\"%s\" must not be empty", m->name);
	for (size_t i = 0; i < m->value->u.arr.n; i++) {
		const struct pjson_value *e = m->value->u.arr.v[i];
		if (e->type != PJSON_STRING)
			return fail_at_value(c, e, "entries of \"%s\" must be strings, not %s",
			                     m->name, pjson_type_name(e->type));
	}
	return 0;
}

static int parse_principals(struct rule_ctx *c, const struct pjson_member *m, bool non_empty,
                            struct p11g_principals *ret)
{
	const struct pjson_value *a = m->value;
	struct p11g_principals ps = {0};

	if (expect_strings(c, m, non_empty) < 0)
		return -1;
	if (a->u.arr.n) {
		ps.v = calloc(a->u.arr.n, sizeof(*ps.v));
		if (!ps.v)
			return fail_oom(c);
	}
	for (size_t i = 0; i < a->u.arr.n; i++) {
		p11g_err e;
		if (p11g_principal_parse(a->u.arr.v[i]->u.str.s, &ps.v[i], &e) < 0) {
			principals_clear(&ps);
			return fail_at_value(c, a->u.arr.v[i], "%s", e.msg);
		}
		ps.n = i + 1;
	}
	principals_clear(ret);
	*ret = ps;
	return 0;
}

static bool valid_rule_name(const char *s, size_t len)
{
	if (len == 0 || len > RULE_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

/* The same path attribute twice is legal for p11-kit (the last one wins),
 * which hides typos such as object=a;object=b. */
static bool uri_has_repeated_attribute(const char *uri, char *name, size_t name_size)
{
	const char *path = strchr(uri, ':');
	if (!path)
		return false;
	path++;
	size_t path_len = strcspn(path, "?");
	for (size_t i = 0; i < path_len;) {
		size_t seg = strcspn(path + i, ";?");
		if (seg > path_len - i)
			seg = path_len - i;
		size_t nlen = strcspn(path + i, "=;?");
		if (nlen > seg)
			nlen = seg;
		/* Look for the same name in every later segment. */
		for (size_t j = i + seg + 1; j < path_len;) {
			size_t seg2 = strcspn(path + j, ";?");
			if (seg2 > path_len - j)
				seg2 = path_len - j;
			size_t nlen2 = strcspn(path + j, "=;?");
			if (nlen2 > seg2)
				nlen2 = seg2;
			if (nlen && nlen == nlen2 && memcmp(path + i, path + j, nlen) == 0) {
				snprintf(name, name_size, "%.*s", (int)nlen, path + i);
				return true;
			}
			j += seg2 + 1;
		}
		i += seg + 1;
	}
	return false;
}

static int parse_key(struct rule_ctx *c, const struct pjson_value *v, P11KitUri **ret)
{
	const char *s = v->u.str.s;
	p11g_err e;
	char name[64];

	if (v->u.str.len > P11G_KEY_URI_MAX)
		return fail_at_value(c, v, "key URI longer than %d bytes", P11G_KEY_URI_MAX);
	if (strchr(s, '?'))
		return fail_at_value(c, v,
		                     "bad key URI \"%s\": query attributes (after '?') have no "
		                     "meaning in a policy",
		                     s);
	if (p11g_keyuri_parse(s, ret, &e) < 0)
		return fail_at_value(c, v, "%s", e.msg);
	if (uri_has_repeated_attribute(s, name, sizeof(name)))
		return fail_at_value(c, v, "bad key URI \"%s\": \"%s\" given twice", s, name);
	return 0;
}

static int parse_keys(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r)
{
	const struct pjson_value *a = m->value;

	if (expect_strings(c, m, true) < 0)
		return -1;
	r->keys = calloc(a->u.arr.n, sizeof(*r->keys));
	r->key_uris = calloc(a->u.arr.n, sizeof(*r->key_uris));
	if (!r->keys || !r->key_uris)
		return fail_oom(c);
	r->n_keys = a->u.arr.n;
	for (size_t i = 0; i < a->u.arr.n; i++) {
		if (parse_key(c, a->u.arr.v[i], &r->key_uris[i]) < 0)
			return -1;
		r->keys[i] = strdup(a->u.arr.v[i]->u.str.s);
		if (!r->keys[i])
			return fail_oom(c);
	}
	return 0;
}

static int parse_mechanisms(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r)
{
	const struct pjson_value *a = m->value;

	if (expect_strings(c, m, true) < 0)
		return -1;
	r->mechanisms = calloc(a->u.arr.n, sizeof(*r->mechanisms));
	if (!r->mechanisms)
		return fail_oom(c);
	for (size_t i = 0; i < a->u.arr.n; i++) {
		const struct p11g_mech_info *mi = p11g_mech_by_name(a->u.arr.v[i]->u.str.s);
		if (!mi)
			return fail_at_value(c, a->u.arr.v[i], "unknown mechanism \"%s\"",
			                     a->u.arr.v[i]->u.str.s);
		for (size_t j = 0; j < i; j++)
			if (r->mechanisms[j] == mi->type)
				return fail_at_value(c, a->u.arr.v[i], "%s is listed twice",
				                     mi->name);
		r->mechanisms[i] = mi->type;
		r->n_mechanisms = i + 1;
	}
	return 0;
}

static bool valid_dns_name(const char *s, size_t len)
{
	size_t label = 0;
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (ch == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
		} else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		           (ch >= '0' && ch <= '9') || (ch == '-' && label > 0)) {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label > 0 && s[len - 1] != '-';
}

/* host, host:port, [ipv6] or [ipv6]:port */
static bool valid_registry(const char *s)
{
	size_t len = strlen(s), host_len;
	const char *port = NULL;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close == s + 1)
			return false;
		for (const char *p = s + 1; p < close; p++)
			if (p11g_hex_digit(*p) < 0 && *p != ':' && *p != '.')
				return false;
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			return false;
	} else {
		const char *colon = strchr(s, ':');
		host_len = colon ? (size_t)(colon - s) : len;
		if (!valid_dns_name(s, host_len))
			return false;
		if (colon)
			port = colon + 1;
	}
	if (port) {
		unsigned long v = 0;
		size_t n = strlen(port);
		if (n == 0 || n > 5 || port[0] == '0')
			return false;
		for (size_t i = 0; i < n; i++) {
			if (port[i] < '0' || port[i] > '9')
				return false;
			v = v * 10 + (unsigned long)(port[i] - '0');
		}
		if (v > 65535)
			return false;
	}
	return true;
}

static int parse_registries(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r)
{
	const struct pjson_value *a = m->value;

	/* Empty would read as "no registry" but behave as "any": refuse it. */
	if (expect_strings(c, m, true) < 0)
		return -1;
	r->registries = calloc(a->u.arr.n, sizeof(*r->registries));
	if (!r->registries)
		return fail_oom(c);
	for (size_t i = 0; i < a->u.arr.n; i++) {
		if (!valid_registry(a->u.arr.v[i]->u.str.s))
			return fail_at_value(c, a->u.arr.v[i],
			                     "bad registry \"%s\": expected host or host:port",
			                     a->u.arr.v[i]->u.str.s);
		r->registries[i] = strdup(a->u.arr.v[i]->u.str.s);
		if (!r->registries[i])
			return fail_oom(c);
		r->n_registries = i + 1;
	}
	return 0;
}

static int fail_unknown(struct rule_ctx *c, const struct pjson_member *m, const char *where)
{
	return fail_at(c->err, c->file, m->line, m->column, "unknown member \"%s\" in %s", m->name,
	               where);
}

static int parse_clause(struct rule_ctx *c, const struct pjson_value *v, struct p11g_clause *ret)
{
	const struct pjson_member *from = NULL, *count = NULL;
	int64_t n;

	if (v->type != PJSON_OBJECT)
		return fail_at_value(c, v, "entries of \"quorum\" must be objects, not %s",
		                     pjson_type_name(v->type));
	for (size_t i = 0; i < v->u.obj.n; i++) {
		const struct pjson_member *m = &v->u.obj.v[i];
		if (strcmp(m->name, "from") == 0)
			from = m;
		else if (strcmp(m->name, "count") == 0)
			count = m;
		else
			return fail_unknown(c, m, "quorum clause");
	}
	if (!from)
		return fail_at_value(c, v, "quorum clause is missing \"from\"");
	if (!count)
		return fail_at_value(c, v, "quorum clause is missing \"count\"");
	if (parse_principals(c, from, true, &ret->from) < 0 ||
	    expect_int(c, count, 1, COUNT_MAX, &n) < 0)
		return -1;
	ret->count = (unsigned)n;
	return 0;
}

static int parse_quorum(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r)
{
	const struct pjson_value *a = m->value;

	if (expect_type(c, m, PJSON_ARRAY) < 0)
		return -1;
	if (a->u.arr.n == 0)
		return fail_at_value(c, a, "\"quorum\" must not be empty");
	r->quorum = calloc(a->u.arr.n, sizeof(*r->quorum));
	if (!r->quorum)
		return fail_oom(c);
	for (size_t i = 0; i < a->u.arr.n; i++) {
		r->n_quorum = i + 1;
		if (parse_clause(c, a->u.arr.v[i], &r->quorum[i]) < 0)
			return -1;
	}
	return 0;
}

static int parse_defined_at(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r)
{
	const struct pjson_member *file = NULL, *line = NULL, *column = NULL;
	int64_t l, col;

	if (expect_type(c, m, PJSON_OBJECT) < 0)
		return -1;
	for (size_t i = 0; i < m->value->u.obj.n; i++) {
		const struct pjson_member *f = &m->value->u.obj.v[i];
		if (strcmp(f->name, "file") == 0)
			file = f;
		else if (strcmp(f->name, "line") == 0)
			line = f;
		else if (strcmp(f->name, "column") == 0)
			column = f;
		else
			return fail_unknown(c, f, "\"defined_at\"");
	}
	if (!file || !line || !column)
		return fail_at_value(c, m->value, "\"defined_at\" needs file, line and column");
	if (expect_type(c, file, PJSON_STRING) < 0 || expect_int(c, line, 1, UINT32_MAX, &l) < 0 ||
	    expect_int(c, column, 1, UINT32_MAX, &col) < 0)
		return -1;
	char *f = strdup(file->value->u.str.s);
	if (!f)
		return fail_oom(c);
	free(r->file);
	r->file = f;
	r->line = (unsigned)l;
	r->column = (unsigned)col;
	return 0;
}

/* Members seen, for the checks that involve more than one. */
struct rule_seen {
	const struct pjson_member *name, *keys, *orderers, *approvers, *approvals, *quorum,
	    *mechanisms, *allow_raw, *defined_at, *claims, *actor_claim;
	int64_t approvals_n;
};

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

static int claim_name_member(struct rule_ctx *c, const struct pjson_member *m, char **ret)
{
	if (expect_type(c, m, PJSON_STRING) < 0)
		return -1;
	if (!valid_claim_name(m->value->u.str.s, m->value->u.str.len))
		return fail_at_value(c, m->value,
		                     "bad claim name \"%s\": 1 to %d of A-Z a-z 0-9 _ . : -",
		                     m->value->u.str.s, CLAIM_NAME_MAX);
	return (*ret = strdup(m->value->u.str.s)) ? 0 : fail_oom(c);
}

/* "claims": {"issuer": NAME, "match": {CLAIM: PATTERN, ...}}. */
static int parse_claims(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r)
{
	const struct pjson_value *v = m->value;
	const struct pjson_member *issuer = NULL;

	if (expect_type(c, m, PJSON_OBJECT) < 0)
		return -1;
	if (!(r->claims = calloc(1, sizeof(*r->claims))))
		return fail_oom(c);
	for (size_t i = 0; i < v->u.obj.n; i++) {
		const struct pjson_member *e = &v->u.obj.v[i];
		if (strcmp(e->name, "issuer") == 0) {
			issuer = e;
			if (expect_type(c, e, PJSON_STRING) < 0)
				return -1;
			if (!valid_rule_name(e->value->u.str.s, e->value->u.str.len))
				return fail_at_value(c, e->value, "bad issuer name \"%s\"",
				                     e->value->u.str.s);
			if (!(r->claims->issuer = strdup(e->value->u.str.s)))
				return fail_oom(c);
			r->claims->line = e->value->line;
			r->claims->column = e->value->column;
		} else if (strcmp(e->name, "match") == 0) {
			const struct pjson_value *mv = e->value;
			if (expect_type(c, e, PJSON_OBJECT) < 0)
				return -1;
			if (mv->u.obj.n > P11G_CLAIMS_MATCH_MAX)
				return fail_at_value(c, mv, "\"match\" names more than %d claims",
				                     P11G_CLAIMS_MATCH_MAX);
			r->claims->names = calloc(mv->u.obj.n + 1, sizeof(char *));
			r->claims->patterns = calloc(mv->u.obj.n + 1, sizeof(char *));
			if (!r->claims->names || !r->claims->patterns)
				return fail_oom(c);
			for (size_t k = 0; k < mv->u.obj.n; k++) {
				const struct pjson_member *cm = &mv->u.obj.v[k];
				if (!valid_claim_name(cm->name, cm->name_len))
					return fail_at(
					    c->err, c->file, cm->line, cm->column,
					    "bad claim name \"%s\": 1 to %d of A-Z a-z 0-9 _ "
					    ". : -",
					    cm->name, CLAIM_NAME_MAX);
				if (expect_type(c, cm, PJSON_STRING) < 0)
					return -1;
				if (!plain_text(cm->value->u.str.s, cm->value->u.str.len,
				                CLAIM_PATTERN_MAX))
					return fail_at_value(
					    c, cm->value,
					    "a claim's pattern is 1 to %d bytes, no "
					    "control characters",
					    CLAIM_PATTERN_MAX);
				if (!(r->claims->names[k] = strdup(cm->name)) ||
				    !(r->claims->patterns[k] = strdup(cm->value->u.str.s)))
					return fail_oom(c);
				r->claims->n = k + 1;
			}
		} else {
			return fail_unknown(c, e, "\"claims\" (expected \"issuer\" and \"match\")");
		}
	}
	if (!issuer)
		return fail_at_value(c, v,
		                     "\"claims\" needs \"issuer\" (one of the policy's "
		                     "\"issuers\")");
	return 0;
}

static int parse_rule_member(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r,
                             struct rule_seen *seen)
{
	const char *n = m->name;
	int64_t v;

	if (strcmp(n, "name") == 0) {
		seen->name = m;
		if (expect_type(c, m, PJSON_STRING) < 0)
			return -1;
		if (!valid_rule_name(m->value->u.str.s, m->value->u.str.len))
			return fail_at_value(c, m->value,
			                     "bad rule name \"%s\": 1 to %d of A-Z a-z 0-9 . _ -",
			                     m->value->u.str.s, RULE_NAME_MAX);
		r->name = strdup(m->value->u.str.s);
		return r->name ? 0 : fail_oom(c);
	}
	if (strcmp(n, "keys") == 0) {
		seen->keys = m;
		return parse_keys(c, m, r);
	}
	if (strcmp(n, "orderers") == 0) {
		seen->orderers = m;
		return parse_principals(c, m, false, &r->orderers);
	}
	if (strcmp(n, "approvers") == 0) {
		struct p11g_principals check = {0};
		seen->approvers = m;
		/* Checked here so errors come in document order; made into a
		 * clause once "approvals" is known. */
		if (parse_principals(c, m, false, &check) < 0)
			return -1;
		principals_clear(&check);
		return 0;
	}
	if (strcmp(n, "approvals") == 0) {
		seen->approvals = m;
		return expect_int(c, m, 0, COUNT_MAX, &seen->approvals_n);
	}
	if (strcmp(n, "quorum") == 0) {
		seen->quorum = m;
		return parse_quorum(c, m, r);
	}
	if (strcmp(n, "auto_approve") == 0)
		return parse_principals(c, m, false, &r->auto_approve);
	if (strcmp(n, "admins") == 0)
		return parse_principals(c, m, false, &r->admins);
	if (strcmp(n, "max_uses") == 0) {
		if (expect_int(c, m, 1, MAX_USES_MAX, &v) < 0)
			return -1;
		r->max_uses = (uint64_t)v;
		return 0;
	}
	if (strcmp(n, "max_validity") == 0) {
		if (expect_type(c, m, PJSON_STRING) < 0)
			return -1;
		v = p11g_duration_parse(m->value->u.str.s);
		if (v < 0)
			return fail_at_value(c, m->value,
			                     "bad duration \"%s\": expected a positive number and "
			                     "one of s, m, h, d (at most 10 years)",
			                     m->value->u.str.s);
		r->max_validity = (uint64_t)v;
		return 0;
	}
	if (strcmp(n, "mechanisms") == 0) {
		seen->mechanisms = m;
		return parse_mechanisms(c, m, r);
	}
	if (strcmp(n, "allow_raw") == 0) {
		seen->allow_raw = m;
		if (expect_type(c, m, PJSON_BOOL) < 0)
			return -1;
		r->allow_raw = m->value->u.b;
		return 0;
	}
	if (strcmp(n, "bind_digest") == 0) {
		if (expect_type(c, m, PJSON_BOOL) < 0)
			return -1;
		r->bind_digest = m->value->u.b;
		return 0;
	}
	if (strcmp(n, "registries") == 0)
		return parse_registries(c, m, r);
	if (strcmp(n, "claims") == 0) {
		seen->claims = m;
		return parse_claims(c, m, r);
	}
	if (strcmp(n, "actor_claim") == 0) {
		seen->actor_claim = m;
		return 0; /* kept once "claims" is known, wherever it stands */
	}
	if (c->snapshot && strcmp(n, "defined_at") == 0) {
		seen->defined_at = m;
		return parse_defined_at(c, m, r);
	}
	return fail_unknown(c, m, "rule");
}

static bool before(const struct pjson_member *a, const struct pjson_member *b)
{
	return a->line < b->line || (a->line == b->line && a->column < b->column);
}

/* Fills *r (zeroed by the caller) from one rule object; on error r holds
 * partial state for rule_clear. */
static int parse_rule(struct rule_ctx *c, const struct pjson_value *v, struct p11g_rule *r)
{
	struct rule_seen seen = {0};

	if (v->type != PJSON_OBJECT)
		return fail_at_value(c, v, "a rule must be an object, not %s",
		                     pjson_type_name(v->type));
	r->file = strdup(c->file);
	if (!r->file)
		return fail_oom(c);
	r->line = v->line;
	r->column = v->column;
	for (size_t i = 0; i < v->u.obj.n; i++)
		if (parse_rule_member(c, &v->u.obj.v[i], r, &seen) < 0)
			return -1;

	if (!seen.name)
		return fail_at_value(c, v, "rule is missing \"name\"");
	if (!seen.keys)
		return fail_at_value(c, v, "rule \"%s\" is missing \"keys\"", r->name);
	if (!seen.orderers)
		return fail_at_value(c, v, "rule \"%s\" is missing \"orderers\"", r->name);

	if (seen.quorum && (seen.approvals || seen.approvers)) {
		const struct pjson_member *other = seen.approvals ? seen.approvals : seen.approvers;
		if (seen.approvals && seen.approvers && before(seen.approvers, seen.approvals))
			other = seen.approvers;
		const struct pjson_member *later = before(other, seen.quorum) ? seen.quorum : other;
		return fail_at(c->err, c->file, later->line, later->column,
		               "\"quorum\" cannot be combined with \"%s\"", other->name);
	}
	if (!seen.quorum && !seen.approvals) {
		if (seen.approvers)
			return fail_at(c->err, c->file, seen.approvers->line,
			               seen.approvers->column,
			               "\"approvers\" needs \"approvals\" (how many of them must "
			               "approve)");
		return fail_at_value(c, v, "rule \"%s\" needs \"approvals\" or \"quorum\"",
		                     r->name);
	}
	if (seen.approvals && seen.approvals_n > 0) {
		if (!seen.approvers)
			return fail_at(c->err, c->file, seen.approvals->line,
			               seen.approvals->column,
			               "\"approvals\" above 0 needs \"approvers\"");
		if (seen.approvers->value->u.arr.n == 0)
			return fail_at_value(c, seen.approvers->value,
			                     "\"approvers\" must not be empty when \"approvals\" "
			                     "is above 0");
		r->quorum = calloc(1, sizeof(*r->quorum));
		if (!r->quorum)
			return fail_oom(c);
		r->n_quorum = 1;
		r->quorum[0].count = (unsigned)seen.approvals_n;
		if (parse_principals(c, seen.approvers, true, &r->quorum[0].from) < 0)
			return -1;
	}
	if (seen.actor_claim) {
		if (!seen.claims)
			return fail_at(
			    c->err, c->file, seen.actor_claim->line, seen.actor_claim->column,
			    "\"actor_claim\" needs \"claims\" (whose token names the actor)");
		if (claim_name_member(c, seen.actor_claim, &r->claims->actor_claim) < 0)
			return -1;
	}
	if (seen.mechanisms && !r->allow_raw) {
		for (size_t i = 0; i < r->n_mechanisms; i++) {
			const struct p11g_mech_info *mi = p11g_mech_by_type(r->mechanisms[i]);
			if (mi && mi->family == P11G_MECH_RAW)
				return fail_at_value(c, seen.mechanisms->value->u.arr.v[i],
				                     "%s is a raw mechanism and needs "
				                     "\"allow_raw\": true",
				                     mi->name);
		}
	}
	return 0;
}

/* ---- policies ------------------------------------------------------------------ */

struct p11g_policy_builder {
	struct p11g_policy *pol;
	size_t cap;
	bool default_seen;
	char *default_file;
	EVP_MD_CTX *md;
};

static int loader_add_rule(struct p11g_policy_builder *ld, struct p11g_rule *r)
{
	if (ld->pol->n_rules == ld->cap) {
		size_t ncap = ld->cap ? ld->cap * 2 : 8;
		struct p11g_rule *v = realloc(ld->pol->rules, ncap * sizeof(*v));
		if (!v)
			return -1;
		ld->pol->rules = v;
		ld->cap = ncap;
	}
	ld->pol->rules[ld->pol->n_rules++] = *r;
	return 0;
}

/* Names and overlaps against every rule loaded so far, in any file. */
static int check_against_loaded(struct p11g_policy_builder *ld, struct rule_ctx *c,
                                const struct pjson_value *v, const struct p11g_rule *r)
{
	const struct pjson_member *name = pjson_get(v, "name"), *keys = pjson_get(v, "keys");

	for (size_t i = 0; i < ld->pol->n_rules; i++) {
		const struct p11g_rule *o = &ld->pol->rules[i];
		if (strcmp(o->name, r->name) == 0)
			return fail_at_value(c, name->value,
			                     "duplicate rule name \"%s\" (first at %s:%u:%u)",
			                     r->name, o->file, o->line, o->column);
	}
	for (size_t k = 0; k < r->n_keys; k++) {
		for (size_t i = 0; i < ld->pol->n_rules; i++) {
			const struct p11g_rule *o = &ld->pol->rules[i];
			for (size_t j = 0; j < o->n_keys; j++) {
				if (p11g_keyuri_overlap(r->key_uris[k], o->key_uris[j]))
					return fail_at_value(
					    c, keys->value->u.arr.v[k],
					    "key \"%s\" could match the same key as \"%s\" of "
					    "rule \"%s\" (%s:%u:%u)",
					    r->keys[k], o->keys[j], o->name, o->file, o->line,
					    o->column);
			}
		}
	}
	return 0;
}

static void issuer_clear(struct p11g_issuer *is)
{
	free(is->name);
	free(is->issuer);
	free(is->audience);
	free(is->jwks_file);
	free(is->jwks_url);
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
	if (expect_type(c, m, PJSON_STRING) < 0)
		return -1;
	const char *s = m->value->u.str.s;
	if (!plain_text(s, m->value->u.str.len, max) ||
	    (prefix && (strncmp(s, prefix, strlen(prefix)) != 0 || !s[strlen(prefix)])))
		return fail_at_value(c, m->value, "\"%s\" must be %s%s%s (1 to %zu bytes)", m->name,
		                     prefix ? "a URL starting with " : "text", prefix ? prefix : "",
		                     prefix ? "" : " without control characters", max);
	if (*ret)
		free(*ret);
	return (*ret = strdup(s)) ? 0 : fail_oom(c);
}

static int parse_issuer(struct rule_ctx *c, const struct pjson_value *v, struct p11g_issuer *is)
{
	const struct pjson_member *name = NULL, *iss = NULL, *aud = NULL, *file = NULL, *url = NULL;

	if (v->type != PJSON_OBJECT)
		return fail_at_value(c, v, "an issuer must be an object, not %s",
		                     pjson_type_name(v->type));
	if (!(is->file = strdup(c->file)))
		return fail_oom(c);
	is->line = v->line;
	is->column = v->column;
	for (size_t i = 0; i < v->u.obj.n; i++) {
		const struct pjson_member *m = &v->u.obj.v[i];
		int r;
		if (strcmp(m->name, "name") == 0) {
			name = m;
			if (expect_type(c, m, PJSON_STRING) < 0)
				return -1;
			if (!valid_rule_name(m->value->u.str.s, m->value->u.str.len))
				return fail_at_value(
				    c, m->value,
				    "bad issuer name \"%s\": 1 to %d of A-Z a-z 0-9 . _ -",
				    m->value->u.str.s, RULE_NAME_MAX);
			r = (is->name = strdup(m->value->u.str.s)) ? 0 : fail_oom(c);
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
		} else if (strcmp(m->name, "algorithms") == 0 || strcmp(m->name, "show") == 0) {
			bool algs = m->name[0] == 'a';
			const struct pjson_value *a = m->value;
			if (expect_strings(c, m, algs) < 0)
				return -1;
			size_t max = algs ? 16 : P11G_ISSUER_SHOW_MAX;
			if (a->u.arr.n > max)
				return fail_at_value(c, a, "\"%s\" has more than %zu entries",
				                     m->name, max);
			char ***list = algs ? &is->algorithms : &is->show;
			size_t *n = algs ? &is->n_algorithms : &is->n_show;
			if (!(*list = calloc(a->u.arr.n + 1, sizeof(char *))))
				return fail_oom(c);
			for (size_t k = 0; k < a->u.arr.n; k++) {
				const struct pjson_value *e = a->u.arr.v[k];
				size_t j = 0;
				if (algs) {
					for (; issuer_algs[j] && strcmp(issuer_algs[j], e->u.str.s);
					     j++)
						;
					if (!issuer_algs[j])
						return fail_at_value(
						    c, e,
						    "algorithm \"%s\" is never accepted (RS256, "
						    "RS384, RS512, "
						    "PS256, PS384, PS512, ES256, ES384, ES512; "
						    "never none or "
						    "an HMAC)",
						    e->u.str.s);
				} else if (!valid_claim_name(e->u.str.s, e->u.str.len)) {
					return fail_at_value(
					    c, e,
					    "bad claim name \"%s\": 1 to %d of A-Z a-z 0-9 _ "
					    ". : -",
					    e->u.str.s, CLAIM_NAME_MAX);
				}
				if (!((*list)[k] = strdup(e->u.str.s)))
					return fail_oom(c);
				*n = k + 1;
			}
			r = 0;
		} else {
			r = fail_unknown(
			    c, m,
			    "an issuer (expected \"name\", \"issuer\", \"audience\", "
			    "\"jwks_file\" or \"jwks_url\", \"algorithms\", \"show\")");
		}
		if (r < 0)
			return -1;
	}
	if (!name || !iss || !aud)
		return fail_at_value(c, v, "an issuer needs \"%s\"",
		                     !name  ? "name"
		                     : !iss ? "issuer"
		                            : "audience");
	if (!file == !url)
		return fail_at_value(c, file && url ? url->value : v,
		                     "an issuer needs one of \"jwks_file\" and \"jwks_url\"%s",
		                     file && url ? ", not both" : "");
	if (!is->n_algorithms) {
		if (!(is->algorithms = calloc(3, sizeof(char *))) ||
		    !(is->algorithms[0] = strdup("RS256")) ||
		    !(is->algorithms[1] = strdup("ES256")))
			return fail_oom(c);
		is->n_algorithms = 2;
	}
	return 0;
}

static int loader_add_issuers(struct p11g_policy_builder *ld, struct rule_ctx *c,
                              const struct pjson_member *m)
{
	struct p11g_policy *p = ld->pol;
	if (expect_type(c, m, PJSON_ARRAY) < 0)
		return -1;
	for (size_t k = 0; k < m->value->u.arr.n; k++) {
		struct p11g_issuer is = {0};
		const struct pjson_value *v = m->value->u.arr.v[k];
		if (parse_issuer(c, v, &is) < 0) {
			issuer_clear(&is);
			return -1;
		}
		const struct p11g_issuer *dup = p11g_policy_issuer(p, is.name);
		if (dup) {
			fail_at_value(c, v, "issuer \"%s\" is defined twice (first at %s:%u:%u)",
			              is.name, dup->file, dup->line, dup->column);
			issuer_clear(&is);
			return -1;
		}
		struct p11g_issuer *n = reallocarray(p->issuers, p->n_issuers + 1, sizeof(*n));
		if (!n) {
			issuer_clear(&is);
			return fail_oom(c);
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

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* Every file goes into the digest as name, NUL, 8-byte big-endian length,
 * content: no two different sets of files hash alike. */
static int digest_file(struct p11g_policy_builder *ld, const char *name, const char *text,
                       size_t len, p11g_err *err)
{
	const char *b = base_name(name);
	unsigned char n[8];
	for (int i = 0; i < 8; i++)
		n[i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	if (EVP_DigestUpdate(ld->md, b, strlen(b) + 1) != 1 ||
	    EVP_DigestUpdate(ld->md, n, 8) != 1 || EVP_DigestUpdate(ld->md, text, len) != 1)
		return p11g_err_set_at(err, P11G_E_INTERNAL, name, 0, 0, "cannot hash the policy");
	return 0;
}

static int load_text(struct p11g_policy_builder *ld, const char *name, const char *text, size_t len,
                     p11g_err *err)
{
	struct pjson_value *root = NULL;
	struct pjson_error je;
	struct rule_ctx c = {.file = name, .err = err};
	int r = -1;

	if (pjson_parse(text, len, &root, &je) < 0)
		return fail_at(err, name, je.line, je.column, "%s", je.msg);
	if (root->type != PJSON_OBJECT) {
		fail_at_value(&c, root, "a policy file must hold an object, not %s",
		              pjson_type_name(root->type));
		goto out;
	}
	for (size_t i = 0; i < root->u.obj.n; i++) {
		const struct pjson_member *m = &root->u.obj.v[i];
		if (strcmp(m->name, "default") == 0) {
			bool allow;
			if (expect_type(&c, m, PJSON_STRING) < 0)
				goto out;
			if (strcmp(m->value->u.str.s, "allow") == 0) {
				allow = true;
			} else if (strcmp(m->value->u.str.s, "deny") == 0) {
				allow = false;
			} else {
				fail_at_value(
				    &c, m->value,
				    "\"default\" must be \"deny\" or \"allow\", not \"%s\"",
				    m->value->u.str.s);
				goto out;
			}
			if (ld->default_seen && allow != ld->pol->default_allow) {
				fail_at_value(
				    &c, m->value, "\"default\" is \"%s\" here but \"%s\" in %s",
				    allow ? "allow" : "deny",
				    ld->pol->default_allow ? "allow" : "deny", ld->default_file);
				goto out;
			}
			if (!ld->default_seen) {
				ld->default_file = strdup(name);
				if (!ld->default_file) {
					fail_oom(&c);
					goto out;
				}
			}
			ld->default_seen = true;
			ld->pol->default_allow = allow;
		} else if (strcmp(m->name, "rules") == 0) {
			if (expect_type(&c, m, PJSON_ARRAY) < 0)
				goto out;
			for (size_t k = 0; k < m->value->u.arr.n; k++) {
				struct p11g_rule rule = {0};
				const struct pjson_value *rv = m->value->u.arr.v[k];
				if (parse_rule(&c, rv, &rule) < 0 ||
				    check_against_loaded(ld, &c, rv, &rule) < 0) {
					rule_clear(&rule);
					goto out;
				}
				if (loader_add_rule(ld, &rule) < 0) {
					rule_clear(&rule);
					fail_oom(&c);
					goto out;
				}
			}
		} else if (strcmp(m->name, "issuers") == 0) {
			if (loader_add_issuers(ld, &c, m) < 0)
				goto out;
		} else {
			fail_unknown(&c, m,
			             "the policy (expected \"default\", \"rules\" or \"issuers\")");
			goto out;
		}
	}
	if (digest_file(ld, name, text, len, err) < 0)
		goto out;
	ld->pol->n_files++;
	r = 0;
out:
	pjson_free(root);
	return r;
}

_Static_assert(P11G_POLICY_TEXT_MAX == PJSON_MAX_INPUT, "policy.h and pjson.h disagree");

struct p11g_policy_builder *p11g_policy_builder_new(void)
{
	struct p11g_policy_builder *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->pol = calloc(1, sizeof(*b->pol));
	b->md = EVP_MD_CTX_new();
	if (!b->pol || !b->md || EVP_DigestInit_ex(b->md, EVP_sha256(), NULL) != 1) {
		p11g_policy_builder_free(b);
		return NULL;
	}
	return b;
}

void p11g_policy_builder_free(struct p11g_policy_builder *b)
{
	if (!b)
		return;
	p11g_policy_free(b->pol);
	EVP_MD_CTX_free(b->md);
	free(b->default_file);
	free(b);
}

int p11g_policy_builder_add(struct p11g_policy_builder *b, const char *name, const char *text,
                            size_t len, p11g_err *err)
{
	return load_text(b, name, text, len, err);
}

int p11g_policy_builder_finish(struct p11g_policy_builder *b, struct p11g_policy **ret,
                               p11g_err *err)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int r = -1;

	/* a rule names an issuer that any of the files defines */
	for (size_t i = 0; i < b->pol->n_rules; i++) {
		const struct p11g_rule *rule = &b->pol->rules[i];
		if (rule->claims && !p11g_policy_issuer(b->pol, rule->claims->issuer)) {
			fail_at(err, rule->file, rule->claims->line, rule->claims->column,
			        "rule \"%s\" names no issuer the policy defines (\"%s\"; see "
			        "\"issuers\")",
			        rule->name, rule->claims->issuer);
			p11g_policy_builder_free(b);
			return -1;
		}
	}
	if (EVP_DigestFinal_ex(b->md, md, &mdlen) != 1 || mdlen != 32) {
		p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	} else {
		p11g_hex_encode(md, mdlen, b->pol->digest);
		*ret = b->pol;
		b->pol = NULL;
		r = 0;
	}
	p11g_policy_builder_free(b);
	return r;
}

int p11g_policy_parse(const char *name, const char *text, size_t len, struct p11g_policy **ret,
                      p11g_err *err)
{
	struct p11g_policy_builder *b = p11g_policy_builder_new();

	if (!b)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (p11g_policy_builder_add(b, name, text, len, err) < 0) {
		p11g_policy_builder_free(b);
		return -1;
	}
	return p11g_policy_builder_finish(b, ret, err);
}

void p11g_policy_free(struct p11g_policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_rules; i++)
		rule_clear(&p->rules[i]);
	free(p->rules);
	for (size_t i = 0; i < p->n_issuers; i++) {
		if (p->jwks && p->jwks_free)
			p->jwks_free(p->jwks[i]);
		issuer_clear(&p->issuers[i]);
	}
	free(p->jwks);
	free(p->issuers);
	free(p);
}

bool p11g_rule_covers(const struct p11g_rule *r, const struct p11g_keyid *k)
{
	for (size_t i = 0; i < r->n_keys; i++)
		if (p11g_keyid_matches(k, r->key_uris[i]))
			return true;
	return false;
}

const struct p11g_rule *p11g_policy_match(const struct p11g_policy *p, const struct p11g_keyid *k)
{
	if (!p || !k)
		return NULL;
	for (size_t i = 0; i < p->n_rules; i++)
		if (p11g_rule_covers(&p->rules[i], k))
			return &p->rules[i];
	return NULL;
}

size_t p11g_policy_overlapping(const struct p11g_policy *p, P11KitUri *u,
                               const struct p11g_rule **ret, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < p->n_rules; i++) {
		const struct p11g_rule *r = &p->rules[i];
		for (size_t j = 0; j < r->n_keys; j++) {
			if (p11g_keyuri_overlap(u, r->key_uris[j])) {
				if (n < max)
					ret[n] = r;
				n++;
				break;
			}
		}
	}
	return n;
}

const struct p11g_rule *p11g_policy_rule(const struct p11g_policy *p, const char *name)
{
	if (!p || !name)
		return NULL;
	for (size_t i = 0; i < p->n_rules; i++)
		if (strcmp(p->rules[i].name, name) == 0)
			return &p->rules[i];
	return NULL;
}

/* ---- snapshots --------------------------------------------------------------- */

static json_t *principals_to_json(const struct p11g_principals *ps)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < ps->n; i++) {
		char *s = p11g_principal_to_string(&ps->v[i]);
		json_t *js = s ? json_string(s) : NULL;
		free(s);
		if (json_array_append_new(a, js) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static int set_new(json_t *obj, const char *key, json_t *v)
{
	return v ? json_object_set_new(obj, key, v) : -1;
}

json_t *p11g_rule_to_json(const struct p11g_rule *r)
{
	json_t *o = json_object(), *a;
	char buf[32];

	if (!o || !r || !r->name)
		goto fail;
	if (set_new(o, "name", json_string(r->name)) < 0)
		goto fail;
	if (!(a = json_array()) || set_new(o, "keys", a) < 0)
		goto fail;
	for (size_t i = 0; i < r->n_keys; i++)
		if (json_array_append_new(a, json_string(r->keys[i])) < 0)
			goto fail;
	if (set_new(o, "orderers", principals_to_json(&r->orderers)) < 0)
		goto fail;
	/* Both policy forms normalise to clauses; a rule that needs nobody says so. */
	bool needs_someone = false;
	for (size_t i = 0; i < r->n_quorum; i++)
		needs_someone |= r->quorum[i].count > 0;
	if (!needs_someone) {
		if (set_new(o, "approvals", json_integer(0)) < 0)
			goto fail;
	} else {
		if (!(a = json_array()) || set_new(o, "quorum", a) < 0)
			goto fail;
		for (size_t i = 0; i < r->n_quorum; i++) {
			if (r->quorum[i].count == 0)
				continue;
			json_t *cl = json_object();
			if (json_array_append_new(a, cl) < 0 ||
			    set_new(cl, "from", principals_to_json(&r->quorum[i].from)) < 0 ||
			    set_new(cl, "count", json_integer(r->quorum[i].count)) < 0)
				goto fail;
		}
	}
	if (set_new(o, "auto_approve", principals_to_json(&r->auto_approve)) < 0 ||
	    set_new(o, "admins", principals_to_json(&r->admins)) < 0)
		goto fail;
	if (r->max_uses && set_new(o, "max_uses", json_integer((json_int_t)r->max_uses)) < 0)
		goto fail;
	if (r->max_validity) {
		duration_format(r->max_validity, buf, sizeof(buf));
		if (set_new(o, "max_validity", json_string(buf)) < 0)
			goto fail;
	}
	if (r->n_mechanisms) {
		if (!(a = json_array()) || set_new(o, "mechanisms", a) < 0)
			goto fail;
		for (size_t i = 0; i < r->n_mechanisms; i++) {
			const struct p11g_mech_info *mi = p11g_mech_by_type(r->mechanisms[i]);
			if (!mi || json_array_append_new(a, json_string(mi->name)) < 0)
				goto fail;
		}
	}
	if (set_new(o, "allow_raw", json_boolean(r->allow_raw)) < 0 ||
	    set_new(o, "bind_digest", json_boolean(r->bind_digest)) < 0)
		goto fail;
	if (r->n_registries) {
		if (!(a = json_array()) || set_new(o, "registries", a) < 0)
			goto fail;
		for (size_t i = 0; i < r->n_registries; i++)
			if (json_array_append_new(a, json_string(r->registries[i])) < 0)
				goto fail;
	}
	if (r->claims) {
		json_t *cl = json_object(), *mt = json_object();
		if (set_new(o, "claims", cl) < 0 || set_new(cl, "match", mt) < 0 ||
		    set_new(cl, "issuer", json_string(r->claims->issuer)) < 0)
			goto fail;
		for (size_t i = 0; i < r->claims->n; i++)
			if (set_new(mt, r->claims->names[i], json_string(r->claims->patterns[i])) <
			    0)
				goto fail;
		if (r->claims->actor_claim &&
		    set_new(o, "actor_claim", json_string(r->claims->actor_claim)) < 0)
			goto fail;
	}
	if (r->file && set_new(o, "defined_at",
	                       json_pack("{s:s, s:I, s:I}", "file", r->file, "line",
	                                 (json_int_t)r->line, "column", (json_int_t)r->column)) < 0)
		goto fail;
	return o;
fail:
	json_decref(o);
	return NULL;
}

int p11g_rule_from_json(const json_t *obj, struct p11g_rule **ret, p11g_err *err)
{
	struct rule_ctx c = {.file = SNAPSHOT_NAME, .err = err, .snapshot = true};
	struct pjson_value *root = NULL;
	struct pjson_error je;
	struct p11g_rule *r;
	char *text;

	if (!json_is_object(obj))
		return fail_at(err, SNAPSHOT_NAME, 0, 0, "not an object");
	/* Through text and the file parser, so a snapshot passes exactly the
	 * checks a policy file does (duplicate names included). */
	text = json_dumps(obj, JSON_INDENT(2));
	if (!text)
		return p11g_err_set_at(err, P11G_E_INTERNAL, SNAPSHOT_NAME, 0, 0,
		                       "cannot serialise");
	if (pjson_parse(text, strlen(text), &root, &je) < 0) {
		free(text);
		return fail_at(err, SNAPSHOT_NAME, je.line, je.column, "%s", je.msg);
	}
	free(text);
	r = calloc(1, sizeof(*r));
	if (!r) {
		pjson_free(root);
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	if (parse_rule(&c, root, r) < 0) {
		pjson_free(root);
		p11g_rule_free(r);
		return -1;
	}
	pjson_free(root);
	*ret = r;
	return 0;
}
