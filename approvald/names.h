/* Who a uid is, as the user and group databases say now: the identities approvald hands policy. */
#ifndef P11GATE_NAMES_H
#define P11GATE_NAMES_H

#include <sys/types.h>

#include "policy/policy.h"

/*
 * Resolves user name and current groups for uid (getpwuid_r, getgrouplist,
 * getgrgid_r).  A uid without a passwd entry gets user "" and only its
 * primary gid's group.  0 or -ENOMEM.  Every call asks the databases: the
 * caching is server.c's (caller_of shares one lookup per uid and gid within a
 * round while /etc/passwd, /etc/group and /etc/nsswitch.conf stay unchanged,
 * for at most a second), so a removal from a group applies from the next
 * round.  host.c asks once per PKCS#11 connection.
 */
int p11g_ident_resolve(uid_t uid, gid_t gid, pid_t pid, struct p11g_ident *ret);

#endif
