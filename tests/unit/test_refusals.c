/* The refusal aggregator: what a flood of refused uses may write, per uid and minute. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "approvald/refusals.h"

struct seen {
	int n;
	uint64_t total;
	struct p11g_refusal_agg last;
	char key[64], reason[64];
	int fail_at; /* fn fails at this call (1-based); 0 never */
};

static int collect(void *arg, const struct p11g_refusal_agg *a)
{
	struct seen *s = arg;
	if (s->fail_at && s->n + 1 == s->fail_at)
		return -5;
	s->n++;
	s->total += a->count;
	s->last = *a;
	snprintf(s->key, sizeof(s->key), "%s", a->key);
	snprintf(s->reason, sizeof(s->reason), "%s", a->reason);
	return 0;
}

/* A sweep whose commit succeeds (or fails: fn < 0 keeps everything). */
static int p11g_refusals_flush(struct p11g_refusals *r, int64_t now, bool all,
                               int (*fn)(void *arg, const struct p11g_refusal_agg *a), void *arg)
{
	int rc = p11g_refusals_each_due(r, now, all, fn, arg);
	if (rc == 0)
		p11g_refusals_forget_due(r, now, all);
	return rc;
}

static void no_role_first_written_rest_counted(void **state)
{
	struct p11g_refusals *r = p11g_refusals_new();
	struct seen s = {0};
	(void)state;

	assert_int_equal(p11g_refusals_note(r, 1000, 1000, "pkcs11:k", "no_rule", false, 100),
	                 P11G_REFUSAL_WRITE);
	for (int i = 0; i < 999; i++)
		assert_int_equal(
		    p11g_refusals_note(r, 1000, 1000, "pkcs11:k", "no_rule", false, 100 + i / 20),
		    P11G_REFUSAL_COUNTED);
	/* before the interval ends nothing is flushed */
	assert_false(p11g_refusals_due(r, 159, false));
	assert_true(p11g_refusals_due(r, 159, true));
	assert_true(p11g_refusals_due(r, 160, false));
	assert_int_equal(p11g_refusals_flush(r, 159, false, collect, &s), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(p11g_refusals_flush(r, 160, false, collect, &s), 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.total, 999);
	assert_string_equal(s.key, "pkcs11:k");
	assert_int_equal(s.last.uid, 1000);
	assert_int_equal(s.last.first, 100);
	assert_int_equal(s.last.last, 149);
	assert_int_equal(p11g_refusals_size(r), 0);
	/* a new interval writes its first again */
	assert_int_equal(p11g_refusals_note(r, 1000, 1000, "pkcs11:k", "no_rule", false, 161),
	                 P11G_REFUSAL_WRITE);
	p11g_refusals_free(r);
}

static void many_keys_fold_into_one_pair(void **state)
{
	struct p11g_refusals *r = p11g_refusals_new();
	struct seen s = {0};
	char key[32];
	int written = 0;
	(void)state;

	for (int i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "pkcs11:object=k%d", i);
		written +=
		    p11g_refusals_note(r, 7, 7, key, "no_rule", false, 10) == P11G_REFUSAL_WRITE;
	}
	/* one per distinct pair allowed, one for the pair they fold into */
	assert_int_equal(written, P11G_REFUSALS_KEYS + 1);
	assert_true(p11g_refusals_size(r) <= P11G_REFUSALS_KEYS + 1);
	assert_int_equal(p11g_refusals_flush(r, 70, false, collect, &s), 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.key, "*");
	assert_int_equal(s.total, 10000 - written);
	p11g_refusals_free(r);
}

static void a_role_writes_its_allowance_then_aggregates(void **state)
{
	struct p11g_refusals *r = p11g_refusals_new();
	int written = 0;
	(void)state;

	for (int i = 0; i < 1000; i++)
		written += p11g_refusals_note(r, 5, 5, "pkcs11:k", "exhausted", true, 10) ==
		           P11G_REFUSAL_WRITE;
	assert_int_equal(written, P11G_REFUSALS_ROLE_RECORDS + 1);
	assert_false(p11g_refusals_allowance_left(r, 5, 69));
	assert_true(p11g_refusals_allowance_left(r, 5, 70)); /* a new minute */
	assert_true(p11g_refusals_allowance_left(r, 6, 10));
	/* another uid is not charged for it */
	assert_int_equal(p11g_refusals_note(r, 6, 6, "pkcs11:k", "exhausted", true, 10),
	                 P11G_REFUSAL_WRITE);
	p11g_refusals_free(r);
}

static void the_table_is_bounded(void **state)
{
	struct p11g_refusals *r = p11g_refusals_new();
	struct seen s = {0};
	uint64_t counted = 0;
	(void)state;

	for (uid_t uid = 1; uid <= 3 * P11G_REFUSALS_MAX; uid++)
		counted += p11g_refusals_note(r, uid, uid, "pkcs11:k", "no_rule", false, 10) ==
		           P11G_REFUSAL_COUNTED;
	assert_true(p11g_refusals_size(r) <= P11G_REFUSALS_MAX + 1);
	assert_true(counted >= 2 * P11G_REFUSALS_MAX - 1);
	/* at shutdown every count is written: the overflow pair's too */
	assert_int_equal(p11g_refusals_flush(r, 11, true, collect, &s), 0);
	assert_int_equal(s.total, counted);
	assert_int_equal(p11g_refusals_size(r), 0);
	p11g_refusals_free(r);
}

static void a_failed_write_keeps_the_counts(void **state)
{
	struct p11g_refusals *r = p11g_refusals_new();
	struct seen s = {.fail_at = 1};
	(void)state;

	for (int i = 0; i < 3; i++)
		p11g_refusals_note(r, 9, 9, "pkcs11:k", "no_rule", false, 10);
	assert_int_equal(p11g_refusals_flush(r, 100, false, collect, &s), -5);
	assert_int_equal(p11g_refusals_size(r), 1);
	/* a body run twice writes the same aggregate twice, changing nothing */
	s.fail_at = 0;
	assert_int_equal(p11g_refusals_each_due(r, 100, false, collect, &s), 0);
	assert_int_equal(p11g_refusals_each_due(r, 100, false, collect, &s), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.total, 4);
	s = (struct seen){0};
	s.fail_at = 0;
	assert_int_equal(p11g_refusals_flush(r, 101, false, collect, &s), 0);
	assert_int_equal(s.total, 2);
	p11g_refusals_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(no_role_first_written_rest_counted),
	    cmocka_unit_test(many_keys_fold_into_one_pair),
	    cmocka_unit_test(a_role_writes_its_allowance_then_aggregates),
	    cmocka_unit_test(the_table_is_bounded),
	    cmocka_unit_test(a_failed_write_keeps_the_counts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
