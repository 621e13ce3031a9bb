/* systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram to
 * $NOTIFY_SOCKET per state change, when systemd gave one. */
#ifndef APPROVALD_SDNOTIFY_H
#define APPROVALD_SDNOTIFY_H

/* Sends state ("READY=1", "RELOADING=1", "STOPPING=1", "STATUS=...", newline-separated) to
 * $NOTIFY_SOCKET (a path, or "@name" for an abstract socket).  Nothing without one; a failure
 * is logged, never fatal: the service manager's view is not approvald's work. */
void p11g_sd_notify(const char *state);

#endif
