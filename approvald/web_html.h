/* approvald-web's pages: HTML built from approvald's JSON, every string from it escaped
 * (web_html.c).  Pure functions, no I/O: the fuzzer drives them with arbitrary JSON. */
#ifndef P11GATE_WEB_HTML_H
#define P11GATE_WEB_HTML_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growing buffer; oom set once an append failed (the page is then not sent). */
struct p11g_html {
	char *p;
	size_t len, cap;
	bool oom;
};

void p11g_html_free(struct p11g_html *h);
/* Trusted text (markup of our own). */
void p11g_html_raw(struct p11g_html *h, const char *s);
void p11g_html_rawf(struct p11g_html *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Untrusted text, escaped for element content and quoted attribute values alike
 * (& < > " ' and NUL); at most max bytes of it (0: all), cut at a UTF-8 boundary, "…" after. */
void p11g_html_text(struct p11g_html *h, const char *s, size_t len, size_t max);
void p11g_html_str(struct p11g_html *h, const char *s);

/* Who is looking, for the header line and the forms. */
struct p11g_web_view {
	const char *viewer; /* "p11gt-alice" */
	const char *how;    /* "via proxy", "peer uid 1001" */
	const char *csrf;   /* the viewer's form token */
	long long pending;  /* pending for the viewer; <0: unknown */
	int64_t now;        /* seconds since the epoch */
};

/* The page's start (title escaped) and end. */
void p11g_html_begin(struct p11g_html *h, const struct p11g_web_view *v, const char *title);
void p11g_html_end(struct p11g_html *h);
/* The approvals list: ops (approvald's operations), all (the "all I may see" view), state
 * (the filter, or NULL), next (the cursor of an older page, 0: none). */
void p11g_html_list(struct p11g_html *h, const struct p11g_web_view *v, const json_t *ops, bool all,
                    const char *state, uint64_t next);
/* One operation in full (the #summary section). */
void p11g_html_summary(struct p11g_html *h, const struct p11g_web_view *v, const json_t *op);
/* The details page: flash (a result line, or NULL) of kind "ok"/"error" with code; may_decide:
 * the approve and reject forms. */
void p11g_html_details(struct p11g_html *h, const struct p11g_web_view *v, const json_t *op,
                       bool may_decide, const char *flash_kind, const char *flash_code,
                       const char *flash);
/* The confirmation a decision without JavaScript asks for: verb "approve" or "reject". */
void p11g_html_confirm(struct p11g_html *h, const struct p11g_web_view *v, const json_t *op,
                       const char *verb, const char *reason);
/* An error page: code and message (escaped). */
void p11g_html_error(struct p11g_html *h, const struct p11g_web_view *v, const char *code,
                     const char *message);

/* What people read for approvald's error codes ("already decided by someone else"). */
const char *p11g_web_code_sentence(const char *code);

#endif
