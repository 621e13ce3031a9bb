/* Refused uses in bounded number per uid and minute (refusals.h says what and why). */
#include "approvald/refusals.h"

#include <stdlib.h>
#include <string.h>

#include "p11gate/common.h"

struct pair {
	uid_t uid;
	gid_t gid;
	char *key, *reason;
	uint64_t counted; /* refusals past the first, not yet written */
	int64_t start, first_counted, last;
	struct pair *next; /* hash chain */
};

struct uid_use {
	uid_t uid;
	int64_t start;
	unsigned pairs;   /* distinct pairs opened in this interval */
	unsigned written; /* records written one by one in this interval (role allowance) */
	struct uid_use *next;
};

#define BUCKETS 1024

struct p11g_refusals {
	struct pair *pairs[BUCKETS];
	struct uid_use *uids[BUCKETS];
	size_t n_pairs, n_uids;
};

static unsigned hash_str(unsigned h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static unsigned pair_hash(uid_t uid, const char *key, const char *reason)
{
	return hash_str(hash_str(2166136261u ^ (unsigned)uid, key), reason) % BUCKETS;
}

struct p11g_refusals *p11g_refusals_new(void)
{
	return calloc(1, sizeof(struct p11g_refusals));
}

static void pair_free(struct pair *p)
{
	free(p->key);
	free(p->reason);
	free(p);
}

void p11g_refusals_free(struct p11g_refusals *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < BUCKETS; i++) {
		for (struct pair *p = r->pairs[i], *n; p; p = n) {
			n = p->next;
			pair_free(p);
		}
		for (struct uid_use *u = r->uids[i], *n; u; u = n) {
			n = u->next;
			free(u);
		}
	}
	free(r);
}

bool p11g_refusals_due(const struct p11g_refusals *r, int64_t now, bool all)
{
	for (size_t i = 0; i < BUCKETS; i++)
		for (const struct pair *p = r->pairs[i]; p; p = p->next)
			if (all || now - p->start >= P11G_REFUSALS_INTERVAL)
				return true;
	return false;
}

size_t p11g_refusals_size(const struct p11g_refusals *r)
{
	return r->n_pairs;
}

static struct pair *pair_find(struct p11g_refusals *r, uid_t uid, const char *key,
                              const char *reason)
{
	for (struct pair *p = r->pairs[pair_hash(uid, key, reason)]; p; p = p->next)
		if (p->uid == uid && !strcmp(p->key, key) && !strcmp(p->reason, reason))
			return p;
	return NULL;
}

static struct pair *pair_add(struct p11g_refusals *r, uid_t uid, gid_t gid, const char *key,
                             const char *reason, int64_t now)
{
	struct pair *p = calloc(1, sizeof(*p));
	unsigned h = pair_hash(uid, key, reason);

	if (!p || !(p->key = strdup(key)) || !(p->reason = strdup(reason))) {
		if (p)
			pair_free(p);
		return NULL;
	}
	p->uid = uid;
	p->gid = gid;
	p->start = now;
	p->next = r->pairs[h];
	r->pairs[h] = p;
	r->n_pairs++;
	return p;
}

static struct uid_use *uid_get(struct p11g_refusals *r, uid_t uid, int64_t now)
{
	unsigned h = (unsigned)uid % BUCKETS;
	struct uid_use *u;

	for (u = r->uids[h]; u; u = u->next)
		if (u->uid == uid)
			break;
	if (!u) {
		if (r->n_uids >= P11G_REFUSALS_MAX || !(u = calloc(1, sizeof(*u))))
			return NULL;
		u->uid = uid;
		u->start = now;
		u->next = r->uids[h];
		r->uids[h] = u;
		r->n_uids++;
	}
	if (now - u->start >= P11G_REFUSALS_INTERVAL) {
		u->start = now;
		u->pairs = 0;
		u->written = 0;
	}
	return u;
}

/* Counts one more refusal into p, past the first of its interval (which was written when
 * the pair was made). */
static enum p11g_refusal_verdict pair_note(struct pair *p, int64_t now)
{
	p->last = now;
	if (p->counted++ == 0)
		p->first_counted = now;
	return P11G_REFUSAL_COUNTED;
}

enum p11g_refusal_verdict p11g_refusals_note(struct p11g_refusals *r, uid_t uid, gid_t gid,
                                             const char *key, const char *reason, bool has_role,
                                             int64_t now)
{
	struct uid_use *u = uid_get(r, uid, now);
	struct pair *p;

	if (!u) /* the uid table is full (or no memory): count into the overflow pair */
		goto overflow;
	if (has_role && u->written < P11G_REFUSALS_ROLE_RECORDS) {
		u->written++;
		return P11G_REFUSAL_WRITE;
	}
	/* (A pair whose interval ended keeps counting until the sweep writes it.) */
	if ((p = pair_find(r, uid, key, reason)))
		return pair_note(p, now);
	if (u->pairs >= P11G_REFUSALS_KEYS) {
		key = "*";
		reason = "*";
		if ((p = pair_find(r, uid, key, reason)))
			return pair_note(p, now);
	}
	if (r->n_pairs >= P11G_REFUSALS_MAX || !(p = pair_add(r, uid, gid, key, reason, now)))
		goto overflow;
	u->pairs++;
	p->last = now;
	return P11G_REFUSAL_WRITE;

overflow:
	p = pair_find(r, (uid_t)-1, "*", "*");
	if (!p && !(p = pair_add(r, (uid_t)-1, (gid_t)-1, "*", "*", now))) {
		/* Not even that: write it.  One record is the most it can cost. */
		return P11G_REFUSAL_WRITE;
	}
	return pair_note(p, now);
}

int p11g_refusals_each_due(const struct p11g_refusals *r, int64_t now, bool all,
                           int (*fn)(void *arg, const struct p11g_refusal_agg *a), void *arg)
{
	for (size_t i = 0; i < BUCKETS; i++)
		for (const struct pair *p = r->pairs[i]; p; p = p->next) {
			if ((!all && now - p->start < P11G_REFUSALS_INTERVAL) || !p->counted)
				continue;
			struct p11g_refusal_agg a = {
			    .uid = p->uid,
			    .gid = p->gid,
			    .key = p->key,
			    .reason = p->reason,
			    .count = p->counted,
			    .first = p->first_counted,
			    .last = p->last,
			};
			int rc = fn(arg, &a);
			if (rc < 0)
				return rc;
		}
	return 0;
}

void p11g_refusals_forget_due(struct p11g_refusals *r, int64_t now, bool all)
{
	for (size_t i = 0; i < BUCKETS; i++) {
		struct pair **pp = &r->pairs[i];
		while (*pp) {
			struct pair *p = *pp;
			if (!all && now - p->start < P11G_REFUSALS_INTERVAL) {
				pp = &p->next;
				continue;
			}
			*pp = p->next;
			pair_free(p);
			r->n_pairs--;
		}
		struct uid_use **uu = &r->uids[i];
		while (*uu) {
			struct uid_use *u = *uu;
			if (all || now - u->start >= P11G_REFUSALS_INTERVAL) {
				*uu = u->next;
				free(u);
				r->n_uids--;
			} else {
				uu = &u->next;
			}
		}
	}
}

bool p11g_refusals_allowance_left(const struct p11g_refusals *r, uid_t uid, int64_t now)
{
	for (const struct uid_use *u = r->uids[(unsigned)uid % BUCKETS]; u; u = u->next)
		if (u->uid == uid)
			return now - u->start >= P11G_REFUSALS_INTERVAL ||
			       u->written < P11G_REFUSALS_ROLE_RECORDS;
	return true;
}
