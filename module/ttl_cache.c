/* The module's small caches (ttl_cache.h): one lock, a scan, the oldest entry evicted. */
#include <string.h>

#include "module/ttl_cache.h"
#include "p11gate/common.h"

static struct ttl_cache_head *head_at(const struct ttl_cache *c, size_t i)
{
	return (struct ttl_cache_head *)(c->entries + i * c->stride);
}

static void *key_of(const struct ttl_cache *c, struct ttl_cache_head *e)
{
	return (unsigned char *)e + c->key_offset;
}

static void *value_of(const struct ttl_cache *c, struct ttl_cache_head *e)
{
	return (unsigned char *)e + c->value_offset;
}

bool ttl_cache_get(struct ttl_cache *c, const void *key, void *ret)
{
	int64_t now = p11g_mono_us();
	bool hit = false;

	pthread_rwlock_rdlock(&c->lock);
	for (size_t i = 0; i < c->capacity && !hit; i++) {
		struct ttl_cache_head *e = head_at(c, i);
		if (e->used && now - e->at_us < c->ttl_us && c->same_key(key_of(c, e), key)) {
			memcpy(ret, value_of(c, e), c->value_size);
			hit = true;
		}
	}
	pthread_rwlock_unlock(&c->lock);
	return hit;
}

void ttl_cache_put(struct ttl_cache *c, const void *key, const void *value)
{
	int64_t now = p11g_mono_us();
	struct ttl_cache_head *slot = NULL;

	pthread_rwlock_wrlock(&c->lock);
	/* A key has one entry at most: a lookup would otherwise find a stale twin first. */
	for (size_t i = 0; i < c->capacity && !slot; i++) {
		struct ttl_cache_head *e = head_at(c, i);
		if (e->used && c->same_key(key_of(c, e), key))
			slot = e;
	}
	for (size_t i = 0; i < c->capacity && !slot; i++) {
		struct ttl_cache_head *e = head_at(c, i);
		if (!e->used || now - e->at_us >= c->ttl_us)
			slot = e;
	}
	if (!slot) {
		slot = head_at(c, 0);
		for (size_t i = 1; i < c->capacity; i++)
			if (head_at(c, i)->at_us < slot->at_us)
				slot = head_at(c, i);
	}
	memcpy(key_of(c, slot), key, c->key_size);
	memcpy(value_of(c, slot), value, c->value_size);
	slot->used = true;
	slot->at_us = now;
	pthread_rwlock_unlock(&c->lock);
}

void ttl_cache_forget(struct ttl_cache *c, bool (*match)(const void *key, const void *arg),
                      const void *arg)
{
	pthread_rwlock_wrlock(&c->lock);
	for (size_t i = 0; i < c->capacity; i++) {
		struct ttl_cache_head *e = head_at(c, i);
		if (e->used && (!match || match(key_of(c, e), arg)))
			e->used = false;
	}
	pthread_rwlock_unlock(&c->lock);
}

void ttl_cache_reset_after_fork(struct ttl_cache *c)
{
	pthread_rwlock_init(&c->lock, NULL);
	memset(c->entries, 0, c->capacity * c->stride);
}
