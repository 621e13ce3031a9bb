/* Where approvald's helper programs are (approvald-pkcs11-host, approvald-audit-signer,
 * approvald-fetch). */
#ifndef P11GATE_PROGPATH_H
#define P11GATE_PROGPATH_H

#include "p11gate/common.h"

/* name beside the running binary (a build tree, or an install that keeps them in one
 * directory), else in P11GATE_LIBEXECDIR; into out (PATH_MAX).  0, or -1 with err internal
 * naming the path tried. */
int p11g_find_program(const char *name, char *out, p11g_err *err);

#endif
