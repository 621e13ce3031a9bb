/* Policy texts: strict rule checks with file:line:column messages, matching, snapshots. */
#include <ctype.h>

#include <openssl/evp.h>

#include "policy/policy.h"
#include "policy/pjson.h"
#include "policy/policy_internal.h"
#include "p11gate/mech.h"
#include "p11gate/errors.h"
#include "p11gate/kvconf.h"

#define COUNT_MAX    1000 /* approvals and clause counts: a resource limit, not policy */
#define MAX_USES_MAX 1000000

/* ---- messages ------------------------------------------------------------ */

/* A bad policy text: bad_request "file:line:column: message" (kvconf.h's form); -1. */
__attribute__((format(printf, 5, 6))) int pol_fail_at(p11g_err *e, const char *file, unsigned line,
                                                      unsigned column, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	p11g_err_vset_at(e, P11G_E_BAD_REQUEST, file, line, column, fmt, ap);
	va_end(ap);
	return -1;
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
	for (size_t i = 0; i < r->n_notify; i++)
		free(r->notify[i]);
	free(r->notify);
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

int pol_fail_at_value(struct rule_ctx *c, const struct pjson_value *v, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	p11g_err_vset_at(c->err, P11G_E_BAD_REQUEST, c->file, v->line, v->column, fmt, ap);
	va_end(ap);
	return -1;
}

int pol_fail_oom(struct rule_ctx *c)
{
	return p11g_err_set_at(c->err, P11G_E_INTERNAL, c->file, 0, 0, "out of memory");
}

int pol_expect_type(struct rule_ctx *c, const struct pjson_member *m, enum pjson_type t)
{
	if (m->value->type == t)
		return 0;
	return pol_fail_at_value(c, m->value, "\"%s\" must be %s, not %s", m->name,
	                         pjson_type_name(t), pjson_type_name(m->value->type));
}

static int expect_int(struct rule_ctx *c, const struct pjson_member *m, int64_t lo, int64_t hi,
                      int64_t *ret)
{
	if (pol_expect_type(c, m, PJSON_INT) < 0)
		return -1;
	if (m->value->u.i < lo || m->value->u.i > hi)
		return pol_fail_at_value(c, m->value, "\"%s\" must be between %lld and %lld",
		                         m->name, (long long)lo, (long long)hi);
	*ret = m->value->u.i;
	return 0;
}

/* An array member whose entries are all strings; non_empty refuses []. */
int pol_expect_strings(struct rule_ctx *c, const struct pjson_member *m, bool non_empty)
{
	if (pol_expect_type(c, m, PJSON_ARRAY) < 0)
		return -1;
	if (non_empty && m->value->u.arr.n == 0)
		return pol_fail_at_value(c, m->value, "\"%s\" must not be empty", m->name);
	for (size_t i = 0; i < m->value->u.arr.n; i++) {
		const struct pjson_value *e = m->value->u.arr.v[i];
		if (e->type != PJSON_STRING)
			return pol_fail_at_value(c, e, "entries of \"%s\" must be strings, not %s",
			                         m->name, pjson_type_name(e->type));
	}
	return 0;
}

static int parse_principals(struct rule_ctx *c, const struct pjson_member *m, bool non_empty,
                            struct p11g_principals *ret)
{
	const struct pjson_value *a = m->value;
	struct p11g_principals ps = {0};

	if (pol_expect_strings(c, m, non_empty) < 0)
		return -1;
	if (a->u.arr.n) {
		ps.v = calloc(a->u.arr.n, sizeof(*ps.v));
		if (!ps.v)
			return pol_fail_oom(c);
	}
	for (size_t i = 0; i < a->u.arr.n; i++) {
		p11g_err e;
		if (p11g_principal_parse(a->u.arr.v[i]->u.str.s, &ps.v[i], &e) < 0) {
			principals_clear(&ps);
			return pol_fail_at_value(c, a->u.arr.v[i], "%s", e.msg);
		}
		ps.n = i + 1;
	}
	principals_clear(ret);
	*ret = ps;
	return 0;
}

bool pol_valid_rule_name(const char *s, size_t len)
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
		return pol_fail_at_value(c, v, "key URI longer than %d bytes", P11G_KEY_URI_MAX);
	if (strchr(s, '?'))
		return pol_fail_at_value(c, v,
		                         "bad key URI \"%s\": query attributes (after '?') have no "
		                         "meaning in a policy",
		                         s);
	if (p11g_keyuri_parse(s, ret, &e) < 0)
		return pol_fail_at_value(c, v, "%s", e.msg);
	if (uri_has_repeated_attribute(s, name, sizeof(name)))
		return pol_fail_at_value(c, v, "bad key URI \"%s\": \"%s\" given twice", s, name);
	return 0;
}

static int parse_keys(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r)
{
	const struct pjson_value *a = m->value;

	if (pol_expect_strings(c, m, true) < 0)
		return -1;
	r->keys = calloc(a->u.arr.n, sizeof(*r->keys));
	r->key_uris = calloc(a->u.arr.n, sizeof(*r->key_uris));
	if (!r->keys || !r->key_uris)
		return pol_fail_oom(c);
	r->n_keys = a->u.arr.n;
	for (size_t i = 0; i < a->u.arr.n; i++) {
		if (parse_key(c, a->u.arr.v[i], &r->key_uris[i]) < 0)
			return -1;
		r->keys[i] = strdup(a->u.arr.v[i]->u.str.s);
		if (!r->keys[i])
			return pol_fail_oom(c);
	}
	return 0;
}

static int parse_mechanisms(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r)
{
	const struct pjson_value *a = m->value;

	if (pol_expect_strings(c, m, true) < 0)
		return -1;
	r->mechanisms = calloc(a->u.arr.n, sizeof(*r->mechanisms));
	if (!r->mechanisms)
		return pol_fail_oom(c);
	for (size_t i = 0; i < a->u.arr.n; i++) {
		const struct p11g_mech_info *mi = p11g_mech_by_name(a->u.arr.v[i]->u.str.s);
		if (!mi)
			return pol_fail_at_value(c, a->u.arr.v[i], "unknown mechanism \"%s\"",
			                         a->u.arr.v[i]->u.str.s);
		for (size_t j = 0; j < i; j++)
			if (r->mechanisms[j] == mi->type)
				return pol_fail_at_value(c, a->u.arr.v[i], "%s is listed twice",
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
	if (pol_expect_strings(c, m, true) < 0)
		return -1;
	r->registries = calloc(a->u.arr.n, sizeof(*r->registries));
	if (!r->registries)
		return pol_fail_oom(c);
	for (size_t i = 0; i < a->u.arr.n; i++) {
		if (!valid_registry(a->u.arr.v[i]->u.str.s))
			return pol_fail_at_value(c, a->u.arr.v[i],
			                         "bad registry \"%s\": expected host or host:port",
			                         a->u.arr.v[i]->u.str.s);
		r->registries[i] = strdup(a->u.arr.v[i]->u.str.s);
		if (!r->registries[i])
			return pol_fail_oom(c);
		r->n_registries = i + 1;
	}
	return 0;
}

int pol_fail_unknown(struct rule_ctx *c, const struct pjson_member *m, const char *where)
{
	return pol_fail_at(c->err, c->file, m->line, m->column, "unknown member \"%s\" in %s",
	                   m->name, where);
}

static int parse_clause(struct rule_ctx *c, const struct pjson_value *v, struct p11g_clause *ret)
{
	const struct pjson_member *from = NULL, *count = NULL;
	int64_t n;

	if (v->type != PJSON_OBJECT)
		return pol_fail_at_value(c, v, "entries of \"quorum\" must be objects, not %s",
		                         pjson_type_name(v->type));
	for (size_t i = 0; i < v->u.obj.n; i++) {
		const struct pjson_member *m = &v->u.obj.v[i];
		if (strcmp(m->name, "from") == 0)
			from = m;
		else if (strcmp(m->name, "count") == 0)
			count = m;
		else
			return pol_fail_unknown(c, m, "quorum clause");
	}
	if (!from)
		return pol_fail_at_value(c, v, "quorum clause is missing \"from\"");
	if (!count)
		return pol_fail_at_value(c, v, "quorum clause is missing \"count\"");
	if (parse_principals(c, from, true, &ret->from) < 0 ||
	    expect_int(c, count, 1, COUNT_MAX, &n) < 0)
		return -1;
	ret->count = (unsigned)n;
	return 0;
}

static int parse_quorum(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r)
{
	const struct pjson_value *a = m->value;

	if (pol_expect_type(c, m, PJSON_ARRAY) < 0)
		return -1;
	if (a->u.arr.n == 0)
		return pol_fail_at_value(c, a, "\"quorum\" must not be empty");
	r->quorum = calloc(a->u.arr.n, sizeof(*r->quorum));
	if (!r->quorum)
		return pol_fail_oom(c);
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

	if (pol_expect_type(c, m, PJSON_OBJECT) < 0)
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
			return pol_fail_unknown(c, f, "\"defined_at\"");
	}
	if (!file || !line || !column)
		return pol_fail_at_value(c, m->value, "\"defined_at\" needs file, line and column");
	if (pol_expect_type(c, file, PJSON_STRING) < 0 ||
	    expect_int(c, line, 1, UINT32_MAX, &l) < 0 ||
	    expect_int(c, column, 1, UINT32_MAX, &col) < 0)
		return -1;
	char *f = strdup(file->value->u.str.s);
	if (!f)
		return pol_fail_oom(c);
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

static int parse_rule_member(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r,
                             struct rule_seen *seen)
{
	const char *n = m->name;
	int64_t v;

	if (strcmp(n, "name") == 0) {
		seen->name = m;
		if (pol_expect_type(c, m, PJSON_STRING) < 0)
			return -1;
		if (!pol_valid_rule_name(m->value->u.str.s, m->value->u.str.len))
			return pol_fail_at_value(
			    c, m->value, "bad rule name \"%s\": 1 to %d of A-Z a-z 0-9 . _ -",
			    m->value->u.str.s, RULE_NAME_MAX);
		r->name = strdup(m->value->u.str.s);
		return r->name ? 0 : pol_fail_oom(c);
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
		if (pol_expect_type(c, m, PJSON_STRING) < 0)
			return -1;
		v = p11g_duration_parse(m->value->u.str.s);
		if (v < 0)
			return pol_fail_at_value(
			    c, m->value,
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
		if (pol_expect_type(c, m, PJSON_BOOL) < 0)
			return -1;
		r->allow_raw = m->value->u.b;
		return 0;
	}
	if (strcmp(n, "bind_digest") == 0) {
		if (pol_expect_type(c, m, PJSON_BOOL) < 0)
			return -1;
		r->bind_digest = m->value->u.b;
		return 0;
	}
	if (strcmp(n, "registries") == 0)
		return parse_registries(c, m, r);
	if (strcmp(n, "claims") == 0) {
		seen->claims = m;
		return pol_parse_claims(c, m, r);
	}
	if (strcmp(n, "actor_claim") == 0) {
		seen->actor_claim = m;
		return 0; /* kept once "claims" is known, wherever it stands */
	}
	/* never in a snapshot (p11g_rule_to_json leaves it out: notifications follow the
	 * policy in force), but harmless there */
	if (strcmp(n, "notify") == 0)
		return pol_parse_notify(c, m, r);
	if (c->snapshot && strcmp(n, "defined_at") == 0) {
		seen->defined_at = m;
		return parse_defined_at(c, m, r);
	}
	return pol_fail_unknown(c, m, "rule");
}

static bool before(const struct pjson_member *a, const struct pjson_member *b)
{
	return a->line < b->line || (a->line == b->line && a->column < b->column);
}

/* Fills *r (zeroed by the caller) from one rule object; on error r holds
 * partial state for rule_clear. */
int pol_parse_rule(struct rule_ctx *c, const struct pjson_value *v, struct p11g_rule *r)
{
	struct rule_seen seen = {0};

	if (v->type != PJSON_OBJECT)
		return pol_fail_at_value(c, v, "a rule must be an object, not %s",
		                         pjson_type_name(v->type));
	r->file = strdup(c->file);
	if (!r->file)
		return pol_fail_oom(c);
	r->line = v->line;
	r->column = v->column;
	for (size_t i = 0; i < v->u.obj.n; i++)
		if (parse_rule_member(c, &v->u.obj.v[i], r, &seen) < 0)
			return -1;

	if (!seen.name)
		return pol_fail_at_value(c, v, "rule is missing \"name\"");
	if (!seen.keys)
		return pol_fail_at_value(c, v, "rule \"%s\" is missing \"keys\"", r->name);
	if (!seen.orderers)
		return pol_fail_at_value(c, v, "rule \"%s\" is missing \"orderers\"", r->name);

	if (seen.quorum && (seen.approvals || seen.approvers)) {
		const struct pjson_member *other = seen.approvals ? seen.approvals : seen.approvers;
		if (seen.approvals && seen.approvers && before(seen.approvers, seen.approvals))
			other = seen.approvers;
		const struct pjson_member *later = before(other, seen.quorum) ? seen.quorum : other;
		return pol_fail_at(c->err, c->file, later->line, later->column,
		                   "\"quorum\" cannot be combined with \"%s\"", other->name);
	}
	if (!seen.quorum && !seen.approvals) {
		if (seen.approvers)
			return pol_fail_at(
			    c->err, c->file, seen.approvers->line, seen.approvers->column,
			    "\"approvers\" needs \"approvals\" (how many of them must "
			    "approve)");
		return pol_fail_at_value(c, v, "rule \"%s\" needs \"approvals\" or \"quorum\"",
		                         r->name);
	}
	if (seen.approvals && seen.approvals_n > 0) {
		if (!seen.approvers)
			return pol_fail_at(c->err, c->file, seen.approvals->line,
			                   seen.approvals->column,
			                   "\"approvals\" above 0 needs \"approvers\"");
		if (seen.approvers->value->u.arr.n == 0)
			return pol_fail_at_value(
			    c, seen.approvers->value,
			    "\"approvers\" must not be empty when \"approvals\" "
			    "is above 0");
		r->quorum = calloc(1, sizeof(*r->quorum));
		if (!r->quorum)
			return pol_fail_oom(c);
		r->n_quorum = 1;
		r->quorum[0].count = (unsigned)seen.approvals_n;
		if (parse_principals(c, seen.approvers, true, &r->quorum[0].from) < 0)
			return -1;
	}
	if (seen.actor_claim) {
		if (!seen.claims)
			return pol_fail_at(
			    c->err, c->file, seen.actor_claim->line, seen.actor_claim->column,
			    "\"actor_claim\" needs \"claims\" (whose token names the actor)");
		if (pol_claim_name_member(c, seen.actor_claim, &r->claims->actor_claim) < 0)
			return -1;
	}
	if (seen.mechanisms && !r->allow_raw) {
		for (size_t i = 0; i < r->n_mechanisms; i++) {
			const struct p11g_mech_info *mi = p11g_mech_by_type(r->mechanisms[i]);
			if (mi && mi->family == P11G_MECH_RAW)
				return pol_fail_at_value(c, seen.mechanisms->value->u.arr.v[i],
				                         "%s is a raw mechanism and needs "
				                         "\"allow_raw\": true",
				                         mi->name);
		}
	}
	return 0;
}

/* ---- policies ------------------------------------------------------------------ */

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
			return pol_fail_at_value(c, name->value,
			                         "duplicate rule name \"%s\" (first at %s:%u:%u)",
			                         r->name, o->file, o->line, o->column);
	}
	for (size_t k = 0; k < r->n_keys; k++) {
		for (size_t i = 0; i < ld->pol->n_rules; i++) {
			const struct p11g_rule *o = &ld->pol->rules[i];
			for (size_t j = 0; j < o->n_keys; j++) {
				if (p11g_keyuri_overlap(r->key_uris[k], o->key_uris[j]))
					return pol_fail_at_value(
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
		return pol_fail_at(err, name, je.line, je.column, "%s", je.msg);
	if (root->type != PJSON_OBJECT) {
		pol_fail_at_value(&c, root, "a policy file must hold an object, not %s",
		                  pjson_type_name(root->type));
		goto out;
	}
	for (size_t i = 0; i < root->u.obj.n; i++) {
		const struct pjson_member *m = &root->u.obj.v[i];
		if (strcmp(m->name, "default") == 0) {
			bool allow;
			if (pol_expect_type(&c, m, PJSON_STRING) < 0)
				goto out;
			if (strcmp(m->value->u.str.s, "allow") == 0) {
				allow = true;
			} else if (strcmp(m->value->u.str.s, "deny") == 0) {
				allow = false;
			} else {
				pol_fail_at_value(
				    &c, m->value,
				    "\"default\" must be \"deny\" or \"allow\", not \"%s\"",
				    m->value->u.str.s);
				goto out;
			}
			if (ld->default_seen && allow != ld->pol->default_allow) {
				pol_fail_at_value(
				    &c, m->value, "\"default\" is \"%s\" here but \"%s\" in %s",
				    allow ? "allow" : "deny",
				    ld->pol->default_allow ? "allow" : "deny", ld->default_file);
				goto out;
			}
			if (!ld->default_seen) {
				ld->default_file = strdup(name);
				if (!ld->default_file) {
					pol_fail_oom(&c);
					goto out;
				}
			}
			ld->default_seen = true;
			ld->pol->default_allow = allow;
		} else if (strcmp(m->name, "rules") == 0) {
			if (pol_expect_type(&c, m, PJSON_ARRAY) < 0)
				goto out;
			for (size_t k = 0; k < m->value->u.arr.n; k++) {
				struct p11g_rule rule = {0};
				const struct pjson_value *rv = m->value->u.arr.v[k];
				if (pol_parse_rule(&c, rv, &rule) < 0 ||
				    check_against_loaded(ld, &c, rv, &rule) < 0) {
					rule_clear(&rule);
					goto out;
				}
				if (loader_add_rule(ld, &rule) < 0) {
					rule_clear(&rule);
					pol_fail_oom(&c);
					goto out;
				}
				if (pol_note_notify(ld, &c, rv, ld->pol->n_rules - 1) < 0)
					goto out;
			}
		} else if (strcmp(m->name, "issuers") == 0) {
			if (pol_loader_add_issuers(ld, &c, m) < 0)
				goto out;
		} else if (strcmp(m->name, "notifiers") == 0) {
			if (pol_loader_add_notifiers(ld, &c, m) < 0)
				goto out;
		} else {
			pol_fail_unknown(
			    &c, m,
			    "the policy (expected \"default\", \"rules\", \"issuers\" or "
			    "\"notifiers\")");
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
	free(b->notify_refs);
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
			pol_fail_at(err, rule->file, rule->claims->line, rule->claims->column,
			            "rule \"%s\" names no issuer the policy defines (\"%s\"; see "
			            "\"issuers\")",
			            rule->name, rule->claims->issuer);
			p11g_policy_builder_free(b);
			return -1;
		}
	}
	/* and its "notify" names notifiers that any of them defines */
	if (pol_check_notify(b, err) < 0) {
		p11g_policy_builder_free(b);
		return -1;
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
		pol_issuer_clear(&p->issuers[i]);
	}
	free(p->jwks);
	free(p->issuers);
	for (size_t i = 0; i < p->n_notifiers; i++)
		pol_notifier_clear(&p->notifiers[i]);
	free(p->notifiers);
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
