/* Unit tests for rule decisions: roles, mechanisms, quorum by bipartite matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "policy/policy.h"
#include "p11gate/mech.h"

/* A policy of one rule, from the members given (name and keys are added). */
static struct p11g_policy *one_rule(const char *members)
{
	char text[2048];
	struct p11g_policy *p = NULL;
	p11g_err err = {0};

	snprintf(text, sizeof(text),
	         "{\"rules\": [{\"name\": \"r\", \"keys\": [\"pkcs11:token=t\"], %s}]}", members);
	if (p11g_policy_parse("test.json", text, strlen(text), &p, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(p->n_rules, 1);
	return p;
}

/* A person as recorded at approval time; groups is a NULL-terminated list. */
struct person {
	struct p11g_ident id;
	char *groups[4];
};

static struct p11g_ident person(struct person *p, uid_t uid, const char *user, const char *g1,
                                const char *g2)
{
	memset(p, 0, sizeof(*p));
	p->id.uid = uid;
	snprintf(p->id.user, sizeof(p->id.user), "%s", user);
	if (g1)
		p->groups[p->id.n_groups++] = (char *)g1;
	if (g2)
		p->groups[p->id.n_groups++] = (char *)g2;
	p->id.groups = p->groups;
	return p->id;
}

static void test_roles(void **state)
{
	struct p11g_policy *p =
	    one_rule("\"orderers\": [\"group:ci\", \"user:release\"], \"approvers\": "
	             "[\"group:rel\"], \"approvals\": 1, \"admins\": [\"group:sec\"], "
	             "\"auto_approve\": [\"user:release\"]");
	const struct p11g_rule *r = &p->rules[0];
	struct person a, b, c, d;
	struct p11g_ident ci = person(&a, 100, "builder", "ci", NULL);
	struct p11g_ident rel = person(&b, 101, "release", "staff", NULL);
	struct p11g_ident appr = person(&c, 102, "carol", "rel", NULL);
	struct p11g_ident sec = person(&d, 103, "dave", "sec", NULL);

	assert_true(p11g_rule_may_order(r, &ci));
	assert_true(p11g_rule_may_order(r, &rel));
	assert_false(p11g_rule_may_order(r, &appr));
	assert_true(p11g_rule_may_approve(r, &appr));
	assert_false(p11g_rule_may_approve(r, &ci));
	assert_false(p11g_rule_may_approve(r, &sec));
	assert_true(p11g_rule_is_admin(r, &sec));
	assert_false(p11g_rule_is_admin(r, &appr));
	assert_false(p11g_rule_auto_approves(r, &ci));
	assert_true(p11g_rule_auto_approves(r, &rel));
	p11g_policy_free(p);

	/* "approvals": 0 is approved on creation, whoever orders. */
	p = one_rule(
	    "\"orderers\": [\"group:ci\"], \"approvals\": 0, \"approvers\": [\"group:rel\"]");
	r = &p->rules[0];
	assert_true(p11g_rule_auto_approves(r, &ci));
	assert_true(p11g_rule_quorum_met(r, NULL, 0, ci.uid, NULL, 0));
	/* Nobody is needed, so nobody is an approver. */
	assert_false(p11g_rule_may_approve(r, &appr));
	p11g_policy_free(p);

	/* Orderers may be empty: nobody may order. */
	p = one_rule("\"orderers\": [], \"approvals\": 0");
	assert_false(p11g_rule_may_order(&p->rules[0], &ci));
	p11g_policy_free(p);
}

static void test_mechanisms(void **state)
{
	struct p11g_policy *p = one_rule("\"orderers\": [], \"approvals\": 0");
	const struct p11g_rule *r = &p->rules[0];

	/* No list: every known non-raw signing mechanism. */
	assert_true(p11g_rule_allows_mechanism(r, CKM_ECDSA));
	assert_true(p11g_rule_allows_mechanism(r, CKM_SHA256_RSA_PKCS));
	assert_true(p11g_rule_allows_mechanism(r, CKM_RSA_PKCS));
	assert_true(p11g_rule_allows_mechanism(r, CKM_EDDSA));
	assert_false(p11g_rule_allows_mechanism(r, CKM_RSA_X_509));
	assert_false(p11g_rule_allows_mechanism(r, CKM_RSA_9796));
	/* Unknown mechanisms sign something p11gate cannot name: raw. */
	assert_false(p11g_rule_allows_mechanism(r, CKM_AES_CBC));
	p11g_policy_free(p);

	p = one_rule("\"orderers\": [], \"approvals\": 0, \"allow_raw\": true");
	r = &p->rules[0];
	assert_true(p11g_rule_allows_mechanism(r, CKM_RSA_X_509));
	assert_true(p11g_rule_allows_mechanism(r, CKM_ECDSA));
	assert_true(p11g_rule_allows_mechanism(r, CKM_AES_CBC));
	p11g_policy_free(p);

	p = one_rule("\"orderers\": [], \"approvals\": 0, \"mechanisms\": [\"CKM_ECDSA_SHA256\"]");
	r = &p->rules[0];
	assert_true(p11g_rule_allows_mechanism(r, CKM_ECDSA_SHA256));
	assert_false(p11g_rule_allows_mechanism(r, CKM_ECDSA));
	assert_false(p11g_rule_allows_mechanism(r, CKM_RSA_X_509));
	p11g_policy_free(p);

	p = one_rule("\"orderers\": [], \"approvals\": 0, \"allow_raw\": true, "
	             "\"mechanisms\": [\"CKM_RSA_X_509\"]");
	r = &p->rules[0];
	assert_true(p11g_rule_allows_mechanism(r, CKM_RSA_X_509));
	assert_false(p11g_rule_allows_mechanism(r, CKM_RSA_PKCS));
	p11g_policy_free(p);
}

static void test_orderer_never_counts(void **state)
{
	struct p11g_policy *p = one_rule("\"orderers\": [\"group:rel\"], \"approvers\": "
	                                 "[\"group:rel\"], \"approvals\": 1");
	const struct p11g_rule *r = &p->rules[0];
	struct person a, b;
	struct p11g_ident v[2];
	char missing[256];

	v[0] = person(&a, 1000, "alice", "rel", NULL);
	assert_false(p11g_rule_quorum_met(r, v, 1, 1000, missing, sizeof(missing)));
	assert_string_equal(missing, "needs 1 more approval from group:rel");
	v[1] = person(&b, 1001, "bob", "rel", NULL);
	assert_true(p11g_rule_quorum_met(r, v, 2, 1000, missing, sizeof(missing)));
	assert_string_equal(missing, "");
	p11g_policy_free(p);
}

static void test_distinct_people(void **state)
{
	struct p11g_policy *p = one_rule("\"orderers\": [], \"approvers\": [\"group:rel\", "
	                                 "\"uid:7\"], \"approvals\": 2");
	const struct p11g_rule *r = &p->rules[0];
	struct person a, b, c;
	struct p11g_ident v[3];
	char missing[256];

	/* The same uid twice, even under two names, is one person. */
	v[0] = person(&a, 7, "alice", "rel", NULL);
	v[1] = person(&b, 7, "alias", "rel", NULL);
	assert_false(p11g_rule_quorum_met(r, v, 2, 1, missing, sizeof(missing)));
	assert_string_equal(missing, "needs 1 more approval from group:rel or uid:7");
	/* Someone outside every clause adds nothing. */
	v[2] = person(&c, 9, "mallory", "staff", NULL);
	assert_false(p11g_rule_quorum_met(r, v, 3, 1, missing, sizeof(missing)));
	v[2] = person(&c, 8, "carol", "rel", NULL);
	assert_true(p11g_rule_quorum_met(r, v, 3, 1, NULL, 0));
	p11g_policy_free(p);

	/* Nobody yet. */
	p = one_rule("\"orderers\": [], \"approvers\": [\"group:a\", \"group:b\", \"user:c\"], "
	             "\"approvals\": 3");
	assert_false(p11g_rule_quorum_met(&p->rules[0], NULL, 0, 1, missing, sizeof(missing)));
	assert_string_equal(missing, "needs 3 more approvals from group:a, group:b or user:c");
	p11g_policy_free(p);
}

/*
 * Taking people in order and giving each the first clause they fit fails
 * here: alice (release) would take the first clause, leaving nobody for the
 * second; bob (security) fits only the first.  A matching moves alice.
 */
static void test_matching_beats_greedy(void **state)
{
	struct p11g_policy *p =
	    one_rule("\"orderers\": [], \"quorum\": [{\"from\": [\"group:security\", "
	             "\"group:release-approvers\"], \"count\": 1}, {\"from\": "
	             "[\"group:release-approvers\"], "
	             "\"count\": 1}]");
	const struct p11g_rule *r = &p->rules[0];
	struct person a, b;
	struct p11g_ident v[2];
	char missing[256];

	v[0] = person(&a, 1001, "alice", "release-approvers", NULL);
	v[1] = person(&b, 1002, "bob", "security", NULL);
	assert_true(p11g_rule_quorum_met(r, v, 2, 1, missing, sizeof(missing)));
	/* Order does not matter. */
	struct p11g_ident w[2] = {v[1], v[0]};
	assert_true(p11g_rule_quorum_met(r, w, 2, 1, missing, sizeof(missing)));

	/* Alice alone fills one clause.  Either group completes the quorum
	 * (a security member takes the first clause and alice moves), so the
	 * sentence names both. */
	assert_false(p11g_rule_quorum_met(r, v, 1, 1, missing, sizeof(missing)));
	assert_string_equal(missing, "needs 1 more approval from group:release-approvers or "
	                             "group:security");
	/* One person in both groups is still one person. */
	struct person c;
	struct p11g_ident both = person(&c, 1003, "carol", "security", "release-approvers");
	assert_false(p11g_rule_quorum_met(r, &both, 1, 1, missing, sizeof(missing)));
	p11g_policy_free(p);
}

/* A chain of moves: each clause's only candidate is displaced once. */
static void test_matching_long_path(void **state)
{
	struct p11g_policy *p = one_rule("\"orderers\": [], \"quorum\": ["
	                                 "{\"from\": [\"group:a\", \"group:b\"], \"count\": 1},"
	                                 "{\"from\": [\"group:b\", \"group:c\"], \"count\": 1},"
	                                 "{\"from\": [\"group:c\", \"group:d\"], \"count\": 2}]");
	const struct p11g_rule *r = &p->rules[0];
	struct person x[4];
	struct p11g_ident v[4];
	char missing[256];

	v[0] = person(&x[0], 1, "p1", "b", "c");
	v[1] = person(&x[1], 2, "p2", "a", "b");
	v[2] = person(&x[2], 3, "p3", "c", NULL);
	assert_false(p11g_rule_quorum_met(r, v, 3, 0, missing, sizeof(missing)));
	/* A newcomer in any of a, b, c, d completes it: someone in a takes the
	 * first clause, p2 moves to the second, p3 to the third. */
	assert_string_equal(missing,
	                    "needs 1 more approval from group:c, group:d, group:a or group:b");
	v[3] = person(&x[3], 4, "p4", "c", "d");
	assert_true(p11g_rule_quorum_met(r, v, 4, 0, missing, sizeof(missing)));
	p11g_policy_free(p);
}

static void test_missing_sentence(void **state)
{
	struct p11g_policy *p = one_rule(
	    "\"orderers\": [], \"quorum\": [{\"from\": [\"group:security\"], \"count\": 1}, "
	    "{\"from\": [\"group:release-approvers\", \"user:bob\"], \"count\": 2}, "
	    "{\"from\": [\"uid:0\"], \"count\": 1}]");
	const struct p11g_rule *r = &p->rules[0];
	struct person a;
	struct p11g_ident v[1];
	char missing[256];

	assert_false(p11g_rule_quorum_met(r, NULL, 0, 1, missing, sizeof(missing)));
	assert_string_equal(missing, "needs 1 more approval from group:security, 2 more approvals "
	                             "from group:release-approvers or user:bob and 1 more "
	                             "approval from uid:0");
	v[0] = person(&a, 0, "root", "wheel", NULL);
	assert_false(p11g_rule_quorum_met(r, v, 1, 1, missing, sizeof(missing)));
	assert_string_equal(missing, "needs 1 more approval from group:security and 2 more "
	                             "approvals from group:release-approvers or user:bob");
	/* A small buffer gets a cut, terminated sentence. */
	char small[16];
	assert_false(p11g_rule_quorum_met(r, v, 1, 1, small, sizeof(small)));
	assert_string_equal(small, "needs 1 more ap");
	p11g_policy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roles),
	    cmocka_unit_test(test_mechanisms),
	    cmocka_unit_test(test_orderer_never_counts),
	    cmocka_unit_test(test_distinct_people),
	    cmocka_unit_test(test_matching_beats_greedy),
	    cmocka_unit_test(test_matching_long_path),
	    cmocka_unit_test(test_missing_sentence),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
