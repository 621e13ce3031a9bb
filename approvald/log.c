/* The logging sink shared by approvald's parts (see include/p11gate/log.h). */
#include "p11gate/log.h"

enum p11g_log_level p11g_log_threshold = P11G_LOG_INFO;
const char *p11g_log_ident = "p11gate";

void p11g_log(enum p11g_log_level level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (level > p11g_log_threshold)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per line so concurrent writers do not interleave. */
	fprintf(stderr, "%s: %s\n", p11g_log_ident, line);
}
