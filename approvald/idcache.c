/* The identity cache of a poll round (idcache.h). */
#include "approvald/idcache.h"

#include <errno.h>
#include <string.h>

#include "approvald/names.h"
#include "p11gate/common.h"

static const char *const id_files[P11G_IDCACHE_FILES] = {"/etc/passwd", "/etc/group",
                                                         "/etc/nsswitch.conf"};

void p11g_idcache_clear(struct p11g_idcache *c)
{
	for (size_t i = 0; i < c->n; i++)
		p11g_ident_clear(&c->ids[i].id);
	c->n = 0;
}

static void file_sig_of(const char *path, struct p11g_file_sig *ret)
{
	struct stat st;
	memset(ret, 0, sizeof(*ret));
	if (stat(path, &st) < 0) {
		ret->err = errno;
		return;
	}
	ret->dev = st.st_dev;
	ret->ino = st.st_ino;
	ret->size = st.st_size;
	ret->mtime = st.st_mtim;
	ret->ctime = st.st_ctim;
}

static bool file_sig_eq(const struct p11g_file_sig *a, const struct p11g_file_sig *b)
{
	return a->err == b->err && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
	       a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

void p11g_idcache_refresh(struct p11g_idcache *c, int64_t now)
{
	struct p11g_file_sig sig[P11G_IDCACHE_FILES];
	bool same = true;
	for (size_t i = 0; i < P11G_IDCACHE_FILES; i++) {
		file_sig_of(id_files[i], &sig[i]);
		same = same && file_sig_eq(&sig[i], &c->files[i]);
	}
	if (!same) {
		p11g_idcache_clear(c);
		memcpy(c->files, sig, sizeof(sig));
		return;
	}
	size_t keep = 0;
	for (size_t i = 0; i < c->n; i++) {
		if (now - c->ids[i].at_us < P11G_IDCACHE_TTL)
			c->ids[keep++] = c->ids[i];
		else
			p11g_ident_clear(&c->ids[i].id);
	}
	c->n = keep;
}

int p11g_idcache_get(struct p11g_idcache *c, uid_t uid, gid_t gid, pid_t pid,
                     struct p11g_ident *ret, bool *ret_owned)
{
	for (size_t i = 0; c->usable && i < c->n; i++) {
		const struct p11g_ident *id = &c->ids[i].id;
		if (id->uid == uid && id->gid == gid) {
			*ret = *id; /* shares the group names, which the cache owns */
			ret->pid = pid;
			*ret_owned = false;
			return 0;
		}
	}
	int r = p11g_ident_resolve(uid, gid, pid, ret);
	if (r < 0)
		return r;
	*ret_owned = true;
	if (c->usable && c->n < P11G_IDCACHE_SIZE) {
		c->ids[c->n].id = *ret;
		c->ids[c->n++].at_us = p11g_mono_us();
		*ret_owned = false;
	}
	return 0;
}
