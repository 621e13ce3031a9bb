/* What approvald's unprivileged helpers (approvald-web, approvald-notify) do first. */
#ifndef P11GATE_HELPER_USER_H
#define P11GATE_HELPER_USER_H

/* Root gives way to nobody (all its uids and gids, no supplementary groups): the descriptors
 * approvald gave are all such a helper needs.  0 (also when not root), or -1, logged. */
int p11g_helper_drop_root(void);

#endif
