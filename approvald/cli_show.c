/* What people read of operations: one in full (show, and approve's confirmation) and a table
 * (list).  Every string is escaped first (cli_shown): nothing a requester or a token wrote
 * reaches the terminal raw. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "approvald/cli_internal.h"

static void fmt_rel(int64_t t, char *buf, size_t n)
{
	int64_t d = t - p11g_now();
	const char *pre = d >= 0 ? "in " : "", *post = d >= 0 ? "" : " ago";
	if (d < 0)
		d = -d;
	if (d < 120)
		snprintf(buf, n, "%s%llds%s", pre, (long long)d, post);
	else if (d < 7200)
		snprintf(buf, n, "%s%lldm%s", pre, (long long)d / 60, post);
	else if (d < 2 * 86400)
		snprintf(buf, n, "%s%lldh%s", pre, (long long)d / 3600, post);
	else
		snprintf(buf, n, "%s%lldd%s", pre, (long long)d / 86400, post);
}

/* Long listings go through a pager when a person is reading them. */
FILE *cli_pager_open(size_t lines)
{
	struct winsize ws;
	const char *pager = getenv("PAGER");
	if (!isatty(STDOUT_FILENO) || ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0 ||
	    lines < ws.ws_row)
		return stdout;
	if (!pager || !*pager)
		pager = "less -FRX";
	FILE *p = popen(pager, "w");
	return p ? p : stdout;
}

void cli_pager_close(FILE *f)
{
	if (f != stdout)
		pclose(f);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The members of obj sorted by name, one a line: indent spaces, the name (padded to width),
 * sep, the value (text as it is, other JSON compact).  What verifiers and approvers rely on is
 * read in full and in a stable order. */
static void print_sorted(FILE *f, const json_t *obj, int indent, int width, const char *sep)
{
	size_t n = json_object_size(obj), i = 0;
	const char *k;
	json_t *v;

	if (!n)
		return;
	_cleanup_free_ const char **keys = calloc(n, sizeof(*keys));
	if (!keys)
		return;
	json_object_foreach((json_t *)obj, k, v) keys[i++] = k;
	qsort(keys, n, sizeof(*keys), cmp_str);
	for (i = 0; i < n; i++) {
		const json_t *val = json_object_get(obj, keys[i]);
		_cleanup_free_ char *other =
		    json_is_string(val) ? NULL : json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT);
		fprintf(f, "%*s%-*s%s%s\n", indent, "", width, keys[i], sep,
		        json_is_string(val) ? json_string_value(val)
		        : other             ? other
		                            : "?");
	}
}

/* The pipeline that asked, from its verified ID token: issuer, subject and the claims kept. */
/* label, then the strings of arr separated by ", " (nothing without any). */
static void print_strings(FILE *f, const char *label, const json_t *arr)
{
	size_t i;
	const json_t *s;
	if (!json_array_size(arr))
		return;
	fputs(label, f);
	json_array_foreach(arr, i, s) fprintf(f, "%s%s", i ? ", " : "", json_string_value(s) ?: "");
	fputc('\n', f);
}

static void print_identity(FILE *f, const json_t *id)
{
	if (!id)
		return;
	fprintf(f, "  pipeline:    %s (issuer %s, verified ID token)\n", cli_str(id, "subject"),
	        cli_str(id, "issuer"));
	print_sorted(f, json_object_get(id, "claims"), 4, 16, " ");
}

/* -1 (nothing printed) when out of memory. */
int cli_print_op(FILE *f, const json_t *raw)
{
	char who[128], t1[40], t2[40];
	const json_t *k, *a, *d;
	size_t i;
	_cleanup_json_ json_t *op = cli_shown(raw);

	if (!op)
		return -1;
	fprintf(f, "operation %lld: %s", (long long)cli_num(op, "id"), cli_str(op, "state"));
	if (*cli_str(op, "needs"))
		fprintf(f, " (%s)", cli_str(op, "needs"));
	fputc('\n', f);
	if (*cli_str(op, "name"))
		fprintf(f, "  name:        %s\n", cli_str(op, "name"));
	cli_fmt_who(json_object_get(op, "orderer"), who, sizeof(who));
	fprintf(f, "  orderer:     %s\n", who);
	print_identity(f, json_object_get(op, "identity"));
	fprintf(f, "  signer:      %s\n", cli_str(op, "signer"));
	cli_fmt_time(cli_num(op, "created"), t1, sizeof(t1));
	fprintf(f, "  created:     %s\n", t1);
	cli_fmt_time(cli_num(op, "expires"), t1, sizeof(t1));
	fmt_rel(cli_num(op, "expires"), t2, sizeof(t2));
	fprintf(f, "  expires:     %s (%s)\n", t1, t2);
	fprintf(f, "  description: %s\n", cli_str(op, "description"));
	if (*cli_str(op, "context"))
		fprintf(f, "  context:     %s\n", cli_str(op, "context"));
	if (json_object_size(json_object_get(op, "meta"))) {
		fprintf(f, "  metadata:\n");
		print_sorted(f, json_object_get(op, "meta"), 4, 0, " = ");
	}
	/* The images approvald read from the payloads themselves; the requester's own "oci"
	 * words only where there are none (an operation from before payloads were read). */
	const json_t *images = json_object_get(op, "images"), *img, *x;
	size_t j;
	json_array_foreach(images, i, img)
	{
		const json_t *csr = json_object_get(img, "csr");
		if (csr) {
			/* read from the request's bytes by approvald (csr_payload.c) */
			fprintf(f, "  certificate request (PKCS#10): %s\n",
			        cli_str(csr, "subject"));
			fprintf(f, "    key:       %s\n", cli_str(csr, "key"));
			print_strings(f, "    names:     ", json_object_get(csr, "names"));
			print_strings(f, "    extended key usage: ",
			              json_object_get(csr, "extended_key_usage"));
			json_array_foreach(json_object_get(csr, "other_extensions"), j, x)
			    fprintf(f, "    extension: %s\n", json_string_value(x) ?: "");
			fprintf(f, "    payload:   %s\n", cli_str(img, "payload_digest"));
			continue;
		}
		const json_t *cert = json_object_get(img, "openpgp_certification");
		if (cert) {
			/* read from the OpenPGP hashed data by approvald (pgp_payload.c) */
			fprintf(f, "  OpenPGP certification: user ID \"%s\"\n",
			        cli_str(cert, "user_id"));
			fprintf(f, "    key:       %s %s, created %s\n", cli_str(cert, "key"),
			        cli_str(cert, "fingerprint"), cli_str(cert, "created"));
			fprintf(f, "    payload:   %s\n", cli_str(img, "payload_digest"));
			continue;
		}
		const char *ident = cli_str(img, "identity");
		if (*ident) /* simple signing: the claim's own name (with its digest, or the
		               claim's) */
			fprintf(f, "  image:       %s%s%s  (simple signing, OpenPGP key %s)\n",
			        ident, strchr(ident, '@') ? "" : "@",
			        strchr(ident, '@') ? "" : cli_str(img, "digest"),
			        cli_str(img, "openpgp_key"));
		else
			fprintf(f, "  image:       %s@%s\n", cli_str(img, "reference"),
			        cli_str(img, "digest"));
		fprintf(f, "    payload:   %s\n", cli_str(img, "payload_digest"));
		if (json_object_size(json_object_get(img, "annotations"))) {
			/* cosign's "optional": what a verifier's `-a k=v` relies on */
			fprintf(f, "    signed annotations:\n");
			print_sorted(f, json_object_get(img, "annotations"), 6, 0, " = ");
		}
	}
	const json_t *oci = json_object_get(op, "oci");
	if (oci && !json_array_size(images))
		fprintf(
		    f,
		    "  image:       %s/%s@%s  (as the requester says; not read from a payload)\n",
		    cli_str(oci, "registry"), cli_str(oci, "repository"), cli_str(oci, "digest"));
	fprintf(f, "  keys:\n");
	json_array_foreach(json_object_get(op, "keys"), i, k) fprintf(
	    f, "    %s  (rule %s, used %lld of %lld)\n", cli_str(k, "uri"), cli_str(k, "rule"),
	    (long long)cli_num(k, "used"), (long long)cli_num(k, "uses"));
	if (json_array_size(json_object_get(op, "digests"))) {
		fprintf(f, "  pinned digests:\n");
		const json_t *names = json_object_get(op, "payload_names");
		json_array_foreach(json_object_get(op, "digests"), i, d)
		{
			const char *pn = json_string_value(json_array_get(names, i));
			fprintf(f, "    %s%s%s%s\n", json_string_value(d), pn && *pn ? "  (" : "",
			        pn && *pn ? pn : "", pn && *pn ? ")" : "");
		}
	}
	fprintf(f, "  approvals:  %s\n",
	        json_array_size(json_object_get(op, "approvals")) ? "" : " none");
	json_array_foreach(json_object_get(op, "approvals"), i, a)
	{
		cli_fmt_who(a, who, sizeof(who));
		cli_fmt_time(cli_num(a, "time"), t1, sizeof(t1));
		fprintf(f, "    %s at %s\n", who, t1);
	}
	const char *ends[] = {"rejection", "revocation"};
	for (i = 0; i < 2; i++) {
		const json_t *e = json_object_get(op, ends[i]);
		if (!e)
			continue;
		cli_fmt_who(e, who, sizeof(who));
		cli_fmt_time(cli_num(e, "time"), t1, sizeof(t1));
		fprintf(f, "  %s: by %s at %s: %s\n", i ? "revoked" : "rejected", who, t1,
		        cli_str(e, "reason"));
	}
	return 0;
}

void cli_print_op_table(FILE *f, const json_t *raw)
{
	size_t i, j;
	const json_t *op, *k;
	_cleanup_json_ json_t *ops = cli_shown(raw);
	fprintf(f, "%-6s %-9s %-16s %-40s %-10s %s\n", "ID", "STATE", "ORDERER", "KEYS (used/uses)",
	        "EXPIRES", "NAME (or DESCRIPTION)");
	json_array_foreach(ops, i, op)
	{
		char keys[256] = "", rel[32], who[64];
		size_t off = 0;
		json_array_foreach(json_object_get(op, "keys"), j, k)
		{
			int n =
			    snprintf(keys + off, sizeof(keys) - off, "%s%s (%lld/%lld)",
			             j ? ", " : "", cli_str(k, "uri"),
			             (long long)cli_num(k, "used"), (long long)cli_num(k, "uses"));
			if (n < 0 || (size_t)n >= sizeof(keys) - off)
				break;
			off += (size_t)n;
		}
		const json_t *o = json_object_get(op, "orderer");
		snprintf(who, sizeof(who), "%s", *cli_str(o, "user") ? cli_str(o, "user") : "");
		if (!who[0])
			snprintf(who, sizeof(who), "uid %lld", (long long)cli_num(o, "uid"));
		fmt_rel(cli_num(op, "expires"), rel, sizeof(rel));
		const json_t *id = json_object_get(op, "identity");
		fprintf(f, "%-6lld %-9s %-16s %-40s %-10s %s%s%s%s\n", (long long)cli_num(op, "id"),
		        cli_str(op, "state"), who, keys, rel, id ? "[pipeline " : "",
		        id ? cli_str(id, "subject") : "", id ? "] " : "",
		        *cli_str(op, "name") ? cli_str(op, "name") : cli_str(op, "description"));
	}
}
