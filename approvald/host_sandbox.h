/* The PKCS#11 host's confinement: its user, no new privileges, a seccomp allow-list. */
#ifndef P11GATE_HOST_SANDBOX_H
#define P11GATE_HOST_SANDBOX_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "approvald/host_proto.h"
#include "p11gate/common.h"

/* Switches to uid, gid and exactly groups[0..n_groups) (all three ids of each, no
 * capabilities left) and checks it took.  -1 with err. */
/* Reads the setup message on P11G_HOST_FD_SETUP (host_proto.h) and closes it: the settings
 * and the PIN, in a page of p11g_secret_alloc (P11G_HOST_PIN_MAX bytes).  0, or -1 with err
 * saying what was wrong with it (the program then ends). */
int p11g_host_setup_read(json_t **ret, unsigned char **pin, size_t *pin_len, p11g_err *err);

/* Empties the capability sets (and the ambient one): 0, or -1 with err. */
int p11g_sandbox_drop_capabilities(p11g_err *err);
int p11g_sandbox_user(uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups, p11g_err *err);

/* Sets PR_SET_NO_NEW_PRIVS and, unless mode is P11G_SECCOMP_OFF, loads the
 * allow-list (host_sandbox.c says what is in it): outside it, the process is
 * killed (kill) or the call is logged and let through (log).  -1 with err. */
int p11g_sandbox_seccomp(enum p11g_seccomp_mode mode, p11g_err *err);

#endif
