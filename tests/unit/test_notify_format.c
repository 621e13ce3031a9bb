/* Notification bodies (notify_format.c): Slack's incoming-webhook message (Block Kit) and a
 * Teams message with an Adaptive Card, checked against the shapes their documentation gives:
 * https://api.slack.com/messaging/webhooks, https://api.slack.com/reference/block-kit/blocks,
 * https://learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/
 * connectors-using (Adaptive Card 1.4). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "approvald/notify.h"

static json_t *event(const char *ev, const char *desc, const char *link)
{
	json_t *e = json_pack(
	    "{s:s, s:I, s:s, s:{s:i, s:s, s:s, s:s, s:{s:i, s:s}, s:[{s:s, s:s, s:i, s:i}], s:[s], "
	    "s:[s]}, s:{s:i, s:s}, s:s}",
	    "event", ev, "time", (json_int_t)1700000000, "delivery", "7", "operation", "id", 42,
	    "state", "pending", "name", "Sign app:1.2 *bold*", "description", desc, "requester",
	    "uid", 1000, "user", "ci-bot", "keys", "uri", "pkcs11:token=prod;object=release",
	    "rule", "release", "uses", 2, "used", 0, "digests", "sha256:00ff", "payload_names",
	    "registry/app:1.2", "actor", "uid", 1001, "user", "alice", "reason",
	    "no [way](http://x)");
	assert_non_null(e);
	if (link)
		json_object_set_new(e, "link", json_string(link));
	return e;
}

/* Every string anywhere in j (object values and array items). */
static void strings_of(const json_t *j, const char *key,
                       void (*fn)(const char *key, const json_t *s))
{
	const char *k;
	json_t *v;
	size_t i;
	if (json_is_string(j))
		fn(key, j);
	else if (json_is_object(j))
		json_object_foreach((json_t *)j, k, v) strings_of(v, k, fn);
	else if (json_is_array(j))
		json_array_foreach(j, i, v) strings_of(v, key, fn);
}

static void no_mrkdwn(const char *key, const json_t *s)
{
	/* Slack: a "type" is never mrkdwn, so nothing a requester typed is read as markup */
	if (key && !strcmp(key, "type"))
		assert_string_not_equal(json_string_value(s), "mrkdwn");
}

static void test_slack(void **state)
{
	(void)state;
	json_t *e =
	    event("created", "see <http://evil.example|click here> &", "https://a.example/op/42");
	char *text = p11g_notify_render(P11G_NOTIFY_SLACK, e);
	assert_non_null(text);
	json_error_t je;
	json_t *m = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	assert_non_null(m);
	/* the fallback text, and blocks */
	assert_true(json_is_string(json_object_get(m, "text")));
	const json_t *blocks = json_object_get(m, "blocks"), *b;
	assert_true(json_array_size(blocks) >= 3 && json_array_size(blocks) <= 50);
	b = json_array_get(blocks, 0);
	assert_string_equal(json_string_value(json_object_get(b, "type")), "header");
	assert_string_equal(json_string_value(json_object_get(json_object_get(b, "text"), "type")),
	                    "plain_text");
	assert_true(json_string_length(json_object_get(json_object_get(b, "text"), "text")) <= 150);
	assert_non_null(
	    strstr(json_string_value(json_object_get(json_object_get(b, "text"), "text")),
	           "Operation 42 waits for approval"));
	b = json_array_get(blocks, 1);
	assert_string_equal(json_string_value(json_object_get(b, "type")), "section");
	const json_t *fields = json_object_get(b, "fields"), *f;
	size_t i;
	assert_true(json_array_size(fields) >= 3 && json_array_size(fields) <= 10);
	json_array_foreach(fields, i, f)
	{
		assert_string_equal(json_string_value(json_object_get(f, "type")), "plain_text");
		assert_true(json_string_length(json_object_get(f, "text")) <= 2000);
	}
	/* the description, as plain text: Slack shows "<http://...|click here>", links nothing */
	b = json_array_get(blocks, 2);
	assert_string_equal(json_string_value(json_object_get(b, "type")), "section");
	assert_string_equal(json_string_value(json_object_get(json_object_get(b, "text"), "type")),
	                    "plain_text");
	assert_string_equal(json_string_value(json_object_get(json_object_get(b, "text"), "text")),
	                    "see <http://evil.example|click here> &");
	/* the one link: a button to the page */
	b = json_array_get(blocks, 3);
	assert_string_equal(json_string_value(json_object_get(b, "type")), "actions");
	const json_t *btn = json_array_get(json_object_get(b, "elements"), 0);
	assert_string_equal(json_string_value(json_object_get(btn, "type")), "button");
	assert_string_equal(json_string_value(json_object_get(btn, "url")),
	                    "https://a.example/op/42");
	strings_of(m, NULL, no_mrkdwn);
	json_decref(m);
	free(text);
	json_decref(e);

	/* no link: no button; a long description is cut within Slack's 3000 characters */
	char big[5000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	e = event("approved", big, NULL);
	text = p11g_notify_render(P11G_NOTIFY_SLACK, e);
	m = json_loads(text, 0, &je);
	assert_non_null(m);
	json_array_foreach(json_object_get(m, "blocks"), i, b)
	{
		assert_string_not_equal(json_string_value(json_object_get(b, "type")), "actions");
		const json_t *t = json_object_get(json_object_get(b, "text"), "text");
		if (t)
			assert_true(json_string_length(t) <= 3000);
	}
	json_decref(m);
	free(text);
	json_decref(e);
}

static void test_teams(void **state)
{
	(void)state;
	json_t *e =
	    event("rejected", "[click](http://evil.example) **now**", "https://a.example/op/42");
	/* a certificate request, as approvald read it */
	assert_int_equal(
	    json_object_set_new(json_object_get(e, "operation"), "images",
	                        json_pack("[{s:{s:s, s:s}, s:s}, {s:{s:s, s:s, s:s, s:s}, s:s}, "
	                                  "{s:s, s:s, s:s, s:s}]",
	                                  "csr", "subject", "/CN=release", "key", "Ed25519",
	                                  "payload_digest", "sha256:00ff", "openpgp_certification",
	                                  "user_id", "Rel <r@a.example>", "fingerprint", "AB12",
	                                  "key", "ECDSA P-256", "created", "2024-05-01T00:00:00Z",
	                                  "payload_digest", "sha256:01", "reference",
	                                  "reg.example/app", "identity", "reg.example/app:1.0",
	                                  "digest", "sha256:cc", "payload_digest", "sha256:02")),
	    0);
	char *text = p11g_notify_render(P11G_NOTIFY_TEAMS, e);
	assert_non_null(text);
	json_t *m = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
	assert_non_null(m);
	assert_string_equal(json_string_value(json_object_get(m, "type")), "message");
	const json_t *att = json_array_get(json_object_get(m, "attachments"), 0);
	assert_int_equal(json_array_size(json_object_get(m, "attachments")), 1);
	assert_string_equal(json_string_value(json_object_get(att, "contentType")),
	                    "application/vnd.microsoft.card.adaptive");
	assert_true(json_is_null(json_object_get(att, "contentUrl")));
	const json_t *card = json_object_get(att, "content");
	assert_string_equal(json_string_value(json_object_get(card, "type")), "AdaptiveCard");
	assert_string_equal(json_string_value(json_object_get(card, "version")), "1.4");
	assert_string_equal(json_string_value(json_object_get(card, "$schema")),
	                    "http://adaptivecards.io/schemas/adaptive-card.json");
	const json_t *body = json_object_get(card, "body"), *x;
	size_t i;
	bool factset = false, desc = false, csr = false, cert = false, image = false;
	json_array_foreach(body, i, x)
	{
		const char *t = json_string_value(json_object_get(x, "type"));
		assert_true(!strcmp(t, "TextBlock") || !strcmp(t, "FactSet"));
		if (!strcmp(t, "FactSet")) {
			const json_t *fact;
			size_t j;
			factset = true;
			json_array_foreach(json_object_get(x, "facts"), j, fact)
			{
				assert_true(json_is_string(json_object_get(fact, "title")));
				assert_true(json_is_string(json_object_get(fact, "value")));
				if (!strcmp(json_string_value(json_object_get(fact, "title")),
				            "Certificate request")) {
					csr = true;
					assert_string_equal(
					    json_string_value(json_object_get(fact, "value")),
					    "/CN=release, key Ed25519");
				}
				/* (Markdown-escaped, as every fact a requester chose) */
				if (!strcmp(json_string_value(json_object_get(fact, "title")),
				            "OpenPGP certification")) {
					cert = true;
					assert_string_equal(
					    json_string_value(json_object_get(fact, "value")),
					    "Rel \\<r@a\\.example\\>, ECDSA P\\-256 key AB12");
				}
				if (!strcmp(json_string_value(json_object_get(fact, "title")),
				            "Image")) {
					image = true;
					assert_string_equal(
					    json_string_value(json_object_get(fact, "value")),
					    "reg\\.example/app:1\\.0@sha256:cc");
				}
			}
		}
		const char *s = json_string_value(json_object_get(x, "text"));
		/* the requester's Markdown is escaped: no link, no emphasis */
		if (s && strstr(s, "click")) {
			desc = true;
			assert_string_equal(s, "\\[click\\]\\(http://evil\\.example\\) "
			                       "\\*\\*now\\*\\*");
		}
	}
	assert_true(factset);
	assert_true(desc);
	assert_true(csr);
	assert_true(cert);
	assert_true(image);
	const json_t *act = json_array_get(json_object_get(card, "actions"), 0);
	assert_string_equal(json_string_value(json_object_get(act, "type")), "Action.OpenUrl");
	assert_string_equal(json_string_value(json_object_get(act, "url")),
	                    "https://a.example/op/42");
	json_decref(m);
	free(text);
	json_decref(e);
}

static void test_json_and_test_event(void **state)
{
	(void)state;
	json_t *e = json_pack("{s:s, s:s}", "event", "test", "message", "hello");
	char *text = p11g_notify_render(P11G_NOTIFY_JSON, e);
	assert_string_equal(text, "{\"event\":\"test\",\"message\":\"hello\"}");
	free(text);
	text = p11g_notify_render(P11G_NOTIFY_SLACK, e);
	json_t *m = json_loads(text, 0, NULL);
	assert_non_null(m);
	assert_string_equal(json_string_value(json_object_get(m, "text")),
	                    "p11gate: test notification");
	json_decref(m);
	free(text);
	json_decref(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_slack),
	    cmocka_unit_test(test_teams),
	    cmocka_unit_test(test_json_and_test_event),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
