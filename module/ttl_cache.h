/* The module's small caches: a fixed table of entries kept for a time, under one lock. */
#ifndef P11GATE_TTL_CACHE_H
#define P11GATE_TTL_CACHE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Fixed size, so a cache costs no allocation and cannot grow with what a caller asks for;
 * a linear scan, because the tables are small (64 entries) and a hit must not wait on a
 * writer longer than a scan.  An entry is read while fresher than ttl_us; a full table
 * gives its oldest entry to the next key.
 */
struct ttl_cache_head {
	bool used;
	int64_t at_us;
};

struct ttl_cache {
	pthread_rwlock_t lock;
	unsigned char *entries; /* capacity entries of stride bytes: head, key, value */
	size_t capacity, stride;
	size_t key_offset, key_size, value_offset, value_size;
	int64_t ttl_us;
	/* Keys are compared by this, not by their bytes: a key may hold bytes past the end
	 * of a string that are no part of it. */
	bool (*same_key)(const void *a, const void *b);
};

/*
 * A static cache `name` of n entries of key_type and value_type, kept ttl_us, and
 * name_get()/name_put() that take those types.
 */
#define TTL_CACHE_DEFINE(name, n, key_type, value_type, same, ttl)                                 \
	struct name##_entry {                                                                      \
		struct ttl_cache_head head;                                                        \
		key_type key;                                                                      \
		value_type value;                                                                  \
	};                                                                                         \
	static struct name##_entry name##_entries[n];                                              \
	static struct ttl_cache name = {                                                           \
	    .lock = PTHREAD_RWLOCK_INITIALIZER,                                                    \
	    .entries = (unsigned char *)name##_entries,                                            \
	    .capacity = (n),                                                                       \
	    .stride = sizeof(struct name##_entry),                                                 \
	    .key_offset = offsetof(struct name##_entry, key),                                      \
	    .key_size = sizeof(key_type),                                                          \
	    .value_offset = offsetof(struct name##_entry, value),                                  \
	    .value_size = sizeof(value_type),                                                      \
	    .ttl_us = (ttl),                                                                       \
	    .same_key = (same),                                                                    \
	};                                                                                         \
	static inline bool name##_get(const key_type *key, value_type *ret)                        \
	{                                                                                          \
		return ttl_cache_get(&name, key, ret);                                             \
	}                                                                                          \
	static inline void name##_put(const key_type *key, const value_type *value)                \
	{                                                                                          \
		ttl_cache_put(&name, key, value);                                                  \
	}

/* The fresh value of key into ret: true, or false (ret untouched). */
bool ttl_cache_get(struct ttl_cache *c, const void *key, void *ret);
/* key's entry (its own, else a free or expired one, else the oldest) now holds value. */
void ttl_cache_put(struct ttl_cache *c, const void *key, const void *value);
/* Forgets the entries whose key match(key, arg) says true; every entry when match is NULL. */
void ttl_cache_forget(struct ttl_cache *c, bool (*match)(const void *key, const void *arg),
                      const void *arg);
/* In a forked child: forgets everything without the lock a parent thread may have held. */
void ttl_cache_reset_after_fork(struct ttl_cache *c);

#endif
