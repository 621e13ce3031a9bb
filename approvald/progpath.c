/* Where approvald's helper programs are (progpath.h). */
#include "approvald/progpath.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "p11gate/errors.h"

#ifndef P11GATE_LIBEXECDIR
#define P11GATE_LIBEXECDIR "/usr/local/libexec/p11gate"
#endif

int p11g_find_program(const char *name, char *out, p11g_err *err)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			int w = snprintf(out, PATH_MAX, "%s/%s", self, name);
			if (w > 0 && w < PATH_MAX && access(out, X_OK) == 0)
				return 0;
		}
	}
	snprintf(out, PATH_MAX, "%s/%s", P11GATE_LIBEXECDIR, name);
	if (access(out, X_OK) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "%s: %m (installed with approvald-local)",
		                    out);
	return 0;
}
