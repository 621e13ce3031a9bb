/* Name-service lookups (users, groups) for approvald's identities: policy is given the result. */
#include <grp.h>
#include <pwd.h>

#include "approvald/names.h"

/* An upper bound for the database buffers (and P11G_IDENT_GROUPS_MAX for the
 * group lists): a broken NSS backend must not make us allocate without limit. */
#define PW_BUF_MAX (1024 * 1024)

static int grow(char **buf, size_t *size)
{
	if (*size >= PW_BUF_MAX)
		return -ERANGE;
	size_t nsize = *size ? *size * 2 : 1024;
	char *n = realloc(*buf, nsize);
	if (!n)
		return -ENOMEM;
	*buf = n;
	*size = nsize;
	return 0;
}

/* The group's name into *ret (malloc'd), or *ret NULL when the gid has none. */
static int group_name(gid_t gid, char **ret)
{
	_cleanup_free_ char *buf = NULL;
	size_t size = 0;
	struct group gr, *res = NULL;
	int r;

	*ret = NULL;
	for (;;) {
		if ((r = grow(&buf, &size)) < 0)
			return r == -ERANGE ? 0 : r;
		r = getgrgid_r(gid, &gr, buf, size, &res);
		if (r != ERANGE)
			break;
	}
	if (r != 0 || !res)
		return 0;
	*ret = strdup(res->gr_name);
	return *ret ? 0 : -ENOMEM;
}

static int add_group(struct p11g_ident *id, char *name)
{
	for (size_t i = 0; i < id->n_groups; i++) {
		if (strcmp(id->groups[i], name) == 0) {
			free(name);
			return 0;
		}
	}
	char **v = realloc(id->groups, (id->n_groups + 1) * sizeof(*v));
	if (!v) {
		free(name);
		return -ENOMEM;
	}
	id->groups = v;
	id->groups[id->n_groups++] = name;
	return 0;
}

static int add_gid(struct p11g_ident *id, gid_t gid)
{
	char *name;
	int r = group_name(gid, &name);
	if (r < 0)
		return r;
	return name ? add_group(id, name) : 0;
}

int p11g_ident_resolve(uid_t uid, gid_t gid, pid_t pid, struct p11g_ident *ret)
{
	struct p11g_ident id = {.uid = uid, .gid = gid, .pid = pid};
	_cleanup_free_ char *buf = NULL;
	_cleanup_free_ gid_t *gids = NULL;
	size_t size = 0;
	struct passwd pw, *res = NULL;
	int r;

	for (;;) {
		if ((r = grow(&buf, &size)) < 0) {
			if (r != -ERANGE)
				return r;
			res = NULL;
			break;
		}
		r = getpwuid_r(uid, &pw, buf, size, &res);
		if (r != ERANGE)
			break;
	}
	/* A failed lookup (NSS backend down) counts as no entry: the caller
	 * then gets fewer rights, never more. */
	if (r != 0)
		res = NULL;

	if (!res) {
		r = add_gid(&id, gid);
		goto done;
	}
	/* A name that does not fit is left empty rather than cut: a cut name
	 * could equal someone else's. */
	if (strlen(res->pw_name) < sizeof(id.user))
		memcpy(id.user, res->pw_name, strlen(res->pw_name) + 1);

	int n = 32;
	for (;;) {
		gid_t *g = realloc(gids, (size_t)n * sizeof(*g));
		if (!g) {
			r = -ENOMEM;
			goto done;
		}
		gids = g;
		int want = n;
		if (getgrouplist(res->pw_name, res->pw_gid, gids, &want) >= 0) {
			n = want;
			break;
		}
		/* glibc sets want to the size needed; others may not. */
		if (n >= P11G_IDENT_GROUPS_MAX) {
			r = -ERANGE;
			goto done;
		}
		n = want > n ? want : n * 2;
		if (n > P11G_IDENT_GROUPS_MAX)
			n = P11G_IDENT_GROUPS_MAX;
	}
	r = 0;
	for (int i = 0; i < n && r == 0; i++)
		r = add_gid(&id, gids[i]);
done:
	if (r < 0) {
		/* The header promises -ENOMEM; an endless group list is one. */
		p11g_ident_clear(&id);
		return -ENOMEM;
	}
	*ret = id;
	return 0;
}
