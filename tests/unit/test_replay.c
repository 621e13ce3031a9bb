/* audit --verify's replay of checkpoints (audit_state.c): a checkpoint names the record it
 * signs, the one before it or one some records back (checkpoint_job.h), and verifies only when
 * that record's hash, as the chain walk saw it, is the one signed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "approvald/audit_state.h"
#include "approvald/checkpoint.h"
#include "approvald/checkpoint_job.h"

static EVP_PKEY *key;

/* The hash the walk saw for record seq (its successor's prev): made up, one per seq. */
static void hash_of(uint64_t seq, char hex[65])
{
	snprintf(hex, 65, "%064llx", (unsigned long long)seq * 2654435761u + 7);
}

static json_t *plain(uint64_t seq)
{
	char prev[65];
	hash_of(seq - 1, prev);
	return json_pack("{s:s, s:I, s:s}", "event", "policy_loaded", "seq", (json_int_t)seq,
	                 "prev", prev);
}

/* A checkpoint at seq signing (through, head), properly signed with key. */
static json_t *checkpoint(uint64_t seq, uint64_t through, const char *head)
{
	char text[300], prev[65], id[80];
	unsigned char sig[128];
	size_t siglen = sizeof(sig);
	char b64[200];
	int len = p11g_checkpoint_text(text, sizeof(text), through, head, 1700000000);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	assert_true(len > 0 && ctx);
	assert_int_equal(EVP_DigestSignInit(ctx, NULL, NULL, NULL, key), 1);
	assert_int_equal(EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)text, (size_t)len), 1);
	EVP_MD_CTX_free(ctx);
	EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
	assert_int_equal(p11g_checkpoint_key_id(key, id), 0);
	hash_of(seq - 1, prev);
	return json_pack("{s:s, s:I, s:I, s:s, s:I, s:s, s:s, s:s}", "event", "checkpoint", "seq",
	                 (json_int_t)seq, "through", (json_int_t)through, "head", head, "signed",
	                 (json_int_t)1700000000, "key", id, "sig", b64, "prev", prev);
}

/* Records 1..n plain, then the checkpoint cp at n + 1; the replay's findings and coverage. */
static void run(uint64_t n, json_t *cp, uint64_t *checkpoints, uint64_t *covered,
                uint64_t *findings)
{
	struct p11g_replay r;
	p11g_err err = {0};
	p11g_replay_init(&r, true);
	r.pubkey = key;
	for (uint64_t s = 1; s <= n; s++) {
		json_t *rec = plain(s);
		assert_int_equal(p11g_replay_record(s, rec, &r, &err), 0);
		json_decref(rec);
	}
	assert_int_equal(p11g_replay_record(n + 1, cp, &r, &err), 0);
	json_decref(cp);
	*checkpoints = r.checkpoints;
	*covered = r.covered;
	*findings = r.n_findings;
	p11g_replay_clear(&r);
}

static void test_checkpoint_right_after_what_it_signs(void **state)
{
	uint64_t c, cov, f;
	char h[65];
	(void)state;
	hash_of(10, h);
	run(10, checkpoint(11, 10, h), &c, &cov, &f);
	assert_int_equal(c, 1);
	assert_int_equal(cov, 11);
	assert_int_equal(f, 0);
}

static void test_checkpoint_signed_some_records_back(void **state)
{
	uint64_t c, cov, f;
	char h[65];
	(void)state;
	hash_of(40, h);
	run(100, checkpoint(101, 40, h), &c, &cov, &f);
	assert_int_equal(c, 1);
	assert_int_equal(cov, 40); /* 41..101 are the next checkpoint's */
	assert_int_equal(f, 0);
}

static void test_checkpoint_over_another_hash_is_a_rewrite(void **state)
{
	uint64_t c, cov, f;
	char h[65];
	(void)state;
	/* signed over record 40's hash before the records up to it were rewritten and re-hashed:
	 * the walk sees another hash there now */
	hash_of(39, h);
	run(100, checkpoint(101, 40, h), &c, &cov, &f);
	assert_int_equal(c, 0);
	assert_int_equal(cov, 0);
	assert_int_equal(f, 1);
	hash_of(10, h);
	run(10, checkpoint(11, 10, "00"), &c, &cov, &f);
	assert_int_equal(c, 0);
	assert_int_equal(f, 1);
}

static void test_checkpoint_too_far_back_or_ahead_is_refused(void **state)
{
	uint64_t c, cov, f;
	char h[65];
	(void)state;
	uint64_t n = P11G_CHECKPOINT_LAG_MAX + 10;
	hash_of(5, h);
	run(n, checkpoint(n + 1, 5, h), &c, &cov, &f);
	assert_int_equal(c, 0);
	assert_int_equal(f, 1);
	/* a record at or after itself */
	hash_of(11, h);
	run(10, checkpoint(11, 11, h), &c, &cov, &f);
	assert_int_equal(c, 0);
	assert_int_equal(f, 1);
	run(10, checkpoint(11, 0, h), &c, &cov, &f);
	assert_int_equal(c, 0);
	assert_int_equal(f, 1);
}

int main(void)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	if (!ctx || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, &key) != 1)
		return 1;
	EVP_PKEY_CTX_free(ctx);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_checkpoint_right_after_what_it_signs),
	    cmocka_unit_test(test_checkpoint_signed_some_records_back),
	    cmocka_unit_test(test_checkpoint_over_another_hash_is_a_rewrite),
	    cmocka_unit_test(test_checkpoint_too_far_back_or_ahead_is_refused),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	EVP_PKEY_free(key);
	return rc;
}
