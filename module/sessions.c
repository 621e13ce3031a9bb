/* Per-session gate state in a table keyed by session handle, so no session's state is another's. */
#include "module/module.h"

#define BUCKETS 256

/*
 * The table lock guards the buckets: lookups share it, changes take it
 * alone.  Reference counts are atomic: a linked session holds the table's
 * reference, so a count reaches zero only after the session was unlinked,
 * and whoever drops the last reference frees it.  Each session has its own
 * lock for its gate state, held across calls into the real module and
 * approvald.  Order: a session lock may be taken with the table lock free,
 * never the other way round.
 */
static pthread_rwlock_t table_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct p11g_session *buckets[BUCKETS];
static size_t n_sessions;

static size_t bucket_of(CK_SESSION_HANDLE h)
{
	return (size_t)((h ^ (h >> 8) ^ (h >> 16)) % BUCKETS);
}

void p11g_sign_op_clear(struct p11g_sign_op *op)
{
	p11g_digest_free(&op->dctx);
	/* The identity and digests are not secret, but the whole record goes so
	 * that nothing of one operation leaks into the next. */
	memset(op, 0, sizeof(*op));
}

static void session_free(struct p11g_session *s)
{
	p11g_sign_op_clear(&s->sign);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Under table_lock. */
static void unlink_session(struct p11g_session **pp)
{
	struct p11g_session *s = *pp;

	*pp = s->next;
	s->next = NULL;
	s->removed = true;
	n_sessions--;
	if (atomic_fetch_sub(&s->refs, 1) == 1)
		session_free(s);
}

void p11g_sessions_clear(void)
{
	pthread_rwlock_wrlock(&table_lock);
	for (size_t i = 0; i < BUCKETS; i++)
		while (buckets[i])
			unlink_session(&buckets[i]);
	pthread_rwlock_unlock(&table_lock);
}

void p11g_sessions_init(void)
{
	p11g_sessions_clear();
}

void p11g_sessions_reset_after_fork(void)
{
	/* Only this thread runs in the child; a lock some parent thread held
	 * would never be released, so both kinds are made anew. */
	pthread_rwlock_init(&table_lock, NULL);
	for (size_t i = 0; i < BUCKETS; i++) {
		struct p11g_session *s = buckets[i];
		while (s) {
			struct p11g_session *next = s->next;
			pthread_mutex_init(&s->lock, NULL);
			/* A parent thread's reference would keep it alive for ever;
			 * no such thread exists here. */
			session_free(s);
			s = next;
		}
		buckets[i] = NULL;
	}
	n_sessions = 0;
}

int p11g_session_add(CK_SESSION_HANDLE h, CK_SLOT_ID slot)
{
	struct p11g_session *s = calloc(1, sizeof(*s)), **pp;
	size_t b = bucket_of(h);

	if (!s)
		return -ENOMEM;
	s->handle = h;
	s->slot = slot;
	atomic_init(&s->refs, 1);
	pthread_mutex_init(&s->lock, NULL);
	pthread_rwlock_wrlock(&table_lock);
	/* The real module may hand out a handle again once it was closed
	 * behind our back (C_CloseAllSessions on another list, a token
	 * removal): the new session starts clean. */
	for (pp = &buckets[b]; *pp; pp = &(*pp)->next) {
		if ((*pp)->handle == h) {
			unlink_session(pp);
			break;
		}
	}
	s->next = buckets[b];
	buckets[b] = s;
	n_sessions++;
	pthread_rwlock_unlock(&table_lock);
	return 0;
}

void p11g_session_remove(CK_SESSION_HANDLE h)
{
	pthread_rwlock_wrlock(&table_lock);
	for (struct p11g_session **pp = &buckets[bucket_of(h)]; *pp; pp = &(*pp)->next) {
		if ((*pp)->handle == h) {
			unlink_session(pp);
			break;
		}
	}
	pthread_rwlock_unlock(&table_lock);
}

void p11g_session_remove_slot(CK_SLOT_ID slot)
{
	pthread_rwlock_wrlock(&table_lock);
	for (size_t i = 0; i < BUCKETS; i++) {
		struct p11g_session **pp = &buckets[i];
		while (*pp) {
			if ((*pp)->slot == slot)
				unlink_session(pp);
			else
				pp = &(*pp)->next;
		}
	}
	pthread_rwlock_unlock(&table_lock);
}

struct p11g_session *p11g_session_get(CK_SESSION_HANDLE h)
{
	struct p11g_session *s;

	pthread_rwlock_rdlock(&table_lock);
	for (s = buckets[bucket_of(h)]; s; s = s->next)
		if (s->handle == h)
			break;
	if (s)
		atomic_fetch_add(&s->refs, 1);
	pthread_rwlock_unlock(&table_lock);
	if (s)
		pthread_mutex_lock(&s->lock);
	return s;
}

bool p11g_session_slot(CK_SESSION_HANDLE h, CK_SLOT_ID *ret)
{
	bool found = false;

	pthread_rwlock_rdlock(&table_lock);
	for (struct p11g_session *s = buckets[bucket_of(h)]; s && !found; s = s->next) {
		if (s->handle == h) {
			*ret = s->slot;
			found = true;
		}
	}
	pthread_rwlock_unlock(&table_lock);
	return found;
}

void p11g_session_put(struct p11g_session *s)
{
	if (!s)
		return;
	pthread_mutex_unlock(&s->lock);
	if (atomic_fetch_sub(&s->refs, 1) == 1)
		session_free(s);
}

size_t p11g_sessions_count(void)
{
	size_t n;

	pthread_rwlock_rdlock(&table_lock);
	n = n_sessions;
	pthread_rwlock_unlock(&table_lock);
	return n;
}
