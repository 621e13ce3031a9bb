/* approvald audit: the listing, --checkpoints, --verify (live or --state-dir, --pubkey) and
 * --export-pubkey. */
#include <inttypes.h>

#include "approvald/cli.h"
#include "approvald/cli_internal.h"
#include "approvald/local.h"
#include "p11gate/wire.h"

static void print_audit_row(const json_t *raw)
{
	char t[40], who[96] = "";
	_cleanup_json_ json_t *r = cli_shown(raw);
	if (!r)
		return;
	const json_t *actor = json_object_get(r, "actor");
	cli_fmt_time(cli_num(r, "time"), t, sizeof(t));
	if (actor)
		cli_fmt_who(actor, who, sizeof(who));
	char detail[512] = "";
	const char *parts[] = {"key", "mechanism", "digest", "reason", "state", "path"};
	size_t off = 0;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(parts); i++) {
		const char *v = cli_str(r, parts[i]);
		if (!*v)
			continue;
		int n = snprintf(detail + off, sizeof(detail) - off, "%s%s=%s", off ? " " : "",
		                 parts[i], v);
		if (n < 0 || (size_t)n >= sizeof(detail) - off)
			break;
		off += (size_t)n;
	}
	char op[24] = "-";
	if (json_object_get(r, "op"))
		snprintf(op, sizeof(op), "%lld", (long long)cli_num(r, "op"));
	printf("%-6lld %-23s %-14s %-24s %-6s %s\n", (long long)cli_num(r, "seq"), t,
	       cli_str(r, "event"), who, op, detail);
}

struct offline_ctx {
	uint64_t since;
	bool json, checkpoints, header;
};

static void print_checkpoint_row(const json_t *r)
{
	char t[32];
	cli_fmt_time(cli_num(r, "signed"), t, sizeof(t));
	printf("%-8lld %-8lld %-23s %s\n", (long long)cli_num(r, "seq"),
	       (long long)cli_num(r, "through"), t, cli_str(r, "key"));
}

static void print_record(struct offline_ctx *c, const json_t *rec)
{
	if (c->checkpoints && strcmp(cli_str(rec, "event"), "checkpoint") != 0)
		return;
	if (c->json) {
		cli_print_json(rec, JSON_COMPACT | JSON_SORT_KEYS);
		return;
	}
	if (c->header) {
		if (c->checkpoints)
			printf("%-8s %-8s %-23s %s\n", "SEQ", "THROUGH", "SIGNED", "KEY");
		else
			printf("%-6s %-23s %-14s %-24s %-6s %s\n", "SEQ", "TIME", "EVENT", "ACTOR",
			       "OP", "DETAILS");
		c->header = false;
	}
	if (c->checkpoints)
		print_checkpoint_row(rec);
	else
		print_audit_row(rec);
}

static int offline_visit(uint64_t seq, json_t *rec, void *arg)
{
	(void)seq;
	print_record(arg, rec);
	return 0;
}

static void print_verify_report(const json_t *res, bool all)
{
	if (all)
		printf("audit chain intact: %lld records", (long long)cli_num(res, "records"));
	else
		printf(
		    "audit chain intact: %lld records (records %lld to %lld walked now, the rest "
		    "verified before by this approvald)",
		    (long long)cli_num(res, "records"), (long long)cli_num(res, "from"),
		    (long long)cli_num(res, "records"));
	printf("; %lld operations agree with their records", (long long)cli_num(res, "operations"));
	if (cli_num(res, "unrecorded"))
		printf(", %lld ended before state records (not compared)",
		       (long long)cli_num(res, "unrecorded"));
	printf("\n");
	if (json_object_get(res, "checkpoints")) {
		printf("checkpoints: %lld, each signed by the audit key; records 1 to %lld covered",
		       (long long)cli_num(res, "checkpoints"), (long long)cli_num(res, "covered"));
		if (cli_num(res, "uncovered"))
			printf("; %lld records after record %lld not yet covered by a checkpoint",
			       (long long)cli_num(res, "uncovered"),
			       (long long)cli_num(res, "covered"));
		printf("\n");
	}
}

/* A PEM public key file as the verify verb takes it: the base64 between its armour lines
 * (DER SubjectPublicKeyInfo).  NULL with a message printed. */
static char *pubkey_b64(const char *path)
{
	static const char begin[] = "-----BEGIN PUBLIC KEY-----",
	                  end[] = "-----END PUBLIC KEY-----";
	char line[256], *out = calloc(1, 8192);
	size_t len = 0;
	int state = 0; /* 0 before, 1 inside, 2 after */
	FILE *f = fopen(path, "re");
	if (!f || !out) {
		fprintf(stderr, "approvald: --pubkey %s: %s\n", path, strerror(errno));
		if (f)
			fclose(f);
		free(out);
		return NULL;
	}
	while (state < 2 && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (state == 0 && !strcmp(line, begin))
			state = 1;
		else if (state == 1 && !strcmp(line, end))
			state = 2;
		else if (state == 1 && len + strlen(line) < 8191 &&
		         strspn(
		             line,
		             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") ==
		             strlen(line)) {
			memcpy(out + len, line, strlen(line));
			len += strlen(line);
		} else if (state == 1) {
			state = 3;
		}
	}
	fclose(f);
	if (state != 2 || !len) {
		fprintf(
		    stderr,
		    "approvald: --pubkey %s: not a PEM public key (approvald audit --export-pubkey "
		    "prints it)\n",
		    path);
		free(out);
		return NULL;
	}
	return out;
}

int p11g_cli_audit(const struct p11g_cli_audit *a)
{
	struct offline_ctx oc = {
	    .since = a->since, .json = a->json, .checkpoints = a->checkpoints, .header = !a->json};

	if (a->export_pubkey)
		return p11g_local_export_pubkey(a->config);
	if (a->pubkey && !a->verify)
		return cli_usage_error("audit", "--pubkey goes with --verify");
	if (a->dir) {
		p11g_err err = {0};
		_cleanup_json_ json_t *res = NULL;
		if (p11g_local_audit(a->dir, a->verify, a->pubkey, oc.since, offline_visit, &oc,
		                     &res, &err) < 0) {
			if (a->verify && err.code && !strcmp(err.code, P11G_E_AUDIT_BROKEN))
				cli_print_error("audit chain broken: ", &err);
			else
				cli_report(&err);
			return EXIT_REFUSED;
		}
		if (a->verify)
			print_verify_report(res, true);
		return 0;
	}

	if (a->verify) {
		_cleanup_json_ json_t *res = NULL;
		_cleanup_free_ char *pub = a->pubkey ? pubkey_b64(a->pubkey) : NULL;
		p11g_err err = {0};
		if (a->pubkey && !pub)
			return EXIT_REFUSED;
		json_t *req = json_pack("{s:s, s:b}", "verb", "verify", "full", a->full);
		if (pub)
			json_object_set_new(req, "pubkey", json_string(pub));
		int r =
		    p11g_wire_call_path(p11g_wire_socket_path(cli_socket_opt), req, &res, -1, &err);
		json_decref(req);
		if (r < 0) {
			if (err.code && !strcmp(err.code, P11G_E_AUDIT_BROKEN)) {
				cli_print_error("audit chain broken: ", &err);
				return EXIT_REFUSED;
			}
			return cli_report(&err);
		}
		print_verify_report(res, cli_num(res, "from") == 1);
		return 0;
	}

	uint64_t since = oc.since;
	for (;;) {
		_cleanup_json_ json_t *res = NULL;
		int rc = cli_call("audit", json_pack("{s:I}", "since", (json_int_t)since), &res,
		                  CALL_TIMEOUT_MS);
		if (rc)
			return rc;
		const json_t *recs = json_object_get(res, "records"), *r;
		size_t i;
		json_array_foreach(recs, i, r)
		{
			print_record(&oc, r);
			since = (uint64_t)cli_num(r, "seq");
		}
		if (!json_is_true(json_object_get(res, "more")) || !json_array_size(recs))
			break;
	}
	if (oc.header && !oc.json && !a->checkpoints)
		printf("%-6s %-23s %-14s %-24s %-6s %s\n", "SEQ", "TIME", "EVENT", "ACTOR", "OP",
		       "DETAILS");
	return 0;
}
