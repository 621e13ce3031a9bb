/* approvald-web's static files (the CSS and JS of approvald/web), compiled in by web/embed.py. */
#ifndef P11GATE_WEB_STATIC_H
#define P11GATE_WEB_STATIC_H

#include <stddef.h>

struct p11g_web_asset {
	const char *path, *type;
	const unsigned char *data;
	size_t len;
};

/* Ends with an entry whose path is NULL. */
extern const struct p11g_web_asset p11g_web_assets[];

#endif
