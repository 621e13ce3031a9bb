/* Common macros and the error type shared by every part of p11gate. */
#ifndef P11GATE_COMMON_H
#define P11GATE_COMMON_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <unistd.h>

#define P11G_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Cleanup helpers: early returns stay leak-free. */
static inline void p11g_freep(void *p)
{
	free(*(void **)p);
}
static inline void p11g_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}
#define _cleanup_free_  __attribute__((cleanup(p11g_freep)))
#define _cleanup_close_ __attribute__((cleanup(p11g_closep)))

/*
 * An error that crosses a component boundary: a stable machine code (one of
 * the P11G_E_* strings in errors.h, never NULL once set) and a sentence a person
 * can act on.  Functions that fill one return -1 (or a negative errno) and
 * leave it untouched on success.  The sentence has room for a quoted registry
 * reply (ocisign); longer ones are cut.
 */
typedef struct p11g_err {
	const char *code;
	char msg[1024];
} p11g_err;

__attribute__((format(printf, 3, 4))) static inline int p11g_err_set(p11g_err *e, const char *code,
                                                                     const char *fmt, ...)
{
	if (e) {
		va_list ap;
		e->code = code;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* Seconds since the epoch, and a monotonic clock in microseconds. */
static inline int64_t p11g_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}
static inline int64_t p11g_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Lower-case hex of len bytes; hex must hold 2*len+1 bytes. */
static inline void p11g_hex_encode(const unsigned char *bin, size_t len, char *hex)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		hex[2 * i] = digits[bin[i] >> 4];
		hex[2 * i + 1] = digits[bin[i] & 15];
	}
	hex[2 * len] = '\0';
}

static inline int p11g_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes hexlen digits into out; the count of bytes, or -1 on a bad digit,
 * an odd length or more than outmax bytes. */
static inline ssize_t p11g_hex_decode(const char *hex, size_t hexlen, unsigned char *out,
                                      size_t outmax)
{
	if (hexlen % 2 || hexlen / 2 > outmax)
		return -1;
	for (size_t i = 0; i < hexlen / 2; i++) {
		int hi = p11g_hex_digit(hex[2 * i]), lo = p11g_hex_digit(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return (ssize_t)(hexlen / 2);
}

/* Wipe, then free: for anything that held a secret. */
static inline void p11g_freezero(void *p, size_t len)
{
	if (p) {
		explicit_bzero(p, len);
		free(p);
	}
}

/* "90s", "15m", "24h", "7d" (a positive integer and one unit) -> seconds.
 * -1 on anything else, including overflow past 10 years.  (policy/duration.c) */
int64_t p11g_duration_parse(const char *s);

#endif
