/* approvald's listening sockets (listen.c). */
#ifndef P11GATE_APPROVALD_LISTEN_H
#define P11GATE_APPROVALD_LISTEN_H

#include <stdbool.h>
#include <sys/types.h>

#include "p11gate/common.h"

struct p11g_listener {
	int fd;
	bool own; /* we created the file (and remove it) */
	dev_t dev;
	ino_t ino;
};

/* Binds and listens on path with mode (no moment more open than mode); fills *l.  A socket
 * file nobody answers on is replaced; a live daemon's socket, or a file that is no socket,
 * is refused. */
int p11g_listen_path(const char *path, mode_t mode, struct p11g_listener *l, p11g_err *err);

/* Closes a listener and removes its file if it is still ours (a newer daemon may have
 * replaced it). */
void p11g_listener_close(struct p11g_listener *l, const char *path);

#endif
