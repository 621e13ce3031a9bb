/* Trusted issuers' key sets fetched from their jwks_url (issue 19): at start, hourly, again on
 * a token naming a key the set lacks (at most once in P11G_JWKS_WANT_GAP_S), with backoff after
 * a failure; a failed fetch keeps the last good keys.  Each fetch is a run of approvald-fetch
 * (fetch_main.c), so the event loop never waits on the network. */
#ifndef P11GATE_JWKS_SOURCES_H
#define P11GATE_JWKS_SOURCES_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "approvald/idtoken.h"
#include "policy/policy.h"

#define P11G_JWKS_REFRESH_S  3600 /* a good key set is fetched again after an hour */
#define P11G_JWKS_WANT_GAP_S 10   /* a token's unknown kid fetches again at most this often */
/* after a failure: the gap (10 s), doubling up to RETRY_MAX */
#define P11G_JWKS_RETRY_MAX_S 600
#define P11G_JWKS_FETCH_MAX_S 30 /* a fetch still running then is killed (it allows itself 20) */

struct p11g_jwks_source {
	char *url, *ca_file;
	struct p11g_jwks *keys; /* the last good set; NULL: none yet */
	int64_t fetched;        /* when it was fetched (wall clock); 0: never */
	int64_t last_try_us, next_us;
	unsigned failures; /* in a row */
	char error[256];   /* the last failure, escaped; "" after a success */
	pid_t pid;         /* approvald-fetch running; 0: none */
	int out_fd, err_fd;
	int64_t started_us;
	bool named; /* by the policy in force */
};

struct p11g_jwks_sources {
	struct p11g_jwks_source *v;
	size_t n;
	char program[PATH_MAX]; /* approvald-fetch; "" until found */
	unsigned fetches;       /* started, in all */
	unsigned gap_s; /* an unknown kid fetches again at most this often, and the first retry
	                 * after a failure waits as long (approvald.conf jwks_refetch; 0: the
	                 * default, P11G_JWKS_WANT_GAP_S) */
};

/* The policy now in force: a source for each jwks_url it names (fetched at once when new),
 * those it no longer names dropped. */
void p11g_jwks_sources_sync(struct p11g_jwks_sources *s, const struct p11g_policy *p);
/* Once a second: fetches that are due start, those running too long are killed. */
void p11g_jwks_sources_tick(struct p11g_jwks_sources *s);
/* The keys of issuer is (its jwks_file's are the policy's): NULL when there are none yet. */
const struct p11g_jwks *p11g_jwks_sources_keys(const struct p11g_jwks_sources *s,
                                               const struct p11g_issuer *is);
/* A token named a key the set lacks, or there is no set yet: fetch again unless a fetch ran in
 * the last P11G_JWKS_WANT_GAP_S.  The source's last error, for the refusal (never NULL). */
const char *p11g_jwks_sources_want(struct p11g_jwks_sources *s, const struct p11g_issuer *is);
/* Whether pid was one of the fetches (then its answer is taken). */
bool p11g_jwks_sources_exited(struct p11g_jwks_sources *s, pid_t pid, int status);
/* For status: [{"url", "keys", "fetched", "error", "fetching"}]; NULL when out of memory. */
json_t *p11g_jwks_sources_status(const struct p11g_jwks_sources *s);
void p11g_jwks_sources_free(struct p11g_jwks_sources *s);

#endif
