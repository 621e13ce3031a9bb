/* Refused uses in bounded number: who floods the socket cannot flood the audit and the store. */
#ifndef P11GATE_APPROVALD_REFUSALS_H
#define P11GATE_APPROVALD_REFUSALS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Every refused use used to write a durable, hash-chained record, and any uid may send one:
 * 4 connections of a uid with no role grew a store by 35 MB in 5 seconds.  Now, per uid and
 * interval (P11G_REFUSALS_INTERVAL seconds):
 *
 *  - the first refusal of each (key, reason) is written as it happens (count 1), the rest of
 *    the interval's are counted and written as one record with their count when the interval
 *    ends (p11g_refusals_each_due, from the once-a-second sweep, and at shutdown);
 *  - a uid has at most P11G_REFUSALS_KEYS distinct (key, reason) pairs in an interval; more
 *    go to its pair ("*", "*");
 *  - a uid with a role for the key (it may order, approve or sign for its rule) has its first
 *    P11G_REFUSALS_ROLE_RECORDS refusals of an interval written one by one, as before; past
 *    that it is aggregated like anyone;
 *  - the whole table holds P11G_REFUSALS_MAX pairs; past that, refusals are counted into one
 *    overflow pair (uid -1).
 *
 * So a uid writes at most 2 * (P11G_REFUSALS_KEYS + 1) + P11G_REFUSALS_ROLE_RECORDS records a
 * minute, whatever it sends.  A crash loses the counts of the current interval, not the
 * first record of each kind.
 */
#define P11G_REFUSALS_INTERVAL     60
#define P11G_REFUSALS_KEYS         8
#define P11G_REFUSALS_ROLE_RECORDS 120
#define P11G_REFUSALS_MAX          4096

struct p11g_refusals;

/* One aggregate to write: count refusals of key for reason by uid, from first to last. */
struct p11g_refusal_agg {
	uid_t uid;
	gid_t gid;
	const char *key;
	const char *reason;
	uint64_t count;
	int64_t first, last;
};

/* NULL when out of memory. */
struct p11g_refusals *p11g_refusals_new(void);
void p11g_refusals_free(struct p11g_refusals *r);

enum p11g_refusal_verdict {
	P11G_REFUSAL_WRITE,  /* write this refusal's record now */
	P11G_REFUSAL_COUNTED /* counted; written with the aggregate */
};

/* A refused use by uid (gid: its primary group, for the record's actor) of key for reason,
 * at now (seconds). */
enum p11g_refusal_verdict p11g_refusals_note(struct p11g_refusals *r, uid_t uid, gid_t gid,
                                             const char *key, const char *reason, bool has_role,
                                             int64_t now);

/*
 * Calls fn for every aggregate whose interval ended by now (every one when all) and that
 * counted refusals past its first; changes nothing, so a store transaction that runs it
 * may run again.  fn returning < 0 stops and is returned; 0 otherwise.  Once what fn wrote
 * is committed, p11g_refusals_forget_due with the same now and all forgets those pairs
 * (and the pairs whose interval ended with nothing counted); a failed commit keeps them
 * for the next sweep.
 */
int p11g_refusals_each_due(const struct p11g_refusals *r, int64_t now, bool all,
                           int (*fn)(void *arg, const struct p11g_refusal_agg *a), void *arg);
void p11g_refusals_forget_due(struct p11g_refusals *r, int64_t now, bool all);

/* Whether uid still has its role allowance of refusals written one by one this interval.
 * Past it, ops.c spares its refusals the walk of ended operations that makes their
 * message precise ("expired" rather than "no operation"): a uid with a role must not make
 * every refusal cost a thousand reads either. */
bool p11g_refusals_allowance_left(const struct p11g_refusals *r, uid_t uid, int64_t now);

/* Whether a flush at now would have something to do (a pair whose minute is over; any pair
 * when all). */
bool p11g_refusals_due(const struct p11g_refusals *r, int64_t now, bool all);

/* Pairs held (for tests and the benchmark). */
size_t p11g_refusals_size(const struct p11g_refusals *r);

#endif
