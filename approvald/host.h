/* approvald hosting the real PKCS#11 module: its PIN, its socket, one process per client. */
#ifndef P11GATE_HOST_H
#define P11GATE_HOST_H

#include <sys/types.h>

#include "approvald/host_proto.h"
#include "p11gate/common.h"
#include "policy/policy.h"

#define P11G_HOST_ENV_MAX 16

struct p11g_host_config {
	char *socket; /* the PKCS#11 socket; NULL: not hosting */
	mode_t socket_mode;
	char *module;       /* the real PKCS#11 module */
	char *pin_file;     /* the user PIN, readable only by approvald's user */
	char *token;        /* log in to this token label only; NULL: every initialised token */
	unsigned wait;      /* on-demand approval wait for PKCS#11 clients, seconds */
	size_t message_max; /* largest RPC message body a client may send (16 MiB) */
	int frame_ms;       /* a message begun must arrive within (frame_timeout) */
	char *env[P11G_HOST_ENV_MAX]; /* NAME=VALUE set for the module (SOFTHSM2_CONF=...) */
	size_t n_env;
	/* who may create, change and destroy token objects through the socket
	 * (pkcs11_object_admins); nobody when empty */
	struct p11g_principals object_admins;
	/* pkcs11_user: the user each client's process runs as (NULL: approvald's
	 * own); its uid and primary group, looked up when the setting is read */
	char *user;
	uid_t user_uid;
	gid_t user_gid;
	enum p11g_seccomp_mode seccomp; /* pkcs11_seccomp: kill (default), log, off */
};

struct p11g_server;

/* Frees cfg's settings (daemon.c, which parses them). */
void p11g_host_config_clear(struct p11g_host_config *cfg);

/*
 * The isolated host as the daemon sees it: a component the binary that has
 * the gate registers (p11g_daemon_run's host), so approvald_core needs
 * nothing from the module; without one, pkcs11_socket is refused.
 */
struct p11g_host_ops {
	/* Makes this process non-dumpable, reads the PIN file (refusing one
	 * other users could read) into memory kept out of core dumps, finds
	 * approvald-pkcs11-host and runs it once to log in as it will for each
	 * client (as pkcs11_user, under its filter), proving the configuration.
	 * -1 with err saying what is wrong. */
	int (*prepare)(const struct p11g_host_config *cfg, p11g_err *err);
	/* Listens on the PKCS#11 socket: each connection gets a process
	 * (approvald-pkcs11-host, executed fresh) that serves the gated module to
	 * it, its decisions bound to the client's SO_PEERCRED, its link to
	 * approvald limited to the gate's verbs.  cfg must outlive the server. */
	int (*listen)(const struct p11g_host_config *cfg, struct p11g_server *server,
	              p11g_err *err);
	/* SIGCHLD: a client's process ended. */
	void (*child_exited)(pid_t pid, int status);
	/* Wipes the PIN prepare read; the host serves no more. */
	void (*end)(void);
	/* Wipes this process's copy of the PIN alone: in a child forked from approvald that
	 * needs none (the listing and verify processes). */
	void (*forget)(void);
	/* The audit key on a token (audit_key = pkcs11:URI): approvald-audit-signer,
	 * executed fresh as the host is (the PIN, pkcs11_user, its filter; prepare's
	 * checks run on first use when there is no pkcs11_socket), gives the key's
	 * DER SubjectPublicKeyInfo, or signs text (DER ECDSA-Sig-Value, PKCS#1
	 * v1.5 over SHA-256, or EdDSA).  Malloc'd answer; -1 with err. */
	int (*audit_pubkey)(const struct p11g_host_config *cfg, const char *uri,
	                    unsigned char **der, size_t *der_len, p11g_err *err);
	int (*audit_sign)(const struct p11g_host_config *cfg, const char *uri, const char *text,
	                  unsigned char **sig, size_t *sig_len, p11g_err *err);
};

/* The host of approvald-local (host.c, over module/gate_host.h). */
extern const struct p11g_host_ops p11g_isolated_host;

#endif
