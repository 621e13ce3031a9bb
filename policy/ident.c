/* Identities (uid, user, groups: data approvald resolved) and the principals policy names. */
#include "policy/policy.h"
#include "p11gate/errors.h"

/* Upper bound for a principal's or a group's name. */
#define NAME_MAX_LEN 255

void p11g_ident_clear(struct p11g_ident *id)
{
	if (!id)
		return;
	for (size_t i = 0; i < id->n_groups; i++)
		free(id->groups[i]);
	free(id->groups);
	id->groups = NULL;
	id->n_groups = 0;
}

json_t *p11g_ident_to_json(const struct p11g_ident *id)
{
	json_t *groups = json_array();
	if (!groups)
		return NULL;
	for (size_t i = 0; i < id->n_groups; i++) {
		if (json_array_append_new(groups, json_string(id->groups[i])) < 0) {
			json_decref(groups);
			return NULL;
		}
	}
	return json_pack("{s:I, s:s, s:o}", "uid", (json_int_t)id->uid, "user", id->user, "groups",
	                 groups);
}

static bool plain_string(const json_t *s, size_t max)
{
	return json_is_string(s) && json_string_length(s) <= max &&
	       strlen(json_string_value(s)) == json_string_length(s);
}

/* Members other than uid, user and groups are ignored: callers store this
 * object inside larger approval records. */
int p11g_ident_from_json(const json_t *obj, struct p11g_ident *ret)
{
	struct p11g_ident id = {.gid = (gid_t)-1};
	const json_t *uid, *user, *groups, *g;
	size_t i;

	if (!json_is_object(obj))
		return -EINVAL;
	uid = json_object_get(obj, "uid");
	user = json_object_get(obj, "user");
	groups = json_object_get(obj, "groups");
	if (!json_is_integer(uid) || json_integer_value(uid) < 0 ||
	    json_integer_value(uid) >= (json_int_t)(uid_t)-1 ||
	    !plain_string(user, sizeof(id.user) - 1) || !json_is_array(groups) ||
	    json_array_size(groups) > P11G_IDENT_GROUPS_MAX)
		return -EINVAL;
	id.uid = (uid_t)json_integer_value(uid);
	memcpy(id.user, json_string_value(user), json_string_length(user) + 1);
	json_array_foreach(groups, i, g)
	{
		if (!plain_string(g, NAME_MAX_LEN) || json_string_length(g) == 0) {
			p11g_ident_clear(&id);
			return -EINVAL;
		}
	}
	if (json_array_size(groups) > 0) {
		id.groups = calloc(json_array_size(groups), sizeof(*id.groups));
		if (!id.groups)
			return -ENOMEM;
	}
	json_array_foreach(groups, i, g)
	{
		id.groups[i] = strdup(json_string_value(g));
		if (!id.groups[i]) {
			p11g_ident_clear(&id);
			return -ENOMEM;
		}
		id.n_groups = i + 1;
	}
	*ret = id;
	return 0;
}

/* ---- principals --------------------------------------------------------- */

static bool valid_name(const char *s, size_t len)
{
	if (len == 0 || len > NAME_MAX_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || c == ':')
			return false;
	}
	/* Surrounding blanks are almost certainly a typo, never a real name. */
	return s[0] != ' ' && s[len - 1] != ' ';
}

static bool parse_uid(const char *s, uid_t *ret)
{
	uint64_t v = 0;
	size_t len = strlen(s);

	if (len == 0 || len > 10 || (s[0] == '0' && len > 1))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	/* (uid_t)-1 means "no uid" to the kernel. */
	if (v >= (uint64_t)(uid_t)-1)
		return false;
	*ret = (uid_t)v;
	return true;
}

int p11g_principal_parse(const char *s, struct p11g_principal *ret, p11g_err *err)
{
	struct p11g_principal p = {0};
	const char *rest;

	if (!s)
		return p11g_err_set(err, P11G_E_BAD_REQUEST, "missing principal");
	if (strncmp(s, "user:", 5) == 0) {
		p.kind = P11G_PRINCIPAL_USER;
		rest = s + 5;
		if (strlen(rest) >= sizeof(((struct p11g_ident *)0)->user))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "bad principal \"%s\": user name longer than %zu bytes",
			                    s, sizeof(((struct p11g_ident *)0)->user) - 1);
		if (!valid_name(rest, strlen(rest)))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "bad principal \"%s\": bad user name", s);
	} else if (strncmp(s, "group:", 6) == 0) {
		p.kind = P11G_PRINCIPAL_GROUP;
		rest = s + 6;
		if (!valid_name(rest, strlen(rest)))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "bad principal \"%s\": bad group name", s);
	} else if (strncmp(s, "uid:", 4) == 0) {
		p.kind = P11G_PRINCIPAL_UID;
		rest = s + 4;
		if (!parse_uid(rest, &p.uid))
			return p11g_err_set(err, P11G_E_BAD_REQUEST,
			                    "bad principal \"%s\": uid must be a decimal number "
			                    "below 4294967295",
			                    s);
	} else {
		return p11g_err_set(err, P11G_E_BAD_REQUEST,
		                    "bad principal \"%s\": expected user:NAME, group:NAME or uid:N",
		                    s);
	}
	p.name = strdup(rest);
	if (!p.name)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	*ret = p;
	return 0;
}

void p11g_principal_clear(struct p11g_principal *p)
{
	if (!p)
		return;
	free(p->name);
	p->name = NULL;
}

char *p11g_principal_to_string(const struct p11g_principal *p)
{
	static const char *const prefix[] = {
	    [P11G_PRINCIPAL_USER] = "user:",
	    [P11G_PRINCIPAL_GROUP] = "group:",
	    [P11G_PRINCIPAL_UID] = "uid:",
	};
	char num[16];
	const char *name = p->name;

	if ((unsigned)p->kind >= P11G_ARRAY_SIZE(prefix))
		return NULL;
	if (p->kind == P11G_PRINCIPAL_UID) {
		snprintf(num, sizeof(num), "%u", (unsigned)p->uid);
		name = num;
	}
	if (!name)
		return NULL;
	size_t a = strlen(prefix[p->kind]), b = strlen(name);
	char *s = malloc(a + b + 1);
	if (!s)
		return NULL;
	memcpy(s, prefix[p->kind], a);
	memcpy(s + a, name, b + 1);
	return s;
}

bool p11g_principal_matches(const struct p11g_principal *p, const struct p11g_ident *id)
{
	if (!p || !id)
		return false;
	switch (p->kind) {
	case P11G_PRINCIPAL_UID:
		return p->uid == id->uid;
	case P11G_PRINCIPAL_USER:
		/* "" means no passwd entry: such a uid is nobody's user:NAME. */
		return p->name && id->user[0] && strcmp(p->name, id->user) == 0;
	case P11G_PRINCIPAL_GROUP:
		if (!p->name)
			return false;
		for (size_t i = 0; i < id->n_groups; i++)
			if (id->groups[i] && strcmp(id->groups[i], p->name) == 0)
				return true;
		return false;
	}
	return false;
}

bool p11g_principals_match(const struct p11g_principals *ps, const struct p11g_ident *id)
{
	if (!ps)
		return false;
	for (size_t i = 0; i < ps->n; i++)
		if (p11g_principal_matches(&ps->v[i], id))
			return true;
	return false;
}
