/* A JSON builder whose failure sticks (as OpenSSH's sshbuf, p11-kit's p11_buffer): store
 * records and audit members are added unchecked, and one check at the end decides whether
 * anything is written, so a record missing a member after a failed allocation never is. */
#ifndef P11GATE_JBUILD_H
#define P11GATE_JBUILD_H

#include <jansson.h>

#include "p11gate/common.h"

struct p11g_jb {
	bool failed;
};

/* v as given; a NULL v (a constructor that failed) fails b. */
json_t *p11g_jb_new(struct p11g_jb *b, json_t *v);
/* obj[name] = v, taking v.  After a failure, or with a NULL obj or v, nothing is added (v is
 * released) and b has failed. */
void p11g_jb_set(struct p11g_jb *b, json_t *obj, const char *name, json_t *v);
void p11g_jb_set_str(struct p11g_jb *b, json_t *obj, const char *name, const char *s);
void p11g_jb_set_int(struct p11g_jb *b, json_t *obj, const char *name, int64_t n);
/* arr += v, taking v; as p11g_jb_set. */
void p11g_jb_append(struct p11g_jb *b, json_t *arr, json_t *v);
/* 0, or -1 with err internal_error ("out of memory") when any step failed. */
int p11g_jb_check(const struct p11g_jb *b, p11g_err *err);

#endif
