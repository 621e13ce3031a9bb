/* How approvald starts approvald-pkcs11-host: the descriptors it inherits and its setup message. */
#ifndef P11GATE_HOST_PROTO_H
#define P11GATE_HOST_PROTO_H

/*
 * approvald forks and executes approvald-pkcs11-host (pkcs11_host.c) for each
 * PKCS#11 client, and once at start-up with "--check" to log in.  The new
 * program inherits approvald's stderr, /dev/null as stdin and stdout, and
 * exactly these descriptors above them (close_range'd before the exec):
 *
 *   3  the client's connection (absent with --check)
 *   4  its link to approvald, served as a connection of the client's uid
 *      (absent with --check)
 *   5  the read end of a pipe holding the setup message, then EOF:
 *        a 4-byte big-endian length and a JSON object of that length (the
 *        settings below), then a 4-byte big-endian length and the PIN's bytes.
 *
 * Settings (every key present): "module", "socket", "token" (string or null),
 * "wait", "frame_ms", "message_max", "env" (["NAME=VALUE", ...]: the whole
 * environment of the new program), "user" (null, or {"uid", "gid", "groups":
 * [...]} to switch to), "seccomp" ("kill", "log" or "off"), "parent" (approvald's
 * pid), and without --check "client_uid", "client_pid", "object_admin".
 *
 * Neither the PIN nor a setting is in argv or the environment approvald
 * passes; the pipe is read once and closed.
 */
#define P11G_HOST_FD_CLIENT 3
#define P11G_HOST_FD_LINK   4
#define P11G_HOST_FD_SETUP  5

#define P11G_HOST_PROGRAM "approvald-pkcs11-host"

/* approvald-audit-signer (audit_signer.c): the same setup message with
 * "audit_key" (the URI) and "text" (what --sign signs), fd 4 the pipe for its
 * answer, no fd 3. */
#define P11G_AUDIT_SIGNER_PROGRAM "approvald-audit-signer"

/* The setup message's JSON is at most this long (16 env entries, paths). */
#define P11G_HOST_SETUP_MAX 49152

/* pkcs11_seccomp */
enum p11g_seccomp_mode {
	P11G_SECCOMP_KILL = 0, /* the default */
	P11G_SECCOMP_LOG,
	P11G_SECCOMP_OFF,
};

#endif
