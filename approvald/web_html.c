/* approvald-web's pages.  Every string that came from approvald (what a requester typed, what
 * a pipeline's token carried, key labels from a token) goes through p11g_html_text: escaped
 * for element content and quoted attributes alike, and only ever placed there — never in a
 * URL, a style or a script.  The pages carry no inline script or style (the
 * Content-Security-Policy forbids both): behaviour is /static/app.js, looks /static/app.css. */
#include "approvald/web_html.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LIST_TEXT_MAX 160 /* bytes of a description or name in a list row */

void p11g_html_free(struct p11g_html *h)
{
	free(h->p);
	memset(h, 0, sizeof(*h));
}

static bool grow(struct p11g_html *h, size_t more)
{
	if (h->oom)
		return false;
	if (h->len + more + 1 <= h->cap)
		return true;
	size_t cap = h->cap ? h->cap : 4096;
	while (cap < h->len + more + 1) {
		if (cap > SIZE_MAX / 2) {
			h->oom = true;
			return false;
		}
		cap *= 2;
	}
	char *p = realloc(h->p, cap);
	if (!p) {
		h->oom = true;
		return false;
	}
	h->p = p;
	h->cap = cap;
	return true;
}

static void put(struct p11g_html *h, const char *s, size_t n)
{
	if (!grow(h, n))
		return;
	memcpy(h->p + h->len, s, n);
	h->len += n;
	h->p[h->len] = '\0';
}

void p11g_html_raw(struct p11g_html *h, const char *s)
{
	put(h, s, strlen(s));
}

void p11g_html_rawf(struct p11g_html *h, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf)) {
		h->oom = true; /* our own markup never needs more: a bug, not a page */
		return;
	}
	put(h, buf, (size_t)n);
}

void p11g_html_text(struct p11g_html *h, const char *s, size_t len, size_t max)
{
	bool cut = false;
	if (!s)
		return;
	if (max && len > max) {
		len = max;
		/* back to the start of a UTF-8 sequence */
		while (len && ((unsigned char)s[len] & 0xc0) == 0x80)
			len--;
		cut = true;
	}
	size_t start = 0;
	for (size_t i = 0; i < len; i++) {
		const char *rep;
		switch (s[i]) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&#39;";
			break;
		case '\0':
			rep = "\xef\xbf\xbd"; /* U+FFFD */
			break;
		default:
			continue;
		}
		put(h, s + start, i - start);
		p11g_html_raw(h, rep);
		start = i + 1;
	}
	put(h, s + start, len - start);
	if (cut)
		p11g_html_raw(h, "\xe2\x80\xa6");
}

void p11g_html_str(struct p11g_html *h, const char *s)
{
	if (s)
		p11g_html_text(h, s, strlen(s), 0);
}

/* A JSON string member, escaped (nothing when absent or not a string). */
static void jtext(struct p11g_html *h, const json_t *obj, const char *name, size_t max)
{
	const json_t *v = json_object_get(obj, name);
	if (json_is_string(v))
		p11g_html_text(h, json_string_value(v), json_string_length(v), max);
}

/* Any JSON value as text: a string as it is, anything else compact. */
static void jany(struct p11g_html *h, const json_t *v)
{
	if (json_is_string(v)) {
		p11g_html_text(h, json_string_value(v), json_string_length(v), 0);
		return;
	}
	char *s = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
	p11g_html_str(h, s ? s : "");
	free(s);
}

static const char *jstr(const json_t *obj, const char *name)
{
	const char *s = json_string_value(json_object_get(obj, name));
	return s ? s : "";
}

static long long jnum(const json_t *obj, const char *name)
{
	return (long long)json_integer_value(json_object_get(obj, name));
}

static void put_time(struct p11g_html *h, long long t)
{
	struct tm tm;
	char buf[64];
	time_t tt = (time_t)t;
	if (t <= 0 || !gmtime_r(&tt, &tm) ||
	    !strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, sizeof(buf), "%lld", t);
	p11g_html_rawf(h, "<time datetime=\"%lld\">%s</time>", t, buf);
}

/* "3m ago", "in 2h" */
static void put_rel(struct p11g_html *h, long long t, int64_t now)
{
	long long d = t - (long long)now, a = d < 0 ? -d : d;
	const char *unit = "s";
	if (a >= 2 * 86400)
		a /= 86400, unit = "d";
	else if (a >= 7200)
		a /= 3600, unit = "h";
	else if (a >= 120)
		a /= 60, unit = "m";
	/* now itself is past ("0s ago"): an age, not a time to come */
	p11g_html_rawf(h, d > 0 ? "in %lld%s" : "%lld%s ago", a, unit);
}

/* The requester: the account, and the pipeline when a verified token named one. */
static void put_requester(struct p11g_html *h, const json_t *op)
{
	const json_t *o = json_object_get(op, "orderer"), *id = json_object_get(op, "identity");
	if (*jstr(o, "user"))
		jtext(h, o, "user", 0);
	else
		p11g_html_rawf(h, "uid %lld", jnum(o, "uid"));
	if (id) {
		p11g_html_raw(h, " <span class=\"pipeline\">(pipeline ");
		jtext(h, id, "subject", 0);
		p11g_html_raw(h, ")</span>");
	}
}

static void put_who(struct p11g_html *h, const json_t *who)
{
	if (*jstr(who, "user"))
		jtext(h, who, "user", 0);
	else
		p11g_html_rawf(h, "uid %lld", jnum(who, "uid"));
}

const char *p11g_web_code_sentence(const char *code)
{
	static const struct {
		const char *code, *text;
	} t[] = {
	    {"already_decided", "Already decided by someone else."},
	    {"expired", "Expired meanwhile: the operation's window has closed."},
	    {"already_approved", "You already approved this operation; each person counts once."},
	    {"self_approval", "You may not decide on your own request."},
	    {"forbidden", "You may not do this."},
	    {"not_approver", "You are not an approver of this operation."},
	    {"not_found", "No such operation, or not one you may see."},
	    {"csrf", "The form was not yours (its token did not match): reload the page and try "
	             "again."},
	    {"origin", "The request came from another site, and was refused."},
	    {"host", "The request named a host name this page does not answer to."},
	    {"bad_request", "The request was not understood."},
	    {"unavailable", "approvald is not answering; try again shortly."},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (code && !strcmp(code, t[i].code))
			return t[i].text;
	return "The request failed.";
}

void p11g_html_begin(struct p11g_html *h, const struct p11g_web_view *v, const char *title)
{
	p11g_html_raw(h, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	                 "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
	                 "<title>");
	p11g_html_str(h, title);
	p11g_html_raw(h, " · p11gate approvals</title>"
	                 "<link rel=\"stylesheet\" href=\"/static/app.css\">"
	                 "<script src=\"/static/app.js\" defer></script></head><body>"
	                 "<header><nav><a class=\"home\" href=\"/\">Approvals</a> "
	                 "<a href=\"/?view=all\">All operations</a></nav>"
	                 "<p class=\"dash\">Waiting for you: <span id=\"pending-count\">");
	if (v->pending >= 0)
		p11g_html_rawf(h, "%lld", v->pending);
	else
		p11g_html_raw(h, "?");
	p11g_html_raw(h, "</span></p><p class=\"who\">");
	p11g_html_str(h, v->viewer);
	p11g_html_raw(h, " <span class=\"how\">(");
	p11g_html_str(h, v->how);
	p11g_html_raw(h, ")</span></p></header><main>");
}

void p11g_html_end(struct p11g_html *h)
{
	p11g_html_raw(h, "</main></body></html>\n");
}

static void put_keys_inline(struct p11g_html *h, const json_t *op)
{
	size_t i;
	const json_t *k;
	p11g_html_raw(h, "<ul class=\"keys\">");
	json_array_foreach(json_object_get(op, "keys"), i, k)
	{
		p11g_html_raw(h, "<li class=\"key\">");
		jtext(h, k, "uri", 0);
		p11g_html_rawf(h, " <span class=\"uses\">(%lld/%lld)</span></li>", jnum(k, "used"),
		               jnum(k, "uses"));
	}
	p11g_html_raw(h, "</ul>");
}

static void summary(struct p11g_html *h, const struct p11g_web_view *v, const json_t *op, bool ids);

void p11g_html_list(struct p11g_html *h, const struct p11g_web_view *v, const json_t *ops, bool all,
                    const char *state, uint64_t next)
{
	static const char *const states[] = {"pending", "approved", "exhausted",
	                                     "expired", "revoked",  "rejected"};
	size_t i;
	const json_t *op;

	p11g_html_rawf(h, "<h1>%s</h1>",
	               all ? "All operations you may see" : "Waiting for your decision");
	if (all) {
		/* the state filter: a plain GET form */
		p11g_html_raw(
		    h, "<form class=\"filter\" method=\"get\" action=\"/\">"
		       "<input type=\"hidden\" name=\"view\" value=\"all\">"
		       "<label>State <select name=\"state\"><option value=\"\">any</option>");
		for (i = 0; i < sizeof(states) / sizeof(states[0]); i++)
			p11g_html_rawf(h, "<option%s>%s</option>",
			               state && !strcmp(state, states[i]) ? " selected" : "",
			               states[i]);
		p11g_html_raw(h, "</select></label> <button type=\"submit\">Show</button></form>");
	}
	p11g_html_raw(h, "<div id=\"list-area\">");
	if (!json_array_size(ops)) {
		p11g_html_rawf(h, "<p id=\"empty\">%s</p>",
		               all ? "No operations to show." : "Nothing waits for you.");
	} else {
		p11g_html_raw(h, "<table id=\"ops\"><thead><tr><th>ID</th><th>Name</th>"
		                 "<th>Description</th><th>Requester</th><th>Keys</th><th>Age</th>"
		                 "<th>Expires</th><th>State</th><th></th></tr></thead><tbody>");
		json_array_foreach(ops, i, op)
		{
			long long id = jnum(op, "id");
			p11g_html_rawf(
			    h,
			    "<tr class=\"op\" data-id=\"%lld\"><td class=\"id\" "
			    "data-label=\"ID\"><a class=\"open\" href=\"/op/%lld\">%lld</a>"
			    "</td><td class=\"name\" data-label=\"Name\">",
			    id, id, id);
			jtext(h, op, "name", LIST_TEXT_MAX);
			p11g_html_raw(h,
			              "</td><td class=\"description\" data-label=\"Description\">");
			jtext(h, op, "description", LIST_TEXT_MAX);
			p11g_html_raw(h, "</td><td class=\"requester\" data-label=\"Requester\">");
			put_requester(h, op);
			p11g_html_raw(h, "</td><td class=\"keys\" data-label=\"Keys\">");
			put_keys_inline(h, op);
			p11g_html_raw(h, "</td><td class=\"age\" data-label=\"Age\">");
			put_rel(h, jnum(op, "created"), v->now);
			p11g_html_raw(h, "</td><td class=\"expires\" data-label=\"Expires\">");
			put_rel(h, jnum(op, "expires"), v->now);
			p11g_html_raw(h, "</td><td class=\"state\" data-label=\"State\">");
			jtext(h, op, "state", 32);
			p11g_html_rawf(h,
			               "</td><td class=\"expand\"><details class=\"more\" "
			               "data-id=\"%lld\"><summary>Details</summary>",
			               id);
			summary(h, v, op, false);
			p11g_html_rawf(h,
			               "<p><a href=\"/op/%lld\">Open operation %lld</a></p>"
			               "</details></td></tr>",
			               id, id);
		}
		p11g_html_raw(h, "</tbody></table>");
	}
	if (next) {
		p11g_html_raw(h, "<p class=\"pages\"><a id=\"next\" href=\"/?");
		if (all)
			p11g_html_raw(h, "view=all&amp;");
		for (i = 0; state && i < sizeof(states) / sizeof(states[0]); i++)
			if (!strcmp(state, states[i]))
				p11g_html_rawf(h, "state=%s&amp;", states[i]);
		p11g_html_rawf(h, "before=%" PRIu64 "\">Older operations</a></p>", next);
	}
	p11g_html_raw(h, "</div>");
}

static void dl_start(struct p11g_html *h, const char *term)
{
	p11g_html_raw(h, "<dt>");
	p11g_html_raw(h, term);
	p11g_html_raw(h, "</dt><dd>");
}

/* The members of obj as a <dl>, in the order of their names. */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void put_sorted(struct p11g_html *h, const json_t *obj, const char *name, bool id)
{
	size_t n = json_object_size(obj), i = 0;
	const char *k;
	json_t *val;
	const char **keys = n ? calloc(n, sizeof(*keys)) : NULL;
	if (n && !keys) {
		h->oom = true;
		return;
	}
	json_object_foreach((json_t *)obj, k, val) keys[i++] = k;
	if (n)
		qsort(keys, n, sizeof(*keys), cmp_str);
	if (!name)
		p11g_html_raw(h, "<dl>");
	else
		p11g_html_rawf(h, "<dl class=\"%s\"%s%s%s>", name, id ? " id=\"" : "",
		               id ? name : "", id ? "\"" : "");
	for (i = 0; i < n; i++) {
		p11g_html_raw(h, "<dt>");
		p11g_html_str(h, keys[i]);
		p11g_html_raw(h, "</dt><dd>");
		jany(h, json_object_get(obj, keys[i]));
		p11g_html_raw(h, "</dd>");
	}
	p11g_html_raw(h, "</dl>");
	free(keys);
}

/* ids: the page's one summary (#meta, #identity); a list's rows say it by class only */
static void summary(struct p11g_html *h, const struct p11g_web_view *v, const json_t *op, bool ids)
{
	size_t i;
	const json_t *x;
	const char *state = jstr(op, "state");

	p11g_html_raw(h, "<dl class=\"summary\">");
	dl_start(h, "Operation");
	p11g_html_rawf(h, "%lld</dd>", jnum(op, "id"));
	dl_start(h, "State");
	p11g_html_str(h, state);
	p11g_html_raw(h, "</dd>");
	if (*jstr(op, "needs")) {
		dl_start(h, "Needs");
		jtext(h, op, "needs", 0);
		p11g_html_raw(h, "</dd>");
	}
	if (*jstr(op, "name")) {
		dl_start(h, "Name");
		jtext(h, op, "name", 0);
		p11g_html_raw(h, "</dd>");
	}
	dl_start(h, "Requester");
	put_requester(h, op);
	p11g_html_raw(h, "</dd>");
	dl_start(h, "Signer");
	jtext(h, op, "signer", 0);
	p11g_html_raw(h, "</dd>");
	dl_start(h, "Created");
	put_time(h, jnum(op, "created"));
	p11g_html_raw(h, "</dd>");
	dl_start(h, "Expires");
	put_time(h, jnum(op, "expires"));
	p11g_html_raw(h, " (");
	put_rel(h, jnum(op, "expires"), v->now);
	p11g_html_raw(h, ")</dd>");
	dl_start(h, "Description");
	p11g_html_raw(h, "<span class=\"description\">");
	jtext(h, op, "description", 0);
	p11g_html_raw(h, "</span></dd>");
	if (*jstr(op, "context")) {
		dl_start(h, "Context");
		jtext(h, op, "context", 0);
		p11g_html_raw(h, "</dd>");
	}
	dl_start(h, "Keys");
	p11g_html_raw(h, "<ul>");
	json_array_foreach(json_object_get(op, "keys"), i, x)
	{
		p11g_html_raw(h, "<li class=\"key\">");
		jtext(h, x, "uri", 0);
		p11g_html_raw(h, " (rule ");
		jtext(h, x, "rule", 0);
		p11g_html_rawf(h, ", used %lld of %lld)</li>", jnum(x, "used"), jnum(x, "uses"));
	}
	p11g_html_raw(h, "</ul></dd>");
	if (json_array_size(json_object_get(op, "digests"))) {
		const json_t *names = json_object_get(op, "payload_names");
		dl_start(h, "Pinned digests");
		p11g_html_raw(h, "<ul>");
		json_array_foreach(json_object_get(op, "digests"), i, x)
		{
			const json_t *pn = json_array_get(names, i);
			p11g_html_raw(h, "<li class=\"digest\"><code>");
			jany(h, x);
			p11g_html_raw(h, "</code>");
			if (json_is_string(pn) && json_string_length(pn)) {
				p11g_html_raw(h, " <span class=\"payload-name\">");
				jany(h, pn);
				p11g_html_raw(h, "</span>");
			}
			p11g_html_raw(h, "</li>");
		}
		p11g_html_raw(h, "</ul></dd>");
	}
	const json_t *images = json_object_get(op, "images");
	if (json_array_size(images)) {
		dl_start(h, "Images");
		p11g_html_raw(h, "<ul>");
		json_array_foreach(images, i, x)
		{
			const json_t *csr = json_object_get(x, "csr");
			if (csr) {
				/* read from the request's bytes by approvald (csr_payload.c) */
				const json_t *s;
				size_t j;
				p11g_html_raw(h,
				              "<li class=\"csr\">Certificate request (PKCS#10) for "
				              "<strong>");
				jtext(h, csr, "subject", 0);
				p11g_html_raw(h, "</strong>, key ");
				jtext(h, csr, "key", 0);
				if (json_array_size(json_object_get(csr, "names"))) {
					p11g_html_raw(h, ", names ");
					json_array_foreach(json_object_get(csr, "names"), j, s)
					{
						p11g_html_raw(h, j ? ", " : "");
						jany(h, s);
					}
				}
				if (json_array_size(json_object_get(csr, "extended_key_usage"))) {
					p11g_html_raw(h, ", extended key usage ");
					json_array_foreach(
					    json_object_get(csr, "extended_key_usage"), j, s)
					{
						p11g_html_raw(h, j ? ", " : "");
						jany(h, s);
					}
				}
				json_array_foreach(json_object_get(csr, "other_extensions"), j, s)
				{
					p11g_html_raw(h, j ? "; " : "; extensions: ");
					jany(h, s);
				}
				p11g_html_raw(h, "</li>");
				continue;
			}
			const json_t *cert = json_object_get(x, "openpgp_certification");
			if (cert) {
				/* read from the OpenPGP hashed data by approvald (pgp_payload.c) */
				p11g_html_raw(h,
				              "<li class=\"openpgp-cert\">OpenPGP certification of "
				              "user ID <strong>");
				jtext(h, cert, "user_id", 0);
				p11g_html_raw(h, "</strong> for ");
				jtext(h, cert, "key", 0);
				p11g_html_raw(h, " key ");
				jtext(h, cert, "fingerprint", 0);
				p11g_html_raw(h, ", created ");
				jtext(h, cert, "created", 0);
				p11g_html_raw(h, "</li>");
				continue;
			}
			bool simple = json_object_get(x, "identity") != NULL;
			p11g_html_raw(h, "<li class=\"image\">");
			jtext(h, x, simple ? "identity" : "reference", 0);
			if (!simple ||
			    !strchr(json_string_value(json_object_get(x, "identity")) ?: "", '@')) {
				p11g_html_raw(h, "@");
				jtext(h, x, "digest", 0);
			}
			if (simple) {
				/* containers/image simple signing, by this OpenPGP key */
				p11g_html_raw(h, " (simple signing, OpenPGP key ");
				jtext(h, x, "openpgp_key", 0);
				p11g_html_raw(h, ")");
			}
			if (json_object_size(json_object_get(x, "annotations"))) {
				p11g_html_raw(h, " signed annotations:");
				put_sorted(h, json_object_get(x, "annotations"), NULL, false);
			}
			p11g_html_raw(h, "</li>");
		}
		p11g_html_raw(h, "</ul></dd>");
	} else if (json_object_get(op, "oci")) {
		const json_t *oci = json_object_get(op, "oci");
		dl_start(h, "Image");
		jtext(h, oci, "registry", 0);
		p11g_html_raw(h, "/");
		jtext(h, oci, "repository", 0);
		p11g_html_raw(h, "@");
		jtext(h, oci, "digest", 0);
		p11g_html_raw(h, " (as the requester says; not read from a payload)</dd>");
	}
	if (json_object_size(json_object_get(op, "meta"))) {
		dl_start(h, "Metadata");
		put_sorted(h, json_object_get(op, "meta"), "meta", ids);
		p11g_html_raw(h, "</dd>");
	}
	const json_t *id = json_object_get(op, "identity");
	if (id) {
		dl_start(h, "Pipeline");
		jtext(h, id, "subject", 0);
		p11g_html_raw(h, " (issuer ");
		jtext(h, id, "issuer", 0);
		p11g_html_raw(h, ", verified ID token)");
		put_sorted(h, json_object_get(id, "claims"), "identity", ids);
		p11g_html_raw(h, "</dd>");
	}
	dl_start(h, "Approvals");
	if (!json_array_size(json_object_get(op, "approvals")))
		p11g_html_raw(h, "none");
	p11g_html_raw(h, "<ul>");
	json_array_foreach(json_object_get(op, "approvals"), i, x)
	{
		p11g_html_raw(h, "<li class=\"approval\">");
		put_who(h, x);
		p11g_html_raw(h, " at ");
		put_time(h, jnum(x, "time"));
		p11g_html_raw(h, "</li>");
	}
	p11g_html_raw(h, "</ul></dd>");
	static const char *const ends[] = {"rejection", "revocation"};
	for (i = 0; i < 2; i++) {
		const json_t *e = json_object_get(op, ends[i]);
		if (!e)
			continue;
		dl_start(h, i ? "Revoked" : "Rejected");
		p11g_html_raw(h, "by ");
		put_who(h, e);
		p11g_html_raw(h, " at ");
		put_time(h, jnum(e, "time"));
		p11g_html_raw(h, ": <span class=\"reason\">");
		jtext(h, e, "reason", 0);
		p11g_html_raw(h, "</span></dd>");
	}
	p11g_html_raw(h, "</dl>");
}

void p11g_html_summary(struct p11g_html *h, const struct p11g_web_view *v, const json_t *op)
{
	summary(h, v, op, true);
}

/* The dialog app.js opens before a decision is sent (it fills the texts). */
static void put_dialog(struct p11g_html *h)
{
	p11g_html_raw(h, "<dialog id=\"confirm\"><h2 id=\"confirm-what\"></h2>"
	                 "<pre id=\"confirm-summary\"></pre><p id=\"confirm-reason\"></p>"
	                 "<p class=\"buttons\"><button type=\"button\" id=\"dialog-confirm\">"
	                 "Confirm</button> <button type=\"button\" id=\"dialog-cancel\">Cancel"
	                 "</button></p></dialog>");
}

static void put_forms(struct p11g_html *h, const struct p11g_web_view *v, long long id)
{
	p11g_html_rawf(h,
	               "<section id=\"decide\"><form id=\"approve\" class=\"decide\" "
	               "method=\"post\" action=\"/op/%lld/approve\" data-verb=\"Approve\">"
	               "<input type=\"hidden\" name=\"csrf\" value=\"",
	               id);
	p11g_html_str(h, v->csrf);
	p11g_html_rawf(h,
	               "\"><button type=\"submit\" id=\"approve-button\">Approve operation %lld"
	               "</button></form><form id=\"reject\" class=\"decide\" method=\"post\" "
	               "action=\"/op/%lld/reject\" data-verb=\"Reject\">"
	               "<input type=\"hidden\" name=\"csrf\" value=\"",
	               id, id);
	p11g_html_str(h, v->csrf);
	p11g_html_raw(h, "\"><label for=\"reason\">Reason for rejecting</label>"
	                 "<textarea id=\"reason\" name=\"reason\" required maxlength=\"1024\" "
	                 "rows=\"2\"></textarea><button type=\"submit\" id=\"reject-button\">"
	                 "Reject</button></form></section>");
	put_dialog(h);
}

static void put_flash(struct p11g_html *h, const char *kind, const char *code, const char *text)
{
	if (!text)
		return;
	p11g_html_rawf(h, "<p id=\"flash\" class=\"%s\" role=\"status\"",
	               kind && !strcmp(kind, "ok") ? "ok" : "error");
	if (code) {
		p11g_html_raw(h, " data-code=\"");
		p11g_html_str(h, code);
		p11g_html_raw(h, "\"");
	}
	p11g_html_raw(h, ">");
	p11g_html_str(h, text);
	p11g_html_raw(h, "</p>");
}

void p11g_html_details(struct p11g_html *h, const struct p11g_web_view *v, const json_t *op,
                       bool may_decide, const char *flash_kind, const char *flash_code,
                       const char *flash)
{
	long long id = jnum(op, "id");
	put_flash(h, flash_kind, flash_code, flash);
	p11g_html_rawf(h, "<h1>Operation %lld: ", id);
	jtext(h, op, "state", 32);
	p11g_html_raw(h, "</h1>");
	if (*jstr(op, "needs")) {
		p11g_html_raw(h, "<p id=\"needs\">");
		jtext(h, op, "needs", 0);
		p11g_html_raw(h, "</p>");
	}
	p11g_html_raw(h, "<section id=\"summary\">");
	summary(h, v, op, true);
	p11g_html_raw(h, "</section>");
	if (may_decide)
		put_forms(h, v, id);
}

void p11g_html_confirm(struct p11g_html *h, const struct p11g_web_view *v, const json_t *op,
                       const char *verb, const char *reason)
{
	long long id = jnum(op, "id");
	bool approve = !strcmp(verb, "approve");
	p11g_html_rawf(h, "<h1>%s operation %lld?</h1><section id=\"summary\">",
	               approve ? "Approve" : "Reject", id);
	summary(h, v, op, true);
	p11g_html_rawf(h,
	               "</section><form id=\"confirm-form\" method=\"post\" "
	               "action=\"/op/%lld/%s\"><input type=\"hidden\" name=\"confirm\" "
	               "value=\"1\"><input type=\"hidden\" name=\"csrf\" value=\"",
	               id, approve ? "approve" : "reject");
	p11g_html_str(h, v->csrf);
	p11g_html_raw(h, "\">");
	if (!approve) {
		p11g_html_raw(h, "<p>Reason: <span class=\"reason\">");
		p11g_html_str(h, reason);
		p11g_html_raw(h, "</span></p><input type=\"hidden\" name=\"reason\" value=\"");
		p11g_html_str(h, reason);
		p11g_html_raw(h, "\">");
	}
	p11g_html_rawf(h,
	               "<button type=\"submit\" id=\"confirm-button\">Yes, %s operation %lld"
	               "</button> <a href=\"/op/%lld\">Cancel</a></form>",
	               approve ? "approve" : "reject", id, id);
}

void p11g_html_error(struct p11g_html *h, const struct p11g_web_view *v, const char *code,
                     const char *message)
{
	(void)v;
	p11g_html_raw(h, "<h1>Refused</h1>");
	put_flash(h, "error", code, p11g_web_code_sentence(code));
	if (message) {
		p11g_html_raw(h, "<p class=\"message\">approvald: ");
		p11g_html_str(h, message);
		p11g_html_raw(h, "</p>");
	}
	p11g_html_raw(h, "<p><a href=\"/\">Back to the approvals</a></p>");
}
