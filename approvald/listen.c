/* approvald's listening sockets: bound with their final mode, a stale one replaced, a live
 * daemon's or a non-socket never touched. */
#include "approvald/listen.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "p11gate/errors.h"
#include "p11gate/log.h"

#define LISTEN_BACKLOG 128

static int sockaddr_for(const char *path, struct sockaddr_un *sa, p11g_err *err)
{
	size_t len = strlen(path);

	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (len == 0 || len >= sizeof(sa->sun_path))
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "socket path \"%s\" is empty or longer than %zu bytes", path,
		                    sizeof(sa->sun_path) - 1);
	memcpy(sa->sun_path, path, len + 1);
	return 0;
}

/* Removes a socket file nobody answers on; refuses a live daemon's socket and
 * anything that is not a socket (a typo must not delete someone's file). */
static int clear_stale_socket(const char *path, const struct sockaddr_un *sa, p11g_err *err)
{
	struct stat st;
	_cleanup_close_ int fd = -1;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot inspect %s: %m", path);
	}
	if (!S_ISSOCK(st.st_mode))
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "%s exists and is not a socket; refusing to replace it", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot create a socket: %m");
	/* Non-blocking: a live daemon with a full backlog answers EAGAIN
	 * instead of keeping us waiting, and is just as live. */
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 || errno == EAGAIN)
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "another approvald is already serving on %s", path);
	if (errno != ECONNREFUSED)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot probe the socket %s: %m", path);
	if (unlink(path) < 0 && errno != ENOENT)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot remove the stale socket %s: %m",
		                    path);
	p11g_info("removed the stale socket %s", path);
	return 0;
}

/* Binds and listens on path with the given mode; fills *l. */
int p11g_listen_path(const char *path, mode_t mode, struct p11g_listener *l, p11g_err *err)
{
	struct sockaddr_un sa;
	struct stat st;
	mode_t old_umask;
	int r;

	if (sockaddr_for(path, &sa, err) < 0 || clear_stale_socket(path, &sa, err) < 0)
		return -1;
	l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (l->fd < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot create a socket: %m");
	/* The umask makes bind create the file with the final mode, so there is
	 * no moment when it is more open than configured; chmod then sets bits
	 * a umask cannot grant. */
	old_umask = umask(~mode & 0777);
	r = bind(l->fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old_umask);
	if (r < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot bind %s: %m", path);
	if (chmod(path, mode) < 0 || lstat(path, &st) < 0) {
		p11g_err_set(err, P11G_E_INTERNAL, "cannot set the mode of %s: %m", path);
		unlink(path);
		return -1;
	}
	l->own = true;
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	if (listen(l->fd, LISTEN_BACKLOG) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot listen on %s: %m", path);
	return 0;
}

/* Closes a listener and removes its file, if it is still ours (a newer
 * daemon may have replaced it). */
void p11g_listener_close(struct p11g_listener *l, const char *path)
{
	struct stat st;

	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	if (l->own && path && lstat(path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
		unlink(path);
	l->own = false;
}
