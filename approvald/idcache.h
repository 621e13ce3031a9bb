/* The identities (user name, groups) of recent callers, shared by a poll round's requests and by
 * resumed ones while the files they were read from stay as they were (idcache.c; server.c's). */
#ifndef P11GATE_IDCACHE_H
#define P11GATE_IDCACHE_H

#include <sys/stat.h>

#include "policy/policy.h"

#define P11G_IDCACHE_SIZE  8       /* distinct (uid, gid) whose lookup rounds share */
#define P11G_IDCACHE_TTL   1000000 /* µs: a cached lookup older than this is made again */
#define P11G_IDCACHE_FILES 3       /* /etc/passwd, /etc/group, /etc/nsswitch.conf */

struct p11g_file_sig {
	int err; /* stat's errno, 0 when it succeeded */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
};

struct p11g_idcache {
	bool usable; /* lookups may be shared now (a round and its readers) */
	struct {
		struct p11g_ident id;
		int64_t at_us; /* when it was looked up */
	} ids[P11G_IDCACHE_SIZE];
	size_t n;
	struct p11g_file_sig files[P11G_IDCACHE_FILES]; /* what the cached lookups were made from */
};

/* At the start of a round or of resuming parked requests (no handler runs, so nothing borrows a
 * cached identity): forgets every lookup when a file they were read from changed (useradd,
 * gpasswd and editors replace or rewrite it), and lookups older than P11G_IDCACHE_TTL (for
 * sources that are not files). */
void p11g_idcache_refresh(struct p11g_idcache *c, int64_t now);
/* The identity of (uid, gid) with pid: shared from the cache while it is usable (*ret_owned
 * false: the cache owns the group names), else looked up afresh (*ret_owned true: the caller
 * clears it).  0 or -ENOMEM. */
int p11g_idcache_get(struct p11g_idcache *c, uid_t uid, gid_t gid, pid_t pid,
                     struct p11g_ident *ret, bool *ret_owned);
void p11g_idcache_clear(struct p11g_idcache *c);

#endif
