/* Notifications in policy texts (issue 21): the top-level "notifiers" (where events go: a
 * webhook URL or a command) and a rule's "notify" (which of them hear about its keys),
 * parsed strictly with file:line:column messages.  Sending is approvald's. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/policy_internal.h"
#include "p11gate/common.h"

#define NOTIFIER_URL_MAX     2048
#define NOTIFIER_PATH_MAX    4096
#define NOTIFIER_ARGS_MAX    32
#define NOTIFIER_ARG_MAX     1024
#define NOTIFY_NAMES_MAX     64 /* a rule's "notify" */
#define NOTIFIER_TIMEOUT_MAX 60
#define NOTIFIER_TIMEOUT_DEF 10

/* ---- events ---------------------------------------------------------------------- */

/* By bit number: P11G_NOTIFY_CREATED is bit 0. */
static const char *const event_names[P11G_NOTIFY_EVENTS_MAX] = {
    "created", "approval", "approved",  "rejected",    "withdrawn", "revoked",
    "expired", "expiring", "exhausted", "use_refused", "test",
};

_Static_assert(P11G_NOTIFY_TEST == 1u << (P11G_NOTIFY_EVENTS_MAX - 1),
               "P11G_NOTIFY_EVENTS_MAX and the events disagree");

const char *p11g_notify_event_name(unsigned event)
{
	if (event == 0 || (event & (event - 1)) || event > P11G_NOTIFY_TEST)
		return NULL;
	return event_names[__builtin_ctz(event)];
}

unsigned p11g_notify_event_parse(const char *name)
{
	for (unsigned i = 0; name && i < P11G_NOTIFY_EVENTS_MAX; i++)
		if (!strcmp(event_names[i], name))
			return 1u << i;
	return 0;
}

/* ---- notifiers ------------------------------------------------------------------- */

void pol_notifier_clear(struct p11g_notifier *n)
{
	free(n->name);
	free(n->url);
	for (size_t i = 0; i < n->n_command; i++)
		free(n->command[i]);
	free(n->command);
	free(n->secret_file);
	free(n->ca_file);
	free(n->file);
	memset(n, 0, sizeof(*n));
}

static bool notifier_name_ok(struct rule_ctx *c, const struct pjson_value *v)
{
	if (pol_valid_rule_name(v->u.str.s, v->u.str.len))
		return true;
	pol_fail_at_value(c, v, "bad notifier name \"%s\": 1 to %d of A-Z a-z 0-9 . _ -",
	                  v->u.str.s, RULE_NAME_MAX);
	return false;
}

static bool valid_port(const char *s, size_t len)
{
	unsigned long v = 0;
	if (len == 0 || len > 5 || s[0] == '0')
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	return v <= 65535;
}

/* HOST, HOST:PORT, [IPV6] or [IPV6]:PORT; *host_len is HOST's (with the brackets). */
static bool valid_authority(const char *s, size_t len, size_t *host_len)
{
	size_t h;
	if (len == 0)
		return false;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (!close || close == s + 1)
			return false;
		for (const char *p = s + 1; p < close; p++)
			if (p11g_hex_digit(*p) < 0 && *p != ':' && *p != '.')
				return false;
		h = (size_t)(close - s) + 1;
	} else {
		for (h = 0; h < len && s[h] != ':'; h++)
			if (!((s[h] >= 'a' && s[h] <= 'z') || (s[h] >= 'A' && s[h] <= 'Z') ||
			      (s[h] >= '0' && s[h] <= '9') || s[h] == '-' || s[h] == '.'))
				return false;
		if (h == 0 || h > 253 || s[0] == '.' || s[0] == '-')
			return false;
	}
	*host_len = h;
	if (h == len)
		return true;
	return s[h] == ':' && valid_port(s + h + 1, len - h - 1);
}

static bool loopback_host(const char *s, size_t len)
{
	return (len == 9 && !memcmp(s, "127.0.0.1", 9)) || (len == 5 && !memcmp(s, "[::1]", 5)) ||
	       (len == 9 && !strncasecmp(s, "localhost", 9));
}

/* "url": https://HOST..., or http:// to a loopback host.  Messages never repeat the whole
 * URL: a webhook's URL is often its credential (Slack's, Teams'). */
static int notifier_url(struct rule_ctx *c, const struct pjson_member *m, struct p11g_notifier *n)
{
	const struct pjson_value *v = m->value;
	const char *s, *auth;
	size_t len, alen, hlen;
	bool https;

	if (pol_expect_type(c, m, PJSON_STRING) < 0)
		return -1;
	s = v->u.str.s;
	len = v->u.str.len;
	if (len == 0 || len > NOTIFIER_URL_MAX)
		return pol_fail_at_value(c, v, "\"url\" must be 1 to %d bytes", NOTIFIER_URL_MAX);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return pol_fail_at_value(c, v,
			                         "\"url\" must be printable ASCII: no spaces or "
			                         "control characters (percent-encode others)");
	if (!strncmp(s, "https://", 8))
		https = true;
	else if (!strncmp(s, "http://", 7))
		https = false;
	else
		return pol_fail_at_value(c, v,
		                         "\"url\" must start with https:// (or http:// to "
		                         "127.0.0.1, [::1] or localhost)");
	auth = s + (https ? 8 : 7);
	alen = strcspn(auth, "/?#");
	if (memchr(auth, '@', alen))
		return pol_fail_at_value(c, v,
		                         "\"url\" must not carry a user name or password "
		                         "(\"...@\" before the host)");
	if (!valid_authority(auth, alen, &hlen))
		return pol_fail_at_value(c, v,
		                         "\"url\" needs a host (a name, an IPv4 address or an "
		                         "[IPv6] address) and optionally :PORT after the scheme");
	if (!https && !loopback_host(auth, hlen))
		return pol_fail_at_value(
		    c, v,
		    "\"url\" is plain http:// to \"%.*s\": http:// is only for "
		    "127.0.0.1, [::1] or localhost (use https://)",
		    (int)hlen, auth);
	return (n->url = strdup(s)) ? 0 : pol_fail_oom(c);
}

/* "command": [PROGRAM, ARGS...]: run without a shell, so PROGRAM is an absolute path. */
static int notifier_command(struct rule_ctx *c, const struct pjson_member *m,
                            struct p11g_notifier *n)
{
	const struct pjson_value *a = m->value;

	if (pol_expect_strings(c, m, true) < 0)
		return -1;
	if (a->u.arr.n > NOTIFIER_ARGS_MAX)
		return pol_fail_at_value(c, a, "\"command\" has more than %d entries",
		                         NOTIFIER_ARGS_MAX);
	for (size_t k = 0; k < a->u.arr.n; k++) {
		const struct pjson_value *e = a->u.arr.v[k];
		if (e->u.str.len > NOTIFIER_ARG_MAX)
			return pol_fail_at_value(
			    c, e, "entries of \"command\" are at most %d bytes", NOTIFIER_ARG_MAX);
		for (size_t i = 0; i < e->u.str.len; i++)
			if ((unsigned char)e->u.str.s[i] < 0x20 || e->u.str.s[i] == 0x7f)
				return pol_fail_at_value(c, e,
				                         "entries of \"command\" must not hold "
				                         "control characters");
	}
	if (a->u.arr.v[0]->u.str.s[0] != '/')
		return pol_fail_at_value(c, a->u.arr.v[0],
		                         "\"command\" must start with the program's absolute path "
		                         "(it runs without a shell or a PATH search), not \"%s\"",
		                         a->u.arr.v[0]->u.str.s);
	if (!(n->command = calloc(a->u.arr.n + 1, sizeof(char *))))
		return pol_fail_oom(c);
	for (size_t k = 0; k < a->u.arr.n; k++) {
		if (!(n->command[k] = strdup(a->u.arr.v[k]->u.str.s)))
			return pol_fail_oom(c);
		n->n_command = k + 1;
	}
	return 0;
}

static int notifier_path(struct rule_ctx *c, const struct pjson_member *m, char **ret)
{
	if (pol_expect_type(c, m, PJSON_STRING) < 0)
		return -1;
	const char *s = m->value->u.str.s;
	size_t len = m->value->u.str.len;
	bool ok = len > 1 && len <= NOTIFIER_PATH_MAX && s[0] == '/';
	for (size_t i = 0; ok && i < len; i++)
		ok = (unsigned char)s[i] >= 0x20 && s[i] != 0x7f;
	if (!ok)
		return pol_fail_at_value(c, m->value,
		                         "\"%s\" must be an absolute path (2 to %d bytes, no "
		                         "control characters)",
		                         m->name, NOTIFIER_PATH_MAX);
	return (*ret = strdup(s)) ? 0 : pol_fail_oom(c);
}

static int notifier_events(struct rule_ctx *c, const struct pjson_member *m,
                           struct p11g_notifier *n)
{
	const struct pjson_value *a = m->value;

	if (pol_expect_strings(c, m, true) < 0)
		return -1;
	for (size_t k = 0; k < a->u.arr.n; k++) {
		const struct pjson_value *e = a->u.arr.v[k];
		unsigned ev = p11g_notify_event_parse(e->u.str.s);
		if (ev == P11G_NOTIFY_TEST)
			return pol_fail_at_value(c, e,
			                         "\"test\" is not an event a policy lists (every "
			                         "notifier hears \"approvald notify test\")");
		if (!ev)
			return pol_fail_at_value(
			    c, e,
			    "unknown event \"%s\" (created, approval, approved, rejected, "
			    "withdrawn, "
			    "revoked, expired, expiring, exhausted, use_refused)",
			    e->u.str.s);
		if (n->events & ev)
			return pol_fail_at_value(c, e, "event \"%s\" is listed twice", e->u.str.s);
		n->events |= ev;
	}
	return 0;
}

static int notifier_timeout(struct rule_ctx *c, const struct pjson_member *m,
                            struct p11g_notifier *n)
{
	const struct pjson_value *v = m->value;

	if (pol_expect_type(c, m, PJSON_STRING) < 0)
		return -1;
	int64_t t = p11g_duration_parse(v->u.str.s);
	if (t < 0)
		return pol_fail_at_value(c, v,
		                         "bad duration \"%s\": expected a positive number and "
		                         "one of s, m, h, d (at most 10 years)",
		                         v->u.str.s);
	if (t > NOTIFIER_TIMEOUT_MAX)
		return pol_fail_at_value(c, v, "\"timeout\" must be 1s to %ds, not \"%s\"",
		                         NOTIFIER_TIMEOUT_MAX, v->u.str.s);
	n->timeout = (unsigned)t;
	return 0;
}

static bool after(const struct pjson_member *a, const struct pjson_member *b)
{
	return a->line > b->line || (a->line == b->line && a->column > b->column);
}

static int parse_notifier(struct rule_ctx *c, const struct pjson_value *v, struct p11g_notifier *n)
{
	const struct pjson_member *name = NULL, *url = NULL, *cmd = NULL, *format = NULL,
	                          *ca = NULL, *events = NULL;

	if (v->type != PJSON_OBJECT)
		return pol_fail_at_value(c, v, "a notifier must be an object, not %s",
		                         pjson_type_name(v->type));
	if (!(n->file = strdup(c->file)))
		return pol_fail_oom(c);
	n->line = v->line;
	n->column = v->column;
	n->format = P11G_NOTIFY_JSON;
	n->timeout = NOTIFIER_TIMEOUT_DEF;
	for (size_t i = 0; i < v->u.obj.n; i++) {
		const struct pjson_member *m = &v->u.obj.v[i];
		int r;
		if (strcmp(m->name, "name") == 0) {
			name = m;
			if (pol_expect_type(c, m, PJSON_STRING) < 0 ||
			    !notifier_name_ok(c, m->value))
				return -1;
			r = (n->name = strdup(m->value->u.str.s)) ? 0 : pol_fail_oom(c);
		} else if (strcmp(m->name, "url") == 0) {
			url = m;
			r = notifier_url(c, m, n);
		} else if (strcmp(m->name, "command") == 0) {
			cmd = m;
			r = notifier_command(c, m, n);
		} else if (strcmp(m->name, "format") == 0) {
			const char *f;
			format = m;
			if (pol_expect_type(c, m, PJSON_STRING) < 0)
				return -1;
			f = m->value->u.str.s;
			if (!strcmp(f, "json"))
				n->format = P11G_NOTIFY_JSON;
			else if (!strcmp(f, "slack"))
				n->format = P11G_NOTIFY_SLACK;
			else if (!strcmp(f, "teams"))
				n->format = P11G_NOTIFY_TEAMS;
			else
				return pol_fail_at_value(c, m->value,
				                         "\"format\" must be \"json\", \"slack\" "
				                         "or \"teams\", not \"%s\"",
				                         f);
			r = 0;
		} else if (strcmp(m->name, "secret_file") == 0) {
			r = notifier_path(c, m, &n->secret_file);
		} else if (strcmp(m->name, "ca_file") == 0) {
			ca = m;
			r = notifier_path(c, m, &n->ca_file);
		} else if (strcmp(m->name, "events") == 0) {
			events = m;
			r = notifier_events(c, m, n);
		} else if (strcmp(m->name, "timeout") == 0) {
			r = notifier_timeout(c, m, n);
		} else {
			r = pol_fail_unknown(
			    c, m,
			    "a notifier (expected \"name\", \"url\" or \"command\", "
			    "\"format\", \"secret_file\", \"ca_file\", \"events\", "
			    "\"timeout\")");
		}
		if (r < 0)
			return -1;
	}
	if (!name)
		return pol_fail_at_value(c, v, "a notifier needs \"name\"");
	if (!url && !cmd)
		return pol_fail_at_value(
		    c, v, "notifier \"%s\" needs one of \"url\" and \"command\"", n->name);
	if (url && cmd) {
		const struct pjson_member *second = after(url, cmd) ? url : cmd;
		return pol_fail_at(c->err, c->file, second->line, second->column,
		                   "notifier \"%s\" needs one of \"url\" and \"command\", not both",
		                   n->name);
	}
	if (format && cmd)
		return pol_fail_at(c->err, c->file, format->line, format->column,
		                   "\"format\" is for \"url\" (a command reads the event as JSON "
		                   "on its standard input)");
	if (ca && strncmp(n->url ? n->url : "", "https://", 8))
		return pol_fail_at(
		    c->err, c->file, ca->line, ca->column,
		    "\"ca_file\" is for an https:// \"url\" (the CA certificates its "
		    "TLS server is verified with)");
	if (!events)
		return pol_fail_at_value(c, v, "notifier \"%s\" needs \"events\"", n->name);
	return 0;
}

int pol_loader_add_notifiers(struct p11g_policy_builder *ld, struct rule_ctx *c,
                             const struct pjson_member *m)
{
	struct p11g_policy *p = ld->pol;
	if (pol_expect_type(c, m, PJSON_ARRAY) < 0)
		return -1;
	for (size_t k = 0; k < m->value->u.arr.n; k++) {
		struct p11g_notifier n = {0};
		const struct pjson_value *v = m->value->u.arr.v[k];
		if (parse_notifier(c, v, &n) < 0) {
			pol_notifier_clear(&n);
			return -1;
		}
		const struct p11g_notifier *dup = p11g_policy_notifier(p, n.name);
		if (dup) {
			pol_fail_at_value(c, pjson_get(v, "name")->value,
			                  "notifier \"%s\" is defined twice (first at %s:%u:%u)",
			                  n.name, dup->file, dup->line, dup->column);
			pol_notifier_clear(&n);
			return -1;
		}
		struct p11g_notifier *nv =
		    reallocarray(p->notifiers, p->n_notifiers + 1, sizeof(*nv));
		if (!nv) {
			pol_notifier_clear(&n);
			return pol_fail_oom(c);
		}
		p->notifiers = nv;
		p->notifiers[p->n_notifiers++] = n;
	}
	return 0;
}

const struct p11g_notifier *p11g_policy_notifier(const struct p11g_policy *p, const char *name)
{
	for (size_t i = 0; p && name && i < p->n_notifiers; i++)
		if (!strcmp(p->notifiers[i].name, name))
			return &p->notifiers[i];
	return NULL;
}

/* ---- a rule's "notify" ----------------------------------------------------------- */

int pol_parse_notify(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r)
{
	const struct pjson_value *a = m->value;

	if (pol_expect_strings(c, m, true) < 0)
		return -1;
	if (a->u.arr.n > NOTIFY_NAMES_MAX)
		return pol_fail_at_value(c, a, "\"notify\" names more than %d notifiers",
		                         NOTIFY_NAMES_MAX);
	if (!(r->notify = calloc(a->u.arr.n + 1, sizeof(char *))))
		return pol_fail_oom(c);
	for (size_t k = 0; k < a->u.arr.n; k++) {
		const struct pjson_value *e = a->u.arr.v[k];
		if (!notifier_name_ok(c, e))
			return -1;
		for (size_t j = 0; j < k; j++)
			if (!strcmp(r->notify[j], e->u.str.s))
				return pol_fail_at_value(c, e, "notifier \"%s\" is listed twice",
				                         e->u.str.s);
		if (!(r->notify[k] = strdup(e->u.str.s)))
			return pol_fail_oom(c);
		r->n_notify = k + 1;
	}
	return 0;
}

int pol_note_notify(struct p11g_policy_builder *ld, struct rule_ctx *c,
                    const struct pjson_value *rv, size_t rule)
{
	const struct pjson_member *m = pjson_get(rv, "notify");
	if (!m)
		return 0;
	const struct pjson_value *a = m->value;
	struct pol_notify_ref *v =
	    reallocarray(ld->notify_refs, ld->n_notify_refs + a->u.arr.n, sizeof(*v));
	if (!v)
		return pol_fail_oom(c);
	ld->notify_refs = v;
	for (size_t k = 0; k < a->u.arr.n; k++)
		ld->notify_refs[ld->n_notify_refs++] =
		    (struct pol_notify_ref){.rule = rule,
		                            .index = k,
		                            .line = a->u.arr.v[k]->line,
		                            .column = a->u.arr.v[k]->column};
	return 0;
}

int pol_check_notify(struct p11g_policy_builder *ld, p11g_err *err)
{
	const struct p11g_policy *p = ld->pol;
	for (size_t i = 0; i < ld->n_notify_refs; i++) {
		const struct pol_notify_ref *ref = &ld->notify_refs[i];
		const struct p11g_rule *r = &p->rules[ref->rule];
		if (!p11g_policy_notifier(p, r->notify[ref->index]))
			return pol_fail_at(
			    err, r->file, ref->line, ref->column,
			    "rule \"%s\" names no notifier the policy defines (\"%s\"; "
			    "see \"notifiers\")",
			    r->name, r->notify[ref->index]);
	}
	return 0;
}
