/* libFuzzer target: approvald-web's pages built from whatever JSON approvald could return
 * (web_html.c).  Whatever the strings hold, the page's markup is only our own: every '<' opens
 * one of the tags web_html.c writes, there is one script element (the page's own app.js),
 * and no attribute value is left open by a quote from the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "approvald/web_html.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const tags[] = {
    "!DOCTYPE", "html",   "head",    "meta",    "title", "link",    "script", "body",  "header",
    "nav",      "a",      "p",       "span",    "main",  "h1",      "h2",     "form",  "input",
    "label",    "select", "option",  "button",  "div",   "table",   "thead",  "tbody", "tr",
    "th",       "td",     "details", "summary", "dl",    "dt",      "dd",     "ul",    "li",
    "time",     "code",   "section", "dialog",  "pre",   "textarea"};

static void check(const struct p11g_html *h)
{
	size_t scripts = 0;
	if (h->oom || !h->p)
		return;
	for (const char *p = strchr(h->p, '<'); p; p = strchr(p + 1, '<')) {
		const char *t = p + 1 + (p[1] == '/');
		size_t n =
		    strspn(t, "!ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
		bool known = false;
		for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
			known |= strlen(tags[i]) == n && !strncmp(t, tags[i], n);
		if (!known || (t[n] != '>' && t[n] != ' '))
			__builtin_trap();
		if (p[1] != '/' && n == 6 && !strncmp(t, "script", 6))
			scripts++;
		/* inside a tag, quotes pair up: every attribute value closed */
		const char *end = strchr(p, '>');
		if (!end)
			__builtin_trap();
		size_t quotes = 0;
		for (const char *q = p; q < end; q++)
			quotes += *q == '"';
		if (quotes % 2)
			__builtin_trap();
	}
	if (scripts != 1)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	struct p11g_web_view v = {.viewer = "alice<\"'&>",
	                          .how = "web, peer uid 1",
	                          .csrf = "00",
	                          .pending = 3,
	                          .now = 1700000000};
	struct p11g_html h = {0};

	/* the text escaper alone: no markup character survives */
	p11g_html_text(&h, (const char *)data, size, size % 7 ? size / 2 : 0);
	if (h.p && strpbrk(h.p, "<>\"'"))
		__builtin_trap();
	p11g_html_free(&h);
	if (!j)
		return 0;
	json_t *op = json_is_object(j) ? j : json_array_get(j, 0);
	json_t *ops = json_is_array(j) ? j : NULL;

	p11g_html_begin(&h, &v, json_string_value(json_object_get(op, "name")));
	p11g_html_list(&h, &v, ops, size % 2, "pending", size % 3 ? 42 : 0);
	if (op) {
		p11g_html_details(&h, &v, op, size % 2, "error",
		                  json_string_value(json_object_get(op, "state")), "flash");
		p11g_html_confirm(&h, &v, op, size % 2 ? "approve" : "reject",
		                  json_string_value(json_object_get(op, "description")));
	}
	p11g_html_error(&h, &v, json_string_value(json_object_get(op, "needs")),
	                json_string_value(json_object_get(op, "context")));
	p11g_html_end(&h);
	check(&h);
	p11g_html_free(&h);
	json_decref(j);
	return 0;
}
