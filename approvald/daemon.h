/* approvald serve: configuration, state (policy, store, server) and the verb table. */
#ifndef P11GATE_DAEMON_H
#define P11GATE_DAEMON_H

#include <openssl/evp.h>

#include "approvald/host.h"
#include "approvald/local.h"
#include "approvald/checkpoint_job.h"
#include "approvald/jwks_sources.h"
#include "approvald/ops.h"
#include "approvald/server.h"
#include "approvald/store.h"
#include "approvald/web.h"
#include "approvald/notify.h"
#include "approvald/notify_sender.h"

struct p11g_daemon_config {
	char *state_dir;
	char *socket_path;
	char *policy_dir;
	enum p11g_durability durability;
	uint64_t max_map_size; /* bytes the store may grow to; 0: the store's default (64 GiB) */
	struct p11g_server_config server;
	struct p11g_ops_limits limits;
	struct p11g_host_config host; /* the PKCS#11 socket (host.c) */
	/* signed audit checkpoints (checkpoint.h): the key, and how often */
	char *audit_key_file;
	char *audit_key; /* or a key on a token: pkcs11:URI (approvald-audit-signer signs) */
	unsigned checkpoint_records; /* after this many new records (1000) */
	unsigned checkpoint_seconds; /* or this long after new ones (300) */
	unsigned jwks_refetch;       /* seconds: jwks_url fetched again on an unknown kid at most
	                              * this often, and first retried after a failure (10) */
	struct p11g_web_config web;  /* the web page (web.h) */
	struct p11g_notify_config notify; /* notifications (notify.h) */
};

struct p11g_daemon {
	struct p11g_daemon_config cfg;
	struct p11g_ops ops;
	struct p11g_server *server;
	const struct p11g_host_ops *host; /* NULL: not hosting PKCS#11 */
	EVP_PKEY *audit_key;              /* NULL: no checkpoints */
	/* audit_key = pkcs11:: signs on the token (audit_key then the public key) */
	const struct p11g_host_ops *audit_signer;
	/* a checkpoint on the token being signed (checkpoint_job.h) */
	struct p11g_checkpoint_job checkpoint_job;
	struct p11g_jwks_sources jwks;    /* issuers' key sets from their jwks_url */
	struct p11g_web web;              /* approvald-web, when web_socket is set */
	struct p11g_notify_sender notify; /* approvald-notify, while the policy has notifiers */
	unsigned ticks;
	uint64_t checkpoint_seq;       /* the last record a checkpoint signed */
	int64_t checkpoint_time;       /* p11g_mono_us() then */
	int64_t checkpoint_backoff_us; /* after failures: the wait before the next try */
	int64_t checkpoint_retry_us;   /* not before this (p11g_mono_us()) */
};

/* Defaults for every setting. */
void p11g_daemon_config_init(struct p11g_daemon_config *cfg);
/* Reads `key = value` lines (# comments) over cfg.  Unknown keys and bad
 * values are errors "FILE:LINE:COLUMN: message" (bad_request; internal when memory ran
 * out). */
int p11g_daemon_config_load(const char *path, struct p11g_daemon_config *cfg, p11g_err *err);
void p11g_daemon_config_clear(struct p11g_daemon_config *cfg);

/* Runs the daemon until SIGTERM/SIGINT.  host serves cfg's PKCS#11 socket (NULL
 * in a binary without the gate: a pkcs11_socket setting is then refused).
 * Returns the process exit code. */
int p11g_daemon_run(const struct p11g_daemon_config *cfg, const struct p11g_host_ops *host);

/* The verb table the server dispatches from (handlers.c). */
extern const struct p11g_handler p11g_handlers[];
extern const size_t p11g_n_handlers;

#endif
