/* One logging header: approvald logs to stderr; library code logs only when asked. */
#ifndef P11GATE_LOG_H
#define P11GATE_LOG_H

#include <stdarg.h>
#include <stdio.h>

enum p11g_log_level { P11G_LOG_ERROR, P11G_LOG_WARN, P11G_LOG_INFO, P11G_LOG_DEBUG };

/* The threshold; messages above it are dropped.  Default INFO. */
extern enum p11g_log_level p11g_log_threshold;
/* Prefix, e.g. "approvald"; default "p11gate". */
extern const char *p11g_log_ident;

/* Writes "IDENT: message\n" to stderr.  Never pass PINs or data bytes. */
__attribute__((format(printf, 2, 3))) void p11g_log(enum p11g_log_level level, const char *fmt,
                                                    ...);

#define p11g_error(...) p11g_log(P11G_LOG_ERROR, __VA_ARGS__)
#define p11g_warn(...)  p11g_log(P11G_LOG_WARN, __VA_ARGS__)
#define p11g_info(...)  p11g_log(P11G_LOG_INFO, __VA_ARGS__)
/* Its arguments are evaluated only when debugging is on: a trace may format a key's URI on
 * the sign path, which must cost nothing otherwise. */
#define p11g_debug(...)                                                                            \
	do {                                                                                       \
		if (p11g_log_threshold >= P11G_LOG_DEBUG)                                          \
			p11g_log(P11G_LOG_DEBUG, __VA_ARGS__);                                     \
	} while (0)

#endif
