/* Rule snapshots: a rule as JSON, kept with each operation, and read back through the same
 * checks as a policy file. */
#include <stdlib.h>
#include <string.h>

#include "policy/policy_internal.h"
#include "p11gate/errors.h"
#include "p11gate/kvconf.h"
#include "p11gate/mech.h"

#define SNAPSHOT_NAME "<rule snapshot>"

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
	if (!p11g_rule_needs_approval(r)) {
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
		return pol_fail_at(err, SNAPSHOT_NAME, 0, 0, "not an object");
	/* Through text and the file parser, so a snapshot passes exactly the
	 * checks a policy file does (duplicate names included). */
	text = json_dumps(obj, JSON_INDENT(2));
	if (!text)
		return p11g_err_set_at(err, P11G_E_INTERNAL, SNAPSHOT_NAME, 0, 0,
		                       "cannot serialise");
	if (pjson_parse(text, strlen(text), &root, &je) < 0) {
		free(text);
		return pol_fail_at(err, SNAPSHOT_NAME, je.line, je.column, "%s", je.msg);
	}
	free(text);
	r = calloc(1, sizeof(*r));
	if (!r) {
		pjson_free(root);
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	}
	if (pol_parse_rule(&c, root, r) < 0) {
		pjson_free(root);
		p11g_rule_free(r);
		return -1;
	}
	pjson_free(root);
	*ret = r;
	return 0;
}
