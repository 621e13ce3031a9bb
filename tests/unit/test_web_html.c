/* approvald-web's pages (web_html.c): what a requester typed is text, never markup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "approvald/web_html.h"

static const struct p11g_web_view view = {.viewer = "alice",
                                          .how = "web, peer uid 1001",
                                          .csrf = "c0ffee",
                                          .pending = 2,
                                          .now = 1700000000};

static char *text(const char *s, size_t max)
{
	struct p11g_html h = {0};
	p11g_html_text(&h, s, strlen(s), max);
	assert_false(h.oom);
	return h.p;
}

static void test_escape(void **state)
{
	(void)state;
	char *e = text("<script>alert('x')</script> & \"q\"", 0);
	assert_string_equal(e,
	                    "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;");
	free(e);
	/* a cut never splits a UTF-8 sequence or an entity, and says it was cut */
	e = text("ab\xc3\xa9"
	         "cd",
	         3);
	assert_string_equal(e, "ab\xe2\x80\xa6");
	free(e);
	e = text("<<<<", 2);
	assert_string_equal(e, "&lt;&lt;\xe2\x80\xa6");
	free(e);
	struct p11g_html h = {0};
	p11g_html_text(&h, "a\0b", 3, 0);
	assert_string_equal(h.p, "a\xef\xbf\xbd"
	                         "b");
	p11g_html_free(&h);
}

static json_t *hostile_op(void)
{
	json_t *op = json_pack(
	    "{s:i, s:s, s:{s:i, s:s}, s:s, s:i, s:i, s:s, s:s, s:[s], s:[s], s:[{s:s, s:s, s:i, "
	    "s:i}], s:[], s:s, s:{s:s}}",
	    "id", 7, "state", "pending", "orderer", "uid", 1000, "user", "bob\"><script>", "signer",
	    "uid:1000", "created", 1699999000, "expires", 1700003600, "description",
	    "<img src=x onerror=alert(1)>", "name", "\" onmouseover=\"alert(1)", "digests",
	    "sha256:00", "payload_names", "javascript:alert(1)", "keys", "uri",
	    "pkcs11:token=prod;object=<k>", "rule", "prod", "uses", 1, "used", 0, "approvals",
	    "needs", "rule prod needs 1 more approval from group:release", "meta", "<b>", "</dl>");
	assert_non_null(op);
	/* what approvald read of a certificate request: the requester chose every byte of it */
	assert_int_equal(json_object_set_new(
	                     op, "images",
	                     json_pack("[{s:{s:s, s:s, s:[s], s:[s]}, s:s}]", "csr", "subject",
	                               "/CN=<img src=x onerror=alert(2)>", "key", "EC P-256",
	                               "names", "URI:javascript:alert(3)<b>", "extended_key_usage",
	                               "codeSigning", "payload_digest", "sha256:00")),
	                 0);
	/* and of OpenPGP signatures (issue 24): a user ID certification, a simple-signing claim */
	assert_int_equal(json_array_append_new(
	                     json_object_get(op, "images"),
	                     json_pack("{s:{s:s, s:s, s:s, s:s}, s:s}", "openpgp_certification",
	                               "user_id", "<script>alert(4)</script> <a@b.example>",
	                               "fingerprint", "AB<i>", "key", "Ed25519<u>", "created",
	                               "2024-05-01T00:00:00Z", "payload_digest", "sha256:01")),
	                 0);
	assert_int_equal(json_array_append_new(
	                     json_object_get(op, "images"),
	                     json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "reference",
	                               "reg.example/app", "identity", "reg.example/app@sha256:<em>",
	                               "digest", "sha256:<em>", "payload_digest", "sha256:02",
	                               "format", "simple-signing", "openpgp_key", "CD<s>")),
	                 0);
	return op;
}

static void test_pages_escape(void **state)
{
	(void)state;
	json_t *op = hostile_op();
	json_t *ops = json_pack("[O]", op);
	struct p11g_html h = {0};
	p11g_html_begin(&h, &view, "<title>");
	p11g_html_list(&h, &view, ops, false, NULL, 0);
	p11g_html_details(&h, &view, op, true, "error", "already_decided", "<flash>");
	p11g_html_confirm(&h, &view, op, "reject", "</textarea><script>");
	p11g_html_end(&h);
	assert_false(h.oom);
	/* the only script element is the page's own */
	const char *first = strstr(h.p, "<script");
	assert_non_null(first);
	assert_null(strstr(first + 1, "<script"));
	assert_null(strstr(h.p, "<img"));
	assert_null(strstr(h.p, "<b>"));
	assert_null(strstr(h.p, "\" onmouseover"));
	assert_non_null(strstr(h.p, "&lt;img src=x onerror=alert(1)&gt;"));
	assert_non_null(strstr(h.p, "&quot; onmouseover=&quot;alert(1)"));
	assert_non_null(strstr(h.p, "<span class=\"payload-name\">javascript:alert(1)</span>"));
	assert_null(strstr(h.p, "href=\"javascript"));
	assert_non_null(strstr(h.p, "<p id=\"needs\">rule prod needs 1 more approval from "
	                            "group:release</p>"));
	/* the forms carry the viewer's token; the reason repeated is text */
	assert_non_null(strstr(h.p, "name=\"csrf\" value=\"c0ffee\""));
	assert_non_null(strstr(h.p, "value=\"&lt;/textarea&gt;&lt;script&gt;\""));
	assert_non_null(strstr(h.p, "data-code=\"already_decided\""));
	assert_null(strstr(h.p, " style="));
	assert_non_null(strstr(h.p,
	                       "<li class=\"csr\">Certificate request (PKCS#10) for "
	                       "<strong>/CN=&lt;img src=x onerror=alert(2)&gt;</strong>, key EC "
	                       "P-256, names URI:javascript:alert(3)&lt;b&gt;, extended key "
	                       "usage codeSigning</li>"));
	assert_non_null(strstr(h.p, "<li class=\"openpgp-cert\">OpenPGP certification of user ID "
	                            "<strong>&lt;script&gt;alert(4)&lt;/script&gt; "
	                            "&lt;a@b.example&gt;</strong> for Ed25519&lt;u&gt; key "
	                            "AB&lt;i&gt;, created 2024-05-01T00:00:00Z</li>"));
	/* a claim by digest: its identity holds the digest, not shown twice */
	assert_non_null(strstr(h.p, "<li class=\"image\">reg.example/app@sha256:&lt;em&gt; "
	                            "(simple signing, OpenPGP key CD&lt;s&gt;)</li>"));
	p11g_html_free(&h);
	json_decref(ops);
	json_decref(op);
}

static void test_list_pages(void **state)
{
	(void)state;
	struct p11g_html h = {0};
	json_t *none = json_array();
	p11g_html_list(&h, &view, none, true, "rejected", 41);
	assert_non_null(strstr(h.p, "<p id=\"empty\">"));
	assert_non_null(strstr(h.p, "<option selected>rejected</option>"));
	assert_non_null(
	    strstr(h.p, "id=\"next\" href=\"/?view=all&amp;state=rejected&amp;before=41\""));
	p11g_html_free(&h);
	/* a state not among approvald's never reaches a link */
	p11g_html_list(&h, &view, none, true, "\"><x", 5);
	assert_null(strstr(h.p, "<x"));
	assert_non_null(strstr(h.p, "href=\"/?view=all&amp;before=5\""));
	p11g_html_free(&h);
	json_decref(none);
	assert_string_equal(p11g_web_code_sentence("already_decided"),
	                    "Already decided by someone else.");
	assert_string_equal(p11g_web_code_sentence("no-such"), "The request failed.");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_escape),
	    cmocka_unit_test(test_pages_escape),
	    cmocka_unit_test(test_list_pages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
