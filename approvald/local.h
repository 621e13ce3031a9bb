/*
 * The verbs that work on local files rather than the daemon's socket: serve,
 * policy check and audit --state-dir.  They need libcrypto, p11-kit and LMDB,
 * which cost a client verb like `approvald show` about 3 ms of loading, so
 * they live in a second binary, approvald-local: the approvald binary (client
 * verbs, jansson only) re-executes it with the same arguments for these verbs
 * (local_exec.c); approvald-local links local.c and runs them.  In the
 * approvald binary the functions below do not return unless approvald-local
 * cannot be run: then the serve and policy check ones return 1 after one
 * error line, and p11g_local_audit exits 1 (it must not return -1, which
 * would read as a broken chain).
 */
#ifndef P11GATE_LOCAL_H
#define P11GATE_LOCAL_H

#include "approvald/store.h"

#define P11G_DEFAULT_STATE_DIR  "/var/lib/approvald"
#define P11G_DEFAULT_POLICY_DIR "/etc/approvald/policy.d"

/* Called first by the command line with its arguments, before getopt
 * reorders them: the re-execution passes them on unchanged. */
void p11g_local_init(int argc, char **argv);

/* approvald serve; NULL arguments take the config file's or default values.
 * Returns the exit status. */
int p11g_local_serve(const char *config, const char *state_dir, const char *socket,
                     const char *policy_dir);

/* approvald policy check PATH: prints the summary or the FILE:LINE:COLUMN
 * error.  Returns the exit status. */
int p11g_local_policy_check(const char *path);

/* approvald audit --state-dir DIR: visits the records after since (verify
 * false) or checks the store (verify true: the chain, the operations against
 * it, and with pubkey_file (a PEM public key) every checkpoint; *ret_report
 * set, audit_state.h).  0, or -1 with err (audit_broken for a broken chain). */
int p11g_local_audit(const char *dir, bool verify, const char *pubkey_file, uint64_t since,
                     p11g_audit_visit_fn visit, void *arg, json_t **ret_report, p11g_err *err);

/* approvald audit --export-pubkey [--config FILE]: prints the public half of
 * the config's audit_key_file, or of its audit_key on a token (read by
 * approvald-audit-signer), as PEM.  Returns the exit status. */
int p11g_local_export_pubkey(const char *config);

#endif
