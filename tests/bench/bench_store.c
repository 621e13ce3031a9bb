/* Fills a state directory through approvald's own operation code: N operations, each
 * requested, approved and used USES times, the last PENDING left pending.  The runner
 * (tests/bench/store) then times approvald's CLI against it.  An optional ACTIVE first files
 * that many approved operations that are never used and stay active: every use then walks
 * them, which is what the store's cache of parsed operations is for (not timed: fill_seconds
 * is the rest).  An optional OTHERS then files that many approved operations for other keys
 * (pkcs11:token=other;object=o<N>, a rule "other" must cover them): the indexes keep a use
 * and a request from looking at them.  Prints the p50 and p99 of one use and one request
 * (request and approval) of the timed part, in microseconds. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "approvald/ops.h"
#include "approvald/policy_load.h"
#include "approvald/store.h"
#include "p11gate/log.h"

#define BATCH 512 /* operations per group commit */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int dbl_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The p-th percentile of v (sorted here); 0 for none. */
static double pct(double *v, size_t n, int p)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), dbl_cmp);
	return v[(n - 1) * (size_t)p / 100];
}

static void die(const char *what, const p11g_err *err)
{
	fprintf(stderr, "bench_store: %s: %s (%s)\n", what, err->msg, err->code ? err->code : "");
	exit(1);
}

static struct p11g_ident ident(uid_t uid)
{
	struct p11g_ident id = {.uid = uid, .gid = uid};
	return id;
}

int main(int argc, char **argv)
{
	if (argc < 6 || argc > 8) {
		fprintf(stderr, "usage: bench_store STATE_DIR POLICY_DIR OPERATIONS USES PENDING "
		                "[ACTIVE [OTHERS]]\n");
		return 2;
	}
	const char *state = argv[1], *policy_dir = argv[2];
	unsigned long n = strtoul(argv[3], NULL, 10), uses = strtoul(argv[4], NULL, 10),
	              pending = strtoul(argv[5], NULL, 10),
	              active = argc >= 7 ? strtoul(argv[6], NULL, 10) : 0,
	              others = argc == 8 ? strtoul(argv[7], NULL, 10) : 0;
	struct p11g_ops o = {.daemon_uid = 0};
	struct p11g_store_options so = {.durability = P11G_DURABLE_PROCESS};
	p11g_err err = {0};
	struct p11g_ident orderer = ident(1000), approver = ident(2001);
	struct p11g_use_args use = {.mechanism = CKM_ECDSA, .digest = NULL};
	double t0 = now_s();

	p11g_log_threshold = P11G_LOG_WARN;
	if (p11g_policy_load(policy_dir, &o.policy, &err) < 0) {
		fprintf(stderr, "bench_store: %s\n", err.msg);
		return 1;
	}
	if (p11g_store_open(state, &so, &o.store, &err) < 0)
		die("open", &err);
	o.limits.max_pending_per_user = (unsigned)(pending + active) + 1;
	o.limits.default_validity = 86400;
	snprintf(use.key.token_label, sizeof(use.key.token_label), "bench");
	snprintf(use.key.label, sizeof(use.key.label), "k");
	use.key.key_type = CKK_EC;

	json_t *args =
	    json_pack("{s:[{s:s, s:I}], s:I, s:s}", "keys", "uri", "pkcs11:token=bench;object=k",
	              "uses", (json_int_t)uses, "valid", (json_int_t)86400, "description",
	              "release 1.4.2 firmware, pipeline #1234, benchmark filler");
	for (unsigned long i = 0; i < active; i++) {
		json_t *op = NULL;
		if (p11g_ops_request(&o, &orderer, args, &op, &err) < 0)
			die("request", &err);
		uint64_t id = (uint64_t)json_integer_value(json_object_get(op, "id"));
		json_decref(op);
		if (p11g_ops_approve(&o, &approver, id, &op, &err) < 0)
			die("approve", &err);
		json_decref(op);
	}
	for (unsigned long i = 0; i < others; i++) {
		char uri[80];
		if (i % BATCH == 0)
			p11g_store_batch_begin(o.store);
		snprintf(uri, sizeof(uri), "pkcs11:token=other;object=o%lu", i);
		json_t *oa =
		    json_pack("{s:[{s:s}], s:I}", "keys", "uri", uri, "valid", (json_int_t)86400);
		json_t *op = NULL;
		if (p11g_ops_request(&o, &orderer, oa, &op, &err) < 0)
			die("request (other)", &err);
		json_decref(oa);
		uint64_t id = (uint64_t)json_integer_value(json_object_get(op, "id"));
		json_decref(op);
		if (p11g_ops_approve(&o, &approver, id, &op, &err) < 0)
			die("approve (other)", &err);
		json_decref(op);
		if (i % BATCH == BATCH - 1 || i == others - 1)
			if (p11g_store_batch_end(o.store, &err) < 0)
				die("commit", &err);
	}
	double *use_us = calloc(n * uses + 1, sizeof(double)),
	       *req_us = calloc(n + 1, sizeof(double));
	size_t n_use = 0, n_req = 0;
	if (!use_us || !req_us)
		return 1;
	t0 = now_s();
	char digest[80];
	for (unsigned long i = 0; i < n; i++) {
		if (i % BATCH == 0)
			p11g_store_batch_begin(o.store);
		json_t *op = NULL;
		double r0 = now_s();
		if (p11g_ops_request(&o, &orderer, args, &op, &err) < 0)
			die("request", &err);
		req_us[n_req++] = (now_s() - r0) * 1e6;
		uint64_t id = (uint64_t)json_integer_value(json_object_get(op, "id"));
		json_decref(op);
		if (i < n - pending) {
			if (p11g_ops_approve(&o, &approver, id, &op, &err) < 0)
				die("approve", &err);
			json_decref(op);
			for (unsigned long u = 0; u < uses; u++) {
				json_t *res = NULL;
				snprintf(digest, sizeof(digest), "sha256:%064lx", i * uses + u);
				use.digest = digest;
				use.operation = id;
				double u0 = now_s();
				if (p11g_ops_use(&o, &orderer, &use, &res, &err) < 0)
					die("use", &err);
				use_us[n_use++] = (now_s() - u0) * 1e6;
				json_decref(res);
			}
		}
		if (i % BATCH == BATCH - 1 || i == n - 1)
			if (p11g_store_batch_end(o.store, &err) < 0)
				die("commit", &err);
	}
	json_decref(args);
	double fill = now_s() - t0;
	uint64_t map, used;
	p11g_store_stat(o.store, &map, &used);
	p11g_store_close(o.store);
	p11g_ops_clear(&o);
	p11g_policy_free(o.policy);

	char path[4096];
	struct stat st;
	snprintf(path, sizeof(path), "%s/data.mdb", state);
	if (stat(path, &st) < 0)
		st.st_size = 0;
	printf("{\"operations\": %lu, \"pending\": %lu, \"uses_per_operation\": %lu, "
	       "\"active\": %lu, \"others\": %lu, \"fill_seconds\": %.2f, "
	       "\"store_bytes_used\": %" PRIu64 ", \"bytes_per_operation\": %.0f, "
	       "\"data_file_bytes\": %lld, \"use_p50_us\": %.1f, \"use_p99_us\": %.1f, "
	       "\"request_p50_us\": %.1f, \"request_p99_us\": %.1f}\n",
	       n, pending, uses, active, others, fill, used, n ? (double)used / n : 0.0,
	       (long long)st.st_size, pct(use_us, n_use, 50), pct(use_us, n_use, 99),
	       pct(req_us, n_req, 50), pct(req_us, n_req, 99));
	free(use_us);
	free(req_us);
	return 0;
}
