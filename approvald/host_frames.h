/* The PKCS#11 host's check of each RPC message's header, in front of p11-kit's reader. */
#ifndef P11G_HOST_FRAMES_H
#define P11G_HOST_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct p11g_frames {
	int client; /* the client's socket (p11-kit writes replies to it directly) */
	struct ucred peer;
	int frame_ms;
	size_t message_max;
};

/*
 * Returns the descriptor to give p11_kit_remote_serve_module as its input
 * (its output stays the client's socket), or -1 with errno.  p11-kit's reads
 * of it are answered from the client's socket, message by message, checked
 * (host_frames.c); the descriptor itself only ever reads end of file, so a
 * p11-kit that read it other than through read(2) would see the client
 * hang up, never an unchecked byte.  Once only, before p11-kit reads.
 */
int p11g_frames_start(const struct p11g_frames *f);

/* After p11_kit_remote_serve_module returned: whether p11-kit read the
 * client through the check (false: it read the descriptor some other way,
 * and served nothing). */
bool p11g_frames_used(void);

#endif
