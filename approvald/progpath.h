/* Where approvald's helper programs are (approvald-pkcs11-host, approvald-audit-signer,
 * approvald-fetch). */
#ifndef P11GATE_PROGPATH_H
#define P11GATE_PROGPATH_H

#include <sys/types.h>

#include "p11gate/common.h"

/* name beside the running binary (a build tree, or an install that keeps them in one
 * directory), else in P11GATE_LIBEXECDIR; into out (PATH_MAX).  0, or -1 with err internal
 * naming the path tried. */
int p11g_find_program(const char *name, char *out, p11g_err *err);

/* Starts program with argv as a helper of approvald: standard input /dev/null, each
 * moves[i][0] given as descriptor moves[i][1] (the rest close on exec), signals unblocked and at
 * their defaults, and of the environment only an https proxy's settings and a test build's
 * sanitizer options.  0 with *ret_pid, or posix_spawn's error number. */
int p11g_spawn_helper(const char *program, const char *const *argv, const int (*moves)[2],
                      size_t n_moves, pid_t *ret_pid);

#endif
