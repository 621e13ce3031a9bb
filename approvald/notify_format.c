/* The bodies of Slack and Teams notifications, from the event's JSON (notify.c): Slack's
 * incoming-webhook message with Block Kit blocks, and a Teams message carrying an Adaptive
 * Card.  What a requester typed goes into plain-text fields (Slack) or is escaped for the
 * card's Markdown (Teams), so it can neither link nor format; the only link is the page's. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "approvald/notify.h"
#include "p11gate/common.h"

#define SLACK_HEADER_MAX 150
#define SLACK_TEXT_MAX   2900
#define FIELD_MAX        1900

#ifndef _cleanup_json_
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))
#endif

static const char *str(const json_t *o, const char *name)
{
	const char *s = json_string_value(json_object_get(o, name));
	return s ? s : "";
}

/* s cut to at most max bytes at a UTF-8 boundary (a new string). */
static char *cut(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n <= max)
		return strdup(s);
	while (max && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--;
	char *r = malloc(max + 4);
	if (r) {
		memcpy(r, s, max);
		memcpy(r + max, "\xe2\x80\xa6", 4);
	}
	return r;
}

/* "Operation 42 approved: Sign app:1.2" */
static char *headline(const json_t *ev)
{
	const json_t *op = json_object_get(ev, "operation");
	const char *e = str(ev, "event"), *name = str(op, "name"), *desc = str(op, "description");
	char *out = NULL;
	static const struct {
		const char *event, *words;
	} w[] = {{"created", "waits for approval"},
	         {"approval", "was approved by one approver"},
	         {"approved", "is approved"},
	         {"rejected", "was rejected"},
	         {"withdrawn", "lost an approval"},
	         {"revoked", "was revoked"},
	         {"expired", "expired"},
	         {"expiring", "expires within 15 minutes"},
	         {"exhausted", "used all its uses"},
	         {"use_refused", "refused uses"}};
	const char *words = e;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(w); i++)
		if (!strcmp(e, w[i].event))
			words = w[i].words;
	if (!op) {
		if (asprintf(&out, "p11gate: %s", !strcmp(e, "test") ? "test notification" : e) < 0)
			return NULL;
		return out;
	}
	if (asprintf(&out, "Operation %" PRId64 " %s: %s",
	             (int64_t)json_integer_value(json_object_get(op, "id")), words,
	             *name ? name : desc) < 0)
		return NULL;
	return out;
}

/* The facts shown beside the headline: title, value (new strings in a JSON array of pairs). */
static json_t *facts(const json_t *ev)
{
	const json_t *op = json_object_get(ev, "operation"), *k;
	json_t *f = json_array();
	size_t i;
	char buf[256];
	if (!f)
		return NULL;
#define FACT(t, v) json_array_append_new(f, json_pack("[s, s]", t, v))
	if (op) {
		const json_t *req = json_object_get(op, "requester");
		FACT("State", str(op, "state"));
		if (*str(op, "needs"))
			FACT("Needs", str(op, "needs"));
		if (*str(req, "user"))
			FACT("Requester", str(req, "user"));
		else {
			snprintf(buf, sizeof(buf), "uid %" PRId64,
			         (int64_t)json_integer_value(json_object_get(req, "uid")));
			FACT("Requester", buf);
		}
		const json_t *pipe = json_object_get(op, "pipeline");
		if (pipe)
			FACT("Pipeline", str(pipe, "subject"));
		json_array_foreach(json_object_get(op, "keys"), i, k)
		{
			snprintf(buf, sizeof(buf), "used %" PRId64 " of %" PRId64,
			         (int64_t)json_integer_value(json_object_get(k, "used")),
			         (int64_t)json_integer_value(json_object_get(k, "uses")));
			json_array_append_new(
			    f, json_pack("[s, s++]", "Key", str(k, "uri"), " ", buf));
		}
		json_array_foreach(json_object_get(op, "digests"), i, k)
		{
			const char *pn = json_string_value(
			    json_array_get(json_object_get(op, "payload_names"), i));
			json_array_append_new(f,
			                      json_pack("[s, s+++]", "Digest", json_string_value(k),
			                                pn && *pn ? " (" : "", pn && *pn ? pn : "",
			                                pn && *pn ? ")" : ""));
		}
		/* a certificate request as approvald read it (csr_payload.c), not as titled */
		json_array_foreach(json_object_get(op, "images"), i, k)
		{
			const json_t *csr = json_object_get(k, "csr"),
			             *cert = json_object_get(k, "openpgp_certification");
			if (csr)
				json_array_append_new(
				    f, json_pack("[s, s++]", "Certificate request",
				                 str(csr, "subject"), ", key ", str(csr, "key")));
			/* an image approvald read: the name a signature claims, with its digest */
			const char *ident = str(k, "identity"), *ref = str(k, "reference");
			if (*ident || *ref)
				json_array_append_new(
				    f, json_pack("[s, s++]", "Image", *ident ? ident : ref,
				                 strchr(ident, '@') ? "" : "@",
				                 strchr(ident, '@') ? "" : str(k, "digest")));
			if (cert)
				json_array_append_new(
				    f, json_pack("[s, s++++]", "OpenPGP certification",
				                 str(cert, "user_id"), ", ", str(cert, "key"),
				                 " key ", str(cert, "fingerprint")));
		}
	}
	const json_t *actor = json_object_get(ev, "actor");
	if (actor && *str(actor, "user"))
		FACT("By", str(actor, "user"));
	if (*str(ev, "reason"))
		FACT("Reason", str(ev, "reason"));
	if (*str(ev, "message"))
		FACT("Message", str(ev, "message"));
#undef FACT
	return f;
}

/* Slack reads a message's top-level "text" as mrkdwn: & < > escaped as its docs say, so a
 * requester's <!channel> or <http://...|link> is shown, not acted on. */
static char *slack_escape(const char *s)
{
	char *out = malloc(strlen(s) * 5 + 1), *o = out;
	if (!out)
		return NULL;
	for (; *s; s++) {
		const char *rep = *s == '&'   ? "&amp;"
		                  : *s == '<' ? "&lt;"
		                  : *s == '>' ? "&gt;"
		                              : NULL;
		if (rep) {
			memcpy(o, rep, strlen(rep));
			o += strlen(rep);
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	return out;
}

static char *slack(const json_t *ev)
{
	_cleanup_free_ char *head = headline(ev);
	_cleanup_json_ json_t *fs = facts(ev);
	const json_t *op = json_object_get(ev, "operation"), *p;
	size_t i;
	if (!head || !fs)
		return NULL;
	_cleanup_free_ char *h = cut(head, SLACK_HEADER_MAX);
	json_t *blocks = json_array(), *fields = json_array();
	if (!h || !blocks || !fields) {
		json_decref(blocks);
		json_decref(fields);
		return NULL;
	}
	json_array_append_new(blocks, json_pack("{s:s, s:{s:s, s:s}}", "type", "header", "text",
	                                        "type", "plain_text", "text", h));
	json_array_foreach(fs, i, p)
	{
		if (json_array_size(fields) == 10) /* Slack's most per section */
			break;
		_cleanup_free_ char *v = cut(json_string_value(json_array_get(p, 1)), FIELD_MAX);
		char *t = NULL;
		if (v && asprintf(&t, "%s: %s", json_string_value(json_array_get(p, 0)), v) >= 0) {
			json_array_append_new(
			    fields, json_pack("{s:s, s:s}", "type", "plain_text", "text", t));
			free(t);
		}
	}
	json_array_append_new(blocks, json_pack("{s:s, s:o}", "type", "section", "fields", fields));
	if (op && *str(op, "description")) {
		_cleanup_free_ char *d = cut(str(op, "description"), SLACK_TEXT_MAX);
		if (d)
			json_array_append_new(blocks,
			                      json_pack("{s:s, s:{s:s, s:s}}", "type", "section",
			                                "text", "type", "plain_text", "text", d));
	}
	if (*str(ev, "link"))
		json_array_append_new(blocks,
		                      json_pack("{s:s, s:[{s:s, s:{s:s, s:s}, s:s, s:s}]}", "type",
		                                "actions", "elements", "type", "button", "text",
		                                "type", "plain_text", "text", "Open in p11gate",
		                                "url", str(ev, "link"), "action_id", "open"));
	_cleanup_free_ char *fallback = slack_escape(h);
	_cleanup_json_ json_t *msg =
	    fallback ? json_pack("{s:s, s:o}", "text", fallback, "blocks", blocks) : NULL;
	if (!fallback)
		json_decref(blocks);
	return msg ? json_dumps(msg, JSON_COMPACT) : NULL;
}

/* Text for the card's Markdown: its marks escaped, so a requester's text formats nothing and
 * links nowhere. */
static char *md_escape(const char *s, size_t max)
{
	_cleanup_free_ char *c = cut(s, max);
	if (!c)
		return NULL;
	char *out = malloc(strlen(c) * 2 + 1), *o = out;
	if (!out)
		return NULL;
	for (const char *p = c; *p; p++) {
		if (strchr("\\`*_{}[]()#+-.!<>|~", *p))
			*o++ = '\\';
		*o++ = *p;
	}
	*o = '\0';
	return out;
}

static char *teams(const json_t *ev)
{
	_cleanup_free_ char *head = headline(ev);
	_cleanup_json_ json_t *fs = facts(ev);
	const json_t *op = json_object_get(ev, "operation"), *p;
	size_t i;
	if (!head || !fs)
		return NULL;
	_cleanup_free_ char *h = md_escape(head, 300);
	json_t *body = json_array(), *fset = json_array();
	if (!h || !body || !fset) {
		json_decref(body);
		json_decref(fset);
		return NULL;
	}
	json_array_append_new(body,
	                      json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "TextBlock", "text", h,
	                                "weight", "Bolder", "size", "Medium", "wrap", 1));
	json_array_foreach(fs, i, p)
	{
		_cleanup_free_ char *v =
		    md_escape(json_string_value(json_array_get(p, 1)), FIELD_MAX);
		if (v)
			json_array_append_new(
			    fset, json_pack("{s:s, s:s}", "title",
			                    json_string_value(json_array_get(p, 0)), "value", v));
	}
	json_array_append_new(body, json_pack("{s:s, s:o}", "type", "FactSet", "facts", fset));
	if (op && *str(op, "description")) {
		_cleanup_free_ char *d = md_escape(str(op, "description"), SLACK_TEXT_MAX);
		if (d)
			json_array_append_new(body, json_pack("{s:s, s:s, s:b}", "type",
			                                      "TextBlock", "text", d, "wrap", 1));
	}
	json_t *card = json_pack("{s:s, s:s, s:s, s:o}", "$schema",
	                         "http://adaptivecards.io/schemas/adaptive-card.json", "type",
	                         "AdaptiveCard", "version", "1.4", "body", body);
	if (card && *str(ev, "link"))
		json_object_set_new(card, "actions",
		                    json_pack("[{s:s, s:s, s:s}]", "type", "Action.OpenUrl",
		                              "title", "Open in p11gate", "url", str(ev, "link")));
	_cleanup_json_ json_t *msg =
	    card ? json_pack("{s:s, s:[{s:s, s:n, s:o}]}", "type", "message", "attachments",
	                     "contentType", "application/vnd.microsoft.card.adaptive", "contentUrl",
	                     "content", card)
	         : NULL;
	return msg ? json_dumps(msg, JSON_COMPACT) : NULL;
}

char *p11g_notify_render(enum p11g_notify_format f, const json_t *event)
{
	switch (f) {
	case P11G_NOTIFY_SLACK:
		return slack(event);
	case P11G_NOTIFY_TEAMS:
		return teams(event);
	default:
		return json_dumps(event, JSON_COMPACT | JSON_SORT_KEYS);
	}
}
