/* The approvald command line: a verb table of clients that talk to the daemon's socket. */
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <sys/ioctl.h>
#include <time.h>

#include "approvald/cli.h"
#include "approvald/cli_internal.h"
#include "approvald/local.h"
#include "approvald/textsafe.h"
#include "p11gate/idtoken_src.h"
#include "p11gate/wire.h"

const char *cli_socket_opt;

int cli_usage_error(const char *verb, const char *fmt, ...)
{
	va_list ap;
	fputs("approvald: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'approvald %s --help'.\n", verb ? verb : "");
	return EXIT_USAGE;
}

/* getopt stays quiet (opterr = 0); the one error line names the option. */
static int bad_option(const char *verb, char **argv)
{
	const char *opt = optind > 0 ? argv[optind - 1] : "?";
	if (optopt && optopt != '?')
		return cli_usage_error(verb, "option '%s' needs a value or is not known", opt);
	return cli_usage_error(verb, "unknown option '%s'", opt);
}

/*
 * Every text from the daemon, its store or a token is shown through these: stores and
 * tokens may hold what requests may no longer carry (textsafe.h), and a person's terminal
 * must show it, not obey it.
 */
json_t *cli_shown(const json_t *j)
{
	json_t *e = j ? p11g_text_escape_json(j) : json_object();
	if (!e)
		fputs("approvald: out of memory\n", stderr);
	return e;
}

/* The one error line, "approvald: WHAT MESSAGE (CODE)", escaped (an escape is at most four
 * times the byte it shows). */
void cli_print_error(const char *what, const p11g_err *err)
{
	char msg[4 * sizeof(err->msg)], code[64];
	const char *c = err->code ? err->code : "error";
	p11g_text_escape(msg, sizeof(msg), err->msg, strnlen(err->msg, sizeof(err->msg)));
	p11g_text_escape(code, sizeof(code), c, strlen(c));
	fprintf(stderr, "approvald: %s%s (%s)\n", what, msg, code);
}

int cli_report(const p11g_err *err)
{
	cli_print_error("", err);
	if (err->code && !strcmp(err->code, P11G_E_UNAVAILABLE))
		return EXIT_UNREACHABLE;
	return EXIT_REFUSED;
}

/* One call; on failure prints the one-line error and returns the exit code. */
int cli_call(const char *verb, json_t *args, json_t **ret, int timeout_ms)
{
	p11g_err err = {0};
	json_t *req = args ? args : json_object();
	json_object_set_new(req, "verb", json_string(verb));
	int r =
	    p11g_wire_call_path(p11g_wire_socket_path(cli_socket_opt), req, ret, timeout_ms, &err);
	json_decref(req);
	return r < 0 ? cli_report(&err) : 0;
}

static bool parse_id(const char *s, uint64_t *ret)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v == 0)
		return false;
	*ret = v;
	return true;
}

/* jansson escapes C0 controls; DEL, C1 and bidirectional formatting are escaped here. */
void cli_print_json(const json_t *j, size_t flags)
{
	_cleanup_free_ char *s = json_dumps(j, flags | JSON_ENCODE_ANY);
	_cleanup_free_ char *safe = s ? p11g_text_json_safe(s) : NULL;
	if (safe)
		puts(safe);
	else
		fputs("approvald: out of memory\n", stderr);
}

/* ---- formatting --------------------------------------------------------- */

const char *cli_str(const json_t *obj, const char *name)
{
	const char *s = json_string_value(json_object_get(obj, name));
	return s ? s : "";
}

int64_t cli_num(const json_t *obj, const char *name)
{
	return (int64_t)json_integer_value(json_object_get(obj, name));
}

void cli_fmt_time(int64_t t, char *buf, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(buf, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

void cli_fmt_who(const json_t *who, char *buf, size_t n)
{
	const char *user = cli_str(who, "user");
	if (*user)
		snprintf(buf, n, "%s (uid %lld)", user, (long long)cli_num(who, "uid"));
	else
		snprintf(buf, n, "uid %lld", (long long)cli_num(who, "uid"));
}

/* ---- verbs -------------------------------------------------------------- */

/* What a verb's command line gave; each verb reads the members its options set. */
struct args {
	const char *verb; /* its name; first, so that no option's member is at offset 0 */
	bool json, all, yes, verify, full, checkpoints, export_pubkey, wait, uses_given;
	long wait_s;
	const char *state, *reason, *dir, *config, *policy_dir, *pubkey;
	uint64_t id, since;
	json_t *req, *keys, *digests; /* request's */
};

static int set_key(struct args *a, const char *arg)
{
	json_array_append_new(a->keys, json_pack("{s:s}", "uri", arg));
	a->uses_given = false;
	return 0;
}

static int set_uses(struct args *a, const char *arg)
{
	unsigned long long n;
	char *end;
	if (!json_array_size(a->keys))
		return cli_usage_error("request", "--uses follows the --key it counts");
	if (a->uses_given)
		return cli_usage_error("request", "--uses given twice for one --key");
	errno = 0;
	n = strtoull(arg, &end, 10);
	if (errno || *end || !*arg || *arg == '-' || n == 0 || n > 1000000)
		return cli_usage_error("request", "--uses takes a number from 1 to 1000000");
	json_object_set_new(json_array_get(a->keys, json_array_size(a->keys) - 1), "uses",
	                    json_integer((json_int_t)n));
	a->uses_given = true;
	return 0;
}

static int set_valid(struct args *a, const char *arg)
{
	int64_t d = p11g_duration_parse(arg);
	if (d <= 0)
		return cli_usage_error("request",
		                       "--valid takes a duration such as 90s, 15m, 24h, 7d");
	json_object_set_new(a->req, "valid", json_integer(d));
	return 0;
}

/* The pipeline's ID token, as a rule with "claims" wants it (p11gate/idtoken_src.h): from a
 * file ("-": standard input), an environment variable (GitLab's id_tokens), or GitHub's token
 * service for an audience.  Once; never printed. */
static int id_token_from(struct args *a, const char *opt, const char *file, const char *env,
                         const char *github)
{
	p11g_err err = {0};
	if (json_object_get(a->req, "id_token"))
		return cli_usage_error("request", "one ID token: --id-token, --id-token-env or "
		                                  "--id-token-github, once");
	char *tok =
	    github ? p11g_id_token_github(github, true, &err) : p11g_id_token_load(file, env, &err);
	json_t *t = tok ? json_string(tok) : NULL;
	p11g_id_token_free(tok);
	if (!tok || !t || json_object_set_new(a->req, "id_token", t) < 0) {
		_cleanup_free_ char *msg =
		    tok ? NULL : p11g_text_escaped(err.msg, strnlen(err.msg, sizeof(err.msg)));
		fprintf(stderr, "approvald: %s: %s\n", opt, tok ? "not text" : msg ? msg : "?");
		return EXIT_USAGE;
	}
	return 0;
}

static int set_id_token(struct args *a, const char *arg)
{
	return id_token_from(a, "--id-token", arg, NULL, NULL);
}

static int set_id_token_env(struct args *a, const char *arg)
{
	return id_token_from(a, "--id-token-env", NULL, arg, NULL);
}

static int set_id_token_github(struct args *a, const char *arg)
{
	return id_token_from(a, "--id-token-github", NULL, NULL, arg);
}

static int set_digest(struct args *a, const char *arg)
{
	json_array_append_new(a->digests, json_string(arg));
	return 0;
}

/* --payload-name NAME names the --digest before it (as --uses counts the --key before it). */
static int set_payload_name(struct args *a, const char *arg)
{
	size_t n = json_array_size(a->digests);
	json_t *names = json_object_get(a->req, "payload_names");
	if (!n)
		return cli_usage_error("request", "--payload-name follows the --digest it names");
	if (!names && json_object_set_new(a->req, "payload_names", names = json_array()) < 0)
		return EXIT_USAGE;
	if (json_array_size(names) >= n)
		return cli_usage_error("request", "--payload-name given twice for one --digest");
	while (json_array_size(names) < n - 1)
		json_array_append_new(names, json_string(""));
	json_array_append_new(names, json_string(arg));
	return 0;
}

/* --meta KEY=VALUE, repeatable: the request's metadata (approvald checks the sizes). */
static int set_meta(struct args *a, const char *arg)
{
	const char *eq = strchr(arg, '=');
	json_t *meta = json_object_get(a->req, "meta");
	if (!eq || eq == arg)
		return cli_usage_error("request", "--meta takes KEY=VALUE");
	if (!meta && json_object_set_new(a->req, "meta", meta = json_object()) < 0)
		return EXIT_USAGE;
	_cleanup_free_ char *key = strndup(arg, (size_t)(eq - arg));
	if (!key || json_object_get(meta, key))
		return cli_usage_error("request", "--meta %s given twice", key ? key : "KEY");
	json_object_set_new(meta, key, json_string(eq + 1));
	return 0;
}

static int set_wait(struct args *a, const char *arg)
{
	char *end;
	a->wait = true;
	if (arg) {
		errno = 0;
		a->wait_s = strtol(arg, &end, 10);
		if (errno || *end || !*arg || a->wait_s < 0 || a->wait_s > 86400)
			return cli_usage_error("request", "--wait takes seconds from 0 to 86400");
	}
	return 0;
}

static int set_since(struct args *a, const char *arg)
{
	if (!parse_id(arg, &a->since) && strcmp(arg, "0"))
		return cli_usage_error("audit", "--since takes a record number");
	return 0;
}

static int set_socket(struct args *a, const char *arg)
{
	cli_socket_opt = arg;
	return 0;
}

/*
 * Every option of every verb, once.  An option sets a flag, keeps its value, becomes a text
 * member of the request, or calls set (0, or a usage error's exit status).  A verb takes the
 * options of its bits in the verb table; each verb's getopt table is built from those alone, so an
 * abbreviation means what it means for that verb.
 */
enum {
	O_KEY,
	O_USES,
	O_VALID,
	O_DESCRIPTION,
	O_CONTEXT,
	O_DIGEST,
	O_PAYLOAD_NAME,
	O_NAME,
	O_META,
	O_ID_TOKEN,
	O_ID_TOKEN_ENV,
	O_ID_TOKEN_GITHUB,
	O_FOR,
	O_WAIT,
	O_ALL,
	O_STATE,
	O_REASON,
	O_YES,
	O_JSON,
	O_VERIFY,
	O_FULL,
	O_PUBKEY,
	O_CHECKPOINTS,
	O_EXPORT_PUBKEY,
	O_SINCE,
	O_STATE_DIR,
	O_CONFIG,
	O_POLICY_DIR,
	O_SOCKET,
	O_HELP,
	O_COUNT
};
#define O(name) (1u << O_##name)
#define FLAG(m) .flag = offsetof(struct args, m)
#define TEXT(m) .text = offsetof(struct args, m)

static const struct opt {
	const char *name;
	int has_arg;
	size_t flag, text; /* offsets of a bool or a string in struct args; 0: none */
	const char *member;
	int (*set)(struct args *a, const char *arg);
} options[O_COUNT] = {
    [O_KEY] = {"key", required_argument, .set = set_key},
    [O_USES] = {"uses", required_argument, .set = set_uses},
    [O_VALID] = {"valid", required_argument, .set = set_valid},
    [O_DESCRIPTION] = {"description", required_argument, .member = "description"},
    [O_CONTEXT] = {"context", required_argument, .member = "context"},
    [O_DIGEST] = {"digest", required_argument, .set = set_digest},
    [O_PAYLOAD_NAME] = {"payload-name", required_argument, .set = set_payload_name},
    [O_NAME] = {"name", required_argument, .member = "name"},
    [O_META] = {"meta", required_argument, .set = set_meta},
    [O_ID_TOKEN] = {"id-token", required_argument, .set = set_id_token},
    [O_ID_TOKEN_ENV] = {"id-token-env", required_argument, .set = set_id_token_env},
    [O_ID_TOKEN_GITHUB] = {"id-token-github", required_argument, .set = set_id_token_github},
    [O_FOR] = {"for", required_argument, .member = "for"},
    [O_WAIT] = {"wait", optional_argument, .set = set_wait},
    [O_ALL] = {"all", no_argument, FLAG(all)},
    [O_STATE] = {"state", required_argument, TEXT(state)},
    [O_REASON] = {"reason", required_argument, TEXT(reason)},
    [O_YES] = {"yes", no_argument, FLAG(yes)},
    [O_JSON] = {"json", no_argument, FLAG(json)},
    [O_VERIFY] = {"verify", no_argument, FLAG(verify)},
    [O_FULL] = {"full", no_argument, FLAG(full)},
    [O_PUBKEY] = {"pubkey", required_argument, TEXT(pubkey)},
    [O_CHECKPOINTS] = {"checkpoints", no_argument, FLAG(checkpoints)},
    [O_EXPORT_PUBKEY] = {"export-pubkey", no_argument, FLAG(export_pubkey)},
    [O_SINCE] = {"since", required_argument, .set = set_since},
    [O_STATE_DIR] = {"state-dir", required_argument, TEXT(dir)},
    [O_CONFIG] = {"config", required_argument, TEXT(config)},
    [O_POLICY_DIR] = {"policy-dir", required_argument, TEXT(policy_dir)},
    [O_SOCKET] = {"socket", required_argument, .set = set_socket},
    [O_HELP] = {"help", no_argument},
};

static int wait_decision(uint64_t id, long seconds)
{
	int64_t deadline = p11g_mono_us() + (int64_t)seconds * 1000000;
	for (;;) {
		_cleanup_json_ json_t *res = NULL;
		int64_t left = (deadline - p11g_mono_us()) / 1000000;
		if (left < 0)
			left = 0;
		int rc = cli_call("wait",
		                  json_pack("{s:I, s:I}", "id", (json_int_t)id, "timeout",
		                            (json_int_t)(left > 3600 ? 3600 : left)),
		                  &res, -1);
		if (rc)
			return rc;
		_cleanup_json_ json_t *op = cli_shown(json_object_get(res, "operation"));
		const char *state = cli_str(op, "state");
		if (!strcmp(state, "approved")) {
			fprintf(stderr, "approvald: operation %" PRIu64 " approved\n", id);
			return 0;
		}
		if (strcmp(state, "pending")) {
			fprintf(stderr, "approvald: operation %" PRIu64 " is %s (%s)\n", id, state,
			        state);
			return EXIT_REFUSED;
		}
		if (p11g_mono_us() >= deadline) {
			fprintf(stderr,
			        "approvald: operation %" PRIu64
			        " is still pending after %lds (%s)\n",
			        id, seconds, P11G_E_TIMEOUT);
			return EXIT_REFUSED;
		}
	}
}

static int run_request(struct args *a)
{
	if (!json_array_size(a->keys))
		return cli_usage_error("request", "give at least one --key URI");
	json_object_set(a->req, "keys", a->keys);
	if (json_array_size(a->digests))
		json_object_set(a->req, "digests", a->digests);
	const char *tok = getenv("APPROVALD_ID_TOKEN_FILE");
	if (!json_object_get(a->req, "id_token") && tok && *tok &&
	    id_token_from(a, "$APPROVALD_ID_TOKEN_FILE", tok, NULL, NULL))
		return EXIT_USAGE;
	json_t *res = NULL;
	int rc = cli_call("request", json_incref(a->req), &res, CALL_TIMEOUT_MS);
	if (rc)
		return rc;
	uint64_t id = (uint64_t)cli_num(res, "id");
	if (a->json)
		cli_print_json(json_object_get(res, "operation"), JSON_INDENT(2));
	else
		printf("%" PRIu64 "\n", id);
	fflush(stdout);
	if (!a->json && isatty(STDERR_FILENO)) {
		_cleanup_json_ json_t *e = cli_shown(res);
		fprintf(stderr, "approvald: operation %" PRIu64 " is %s\n", id,
		        cli_str(e, "state"));
	}
	bool pending = !strcmp(cli_str(res, "state"), "pending");
	json_decref(res);
	if (a->wait && pending)
		return wait_decision(id, a->wait_s);
	return 0;
}

static int run_list(struct args *a)
{
	/* The daemon pages, and a page may end where its bounded scan did, with few operations or
	 * none: the CLI follows "next" until a page says there is no more. */
	_cleanup_json_ json_t *ops = json_array();
	uint64_t after = 0;
	for (;;) {
		_cleanup_json_ json_t *res = NULL;
		json_t *args = json_pack("{s:b, s:I, s:i}", "all", a->all, "after",
		                         (json_int_t)after, "limit", 1000);
		if (a->state)
			json_object_set_new(args, "state", json_string(a->state));
		int rc = cli_call("list", args, &res, CALL_TIMEOUT_MS);
		if (rc)
			return rc;
		json_t *page = json_object_get(res, "operations");
		json_array_extend(ops, page);
		if (!json_is_true(json_object_get(res, "more")))
			break;
		uint64_t next = (uint64_t)cli_num(res, "next");
		if (next <= after) {
			p11g_err err = {0};
			p11g_err_set(&err, P11G_E_PROTOCOL,
			             "list: a page with more and no \"next\" past %" PRIu64, after);
			return cli_report(&err);
		}
		after = next;
	}
	if (a->json) {
		cli_print_json(ops, JSON_INDENT(2));
		return 0;
	}
	if (!json_array_size(ops)) {
		printf(a->all || a->state ? "no operations\n"
		                          : "nothing waits for your approval\n");
		return 0;
	}
	FILE *f = cli_pager_open(json_array_size(ops) + 1);
	cli_print_op_table(f, ops);
	cli_pager_close(f);
	return 0;
}

/* approve without --yes: the operation in full, then a person's "y" on the terminal. */
static int confirm_approval(uint64_t id)
{
	_cleanup_json_ json_t *cur = NULL;
	int rc = cli_call("show", json_pack("{s:I}", "id", (json_int_t)id), &cur, CALL_TIMEOUT_MS);
	if (rc)
		return rc;
	if (cli_print_op(stdout, json_object_get(cur, "operation")) < 0)
		return EXIT_REFUSED;
	FILE *tty = fopen("/dev/tty", "re");
	if (!tty) {
		fprintf(stderr, "approvald: no terminal to confirm on; pass --yes to approve "
		                "without asking\n");
		return EXIT_USAGE;
	}
	char line[16] = "";
	printf("Approve operation %" PRIu64 "? [y/N] ", id);
	fflush(stdout);
	bool ok = fgets(line, sizeof(line), tty) && (line[0] == 'y' || line[0] == 'Y');
	fclose(tty);
	if (!ok) {
		fprintf(stderr, "approvald: not approved\n");
		return EXIT_REFUSED;
	}
	return 0;
}

/* show, approve, reject, withdraw, revoke: one operation id, the verb sent as it is named. */
static int run_id_verb(struct args *a)
{
	const char *name = a->verb;
	int rc;

	if (!strcmp(name, "approve") && !a->yes && (rc = confirm_approval(a->id)) != 0)
		return rc;
	_cleanup_json_ json_t *res = NULL;
	json_t *args = json_pack("{s:I}", "id", (json_int_t)a->id);
	if (a->reason)
		json_object_set_new(args, "reason", json_string(a->reason));
	if ((rc = cli_call(name, args, &res, CALL_TIMEOUT_MS)) != 0)
		return rc;
	const json_t *op = json_object_get(res, "operation");
	if (a->json) {
		cli_print_json(op, JSON_INDENT(2));
	} else if (!strcmp(name, "show")) {
		if (cli_print_op(stdout, op) < 0)
			return EXIT_REFUSED;
	} else {
		_cleanup_json_ json_t *e = cli_shown(op);
		printf("operation %" PRIu64 " is %s%s%s%s\n", a->id, cli_str(e, "state"),
		       *cli_str(e, "needs") ? " (" : "", cli_str(e, "needs"),
		       *cli_str(e, "needs") ? ")" : "");
	}
	return 0;
}

static int run_status(struct args *a)
{
	_cleanup_json_ json_t *raw = NULL;
	int rc = cli_call("status", NULL, &raw, CALL_TIMEOUT_MS);
	if (rc)
		return rc;
	if (a->json) {
		cli_print_json(raw, JSON_INDENT(2));
		return 0;
	}
	_cleanup_json_ json_t *res = cli_shown(raw);
	if (!res)
		return EXIT_REFUSED;
	const json_t *pol = json_object_get(res, "policy");
	printf("pending:          %lld (%lld waiting for you)\n",
	       (long long)cli_num(res, "pending"), (long long)cli_num(res, "pending_for_you"));
	printf("approved:         %lld\n", (long long)cli_num(res, "approved"));
	printf("policy:           %lld rules in %lld files, default %s, sha256 %.16s…\n",
	       (long long)cli_num(pol, "rules"), (long long)cli_num(pol, "files"),
	       cli_str(pol, "default"), cli_str(pol, "digest"));
	const json_t *ks;
	size_t i;
	json_array_foreach(json_object_get(res, "key_sets"), i, ks)
	{
		char when[40] = "never";
		if (cli_num(ks, "fetched"))
			cli_fmt_time(cli_num(ks, "fetched"), when, sizeof(when));
		printf("key set:          %s: %lld keys, fetched %s%s%s%s\n", cli_str(ks, "url"),
		       (long long)cli_num(ks, "keys"), when,
		       json_is_true(json_object_get(ks, "fetching")) ? ", fetching now" : "",
		       *cli_str(ks, "error") ? "; last try: " : "", cli_str(ks, "error"));
	}
	const json_t *nf = json_object_get(res, "notifications"), *v;
	const char *name;
	if (nf) {
		printf("notifications:    %lld waiting (oldest %llds), %lld being delivered, %lld "
		       "dropped (outbox full)\n",
		       (long long)cli_num(nf, "outbox"), (long long)cli_num(nf, "oldest_age"),
		       (long long)cli_num(nf, "in_flight"), (long long)cli_num(nf, "dropped"));
		json_object_foreach((json_t *)json_object_get(nf, "dead"), name, v)
		    printf("notifier %-8s  %lld dead deliveries\n", name,
		           (long long)json_integer_value(v));
	}
	return 0;
}

/* ---- audit ---------------------------------------------------------------- */

static int run_audit(struct args *a)
{
	struct p11g_cli_audit c = {.json = a->json,
	                           .verify = a->verify,
	                           .full = a->full,
	                           .checkpoints = a->checkpoints,
	                           .export_pubkey = a->export_pubkey,
	                           .pubkey = a->pubkey,
	                           .dir = a->dir,
	                           .config = a->config,
	                           .since = a->since};
	return p11g_cli_audit(&c);
}

static int run_serve(struct args *a)
{
	return p11g_local_serve(a->config, a->dir, cli_socket_opt, a->policy_dir);
}

#define HELP_NOTIFY                                                                                \
	"Usage: approvald notify test NAME [--socket PATH]\nPuts a test event in the outbox for "  \
	"the "                                                                                     \
	"policy's notifier NAME\n(root and approvald's user); approvald status shows how it "      \
	"went.\n"

/* "notify test NAME [--socket PATH]" */
static int run_notify(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(HELP_NOTIFY, stdout);
		return 0;
	}
	/* notify test NAME, --socket PATH anywhere after notify */
	const char *pos[2] = {NULL, NULL};
	int npos = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--socket") && i + 1 < argc)
			cli_socket_opt = argv[++i];
		else if (!strncmp(argv[i], "--socket=", 9))
			cli_socket_opt = argv[i] + 9;
		else if (npos < 2 && argv[i][0] != '-')
			pos[npos++] = argv[i];
		else
			return cli_usage_error("notify", "unexpected argument '%s'", argv[i]);
	}
	if (npos != 2)
		return cli_usage_error("notify", "expected: notify test NAME [--socket PATH]");
	if (strcmp(pos[0], "test"))
		return cli_usage_error("notify", "unknown subverb '%s' (test)", pos[0]);
	_cleanup_json_ json_t *res = NULL;
	int rc =
	    cli_call("notify_test", json_pack("{s:s}", "notifier", pos[1]), &res, CALL_TIMEOUT_MS);
	if (rc)
		return rc;
	printf("a test event for %s is in the outbox\n", pos[1]);
	return 0;
}

#define HELP_POLICY                                                                                \
	"Usage: approvald policy check [DIR|FILE]\nValidates policy files without a daemon; "      \
	"errors are FILE:LINE:COLUMN: message.\n"

/* "policy check [DIR|FILE]": a verb and its subverb, read without getopt. */
static int run_policy(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "check")) {
		if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
			fputs("Usage: approvald policy check [DIR|FILE]\n", stdout);
			return 0;
		}
		return cli_usage_error("policy", "the policy verb is 'policy check [DIR|FILE]'");
	}
	if (argc > 3)
		return cli_usage_error("policy", "give one directory or file");
	if (argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
		fputs(HELP_POLICY, stdout);
		return 0;
	}
	return p11g_local_policy_check(argc == 3 ? argv[2] : P11G_DEFAULT_POLICY_DIR);
}

/* ---- the verb table ------------------------------------------------------- */

#define HELP_REQUEST                                                                               \
	"Usage: approvald request --key URI [--uses N] [--key URI [--uses N]]...\n"                \
	"                         [--valid DURATION] [--description TEXT] [--context TEXT]\n"      \
	"                         [--name TEXT] [--meta KEY=VALUE]...\n"                           \
	"                         [--id-token FILE|- | --id-token-env NAME |\n"                    \
	"                          --id-token-github AUDIENCE]  (or $APPROVALD_ID_TOKEN_FILE)\n"   \
	"                         [--digest sha256:HEX [--payload-name NAME]]...\n"                \
	"                         [--for PRINCIPAL] [--wait[=SECONDS]] [--json]\n"                 \
	"Orders uses of keys.  --uses sets the count of the --key before it (default 1);\n"        \
	"--payload-name names the --digest before it; --name is a short title for lists.\n"        \
	"--valid defaults to 1h (shortened to the rule's max_validity; a longer --valid is\n"      \
	"refused).  Prints the new operation id alone;\n"                                          \
	"with --wait, then waits for the decision (exit 0 approved, 1 otherwise).\n"

#define HELP_LIST                                                                                  \
	"Usage: approvald list [--all] [--state STATE] [--json]\n"                                 \
	"Without --all: the operations waiting for your decision.  With --all: every\n"            \
	"operation you may see.  STATE: pending, approved, exhausted, expired, revoked,\n"         \
	"rejected.\n"

#define HELP_AUDIT                                                                                 \
	"Usage: approvald audit [--json] [--since SEQ] [--checkpoints] [--state-dir DIR]\n"        \
	"       approvald audit --verify [--full] [--pubkey FILE] [--state-dir DIR]\n"             \
	"       approvald audit --export-pubkey [--config FILE]\n"                                 \
	"Lists the audit log (--json: one record per line; --checkpoints: the signed\n"            \
	"checkpoints only) or, with --verify, checks its hash chain and every operation\n"         \
	"against the records of its changes.  The daemon walks the records added since its\n"      \
	"last verify (--full: all of them) in a process of its own.  --pubkey FILE (the\n"         \
	"audit key's public half, PEM) walks all and checks every checkpoint's signature and\n"    \
	"that the chain passes through it, and counts the records no checkpoint covers yet.\n"     \
	"--export-pubkey prints the public half of the configuration's audit_key_file or\n"        \
	"audit_key (a key on a token, read by approvald-audit-signer).\n"                          \
	"--state-dir reads a store directory directly instead of asking the daemon (for\n"         \
	"copies and backups; always all records).\n"

#define HELP_SERVE                                                                                 \
	"Usage: approvald serve [--config FILE] [--state-dir DIR] [--socket PATH]\n"               \
	"                       [--policy-dir DIR]\n"                                              \
	"Runs the daemon in the foreground until SIGTERM; SIGHUP reloads the policy.\n"            \
	"Defaults: state " P11G_DEFAULT_STATE_DIR ", socket " P11G_DEFAULT_SOCKET ",\n"            \
	"policy " P11G_DEFAULT_POLICY_DIR ".  The config file holds key = value lines:\n"          \
	"state_dir, socket, policy_dir, socket_mode, durability (full|process),\n"                 \
	"max_connections, max_connections_per_uid, max_pending_per_user,\n"                        \
	"max_requests_per_minute, max_request_bytes_per_minute (per uid; root aside),\n"           \
	"idle_timeout, frame_timeout, default_validity, max_map_size, jwks_refetch (an\n"          \
	"issuer's jwks_url fetched again at most this often; 10s).  Signed audit\n"                \
	"checkpoints: audit_key_file (a private key file) or audit_key (pkcs11:URI of a\n"         \
	"private key on a token; needs pkcs11_module and pin_file, with or without\n"              \
	"pkcs11_socket), audit_checkpoint_records, audit_checkpoint_seconds.\n"                    \
	"Serving PKCS#11 (the isolated deployment: approvald alone holds the token and\n"          \
	"its PIN; clients load p11-kit-client.so with P11_KIT_SERVER_ADDRESS=unix:path=...):\n"    \
	"pkcs11_socket (enables it), pkcs11_module, pin_file (mode 0600, approvald's user),\n"     \
	"pkcs11_token (a label; default every initialised token), pkcs11_socket_mode,\n"           \
	"pkcs11_wait (seconds), pkcs11_message_max (bytes), pkcs11_env (NAME=VALUE for the\n"      \
	"module, repeatable), pkcs11_object_admins (principals user:NAME group:NAME uid:N,\n"      \
	"blank- or comma-separated, repeatable: who may create, change and destroy token\n"        \
	"objects through the PKCS#11 socket; nobody by default), pkcs11_user (the user\n"          \
	"each client's process runs as; default approvald's own), pkcs11_seccomp\n"                \
	"(kill|log|off, default kill: that process's system-call allow-list).\n"                   \
	"The approvals page (approvald-web): web_socket (a Unix socket speaking HTTP; off\n"       \
	"when absent), web_proxy_user (the reverse proxy's account, trusted to name the\n"         \
	"user in web_user_header, default X-Remote-User), web_url (links in notifications).\n"     \
	"Notifications: notify_retry_for (24h), notify_outbox_max (10000).\n"

/* The id verbs know each other's options: one given to a verb it does not fit is answered
 * with a sentence ("--yes does not go with show"), not as an unknown option. */
#define ID_OPTS (O(REASON) | O(YES) | O(JSON))

static const struct verb {
	const char *name, *summary, *help;
	unsigned opts;    /* besides --socket and --help, which every verb takes */
	unsigned refused; /* of opts: known, but not this verb's */
	bool id;          /* takes exactly one operation ID */
	bool reason_required;
	int (*run)(struct args *a);
	int (*run_argv)(int argc, char **argv); /* instead of run: no option parsing */
} verbs[] = {
    {"serve", "run the daemon", HELP_SERVE, O(CONFIG) | O(STATE_DIR) | O(POLICY_DIR),
     .run = run_serve},
    {"request", "order uses of keys", HELP_REQUEST,
     O(KEY) | O(USES) | O(VALID) | O(DESCRIPTION) | O(CONTEXT) | O(DIGEST) | O(PAYLOAD_NAME) |
         O(NAME) | O(META) | O(ID_TOKEN) | O(ID_TOKEN_ENV) | O(ID_TOKEN_GITHUB) | O(FOR) | O(WAIT) |
         O(JSON),
     .run = run_request},
    {"list", "operations waiting for you (--all: every one you may see)", HELP_LIST,
     O(ALL) | O(STATE) | O(JSON), .run = run_list},
    {"show", "one operation in full", "Usage: approvald show ID [--json]\n", ID_OPTS,
     O(REASON) | O(YES), true, .run = run_id_verb},
    {"approve", "approve an operation",
     "Usage: approvald approve ID [--yes]\nShows the operation and asks for confirmation "
     "unless --yes.\n",
     ID_OPTS, O(REASON) | O(JSON), true, .run = run_id_verb},
    {"reject", "reject an operation", "Usage: approvald reject ID --reason TEXT\n", ID_OPTS,
     O(YES) | O(JSON), true, true, run_id_verb},
    {"withdraw", "take back your approval before any use",
     "Usage: approvald withdraw ID\nTakes back your approval (before any use).\n", ID_OPTS, ID_OPTS,
     true, .run = run_id_verb},
    {"revoke", "end an operation",
     "Usage: approvald revoke ID [--reason TEXT]\nEnds an operation (its orderer or an admin "
     "of its keys).\n",
     ID_OPTS, O(YES) | O(JSON), true, .run = run_id_verb},
    {"status", "counts and policy", "Usage: approvald status [--json]\n", O(JSON),
     .run = run_status},
    {"audit", "the audit log; --verify checks its hash chain", HELP_AUDIT,
     O(JSON) | O(VERIFY) | O(FULL) | O(PUBKEY) | O(CHECKPOINTS) | O(EXPORT_PUBKEY) | O(SINCE) |
         O(STATE_DIR) | O(CONFIG),
     .run = run_audit},
    {"policy", "policy check [DIR|FILE]: validate policy files", HELP_POLICY,
     .run_argv = run_policy},
    {"notify", "notify test NAME: send a test event to a notifier", HELP_NOTIFY,
     .run_argv = run_notify},
};

/* 0 with a filled; -1 when --help was answered; or a usage error's exit status. */
static int parse_args(const struct verb *v, int argc, char **argv, struct args *a)
{
	unsigned takes = v->opts | O(SOCKET) | O(HELP);
	struct option table[O_COUNT + 1];
	size_t n = 0;
	int c, r;

	for (int i = 0; i < O_COUNT; i++)
		if (takes & (1u << i))
			table[n++] =
			    (struct option){options[i].name, options[i].has_arg, NULL, i + 1};
	table[n] = (struct option){0};
	while ((c = getopt_long(argc, argv, "", table, NULL)) != -1) {
		if (c < 1 || c > O_COUNT)
			return bad_option(v->name, argv);
		const struct opt *o = &options[c - 1];
		if (v->refused & (1u << (c - 1)))
			return cli_usage_error(v->name, "--%s does not go with %s", o->name,
			                       v->name);
		if (c - 1 == O_HELP) {
			fputs(v->help, stdout);
			return -1;
		}
		if (o->set && (r = o->set(a, optarg)) != 0)
			return r;
		if (o->flag)
			*(bool *)((char *)a + o->flag) = true;
		if (o->text)
			*(const char **)((char *)a + o->text) = optarg;
		if (o->member)
			json_object_set_new(a->req, o->member, json_string(optarg));
	}
	if (!v->id) {
		if (optind < argc)
			return cli_usage_error(v->name, "unexpected argument '%s'", argv[optind]);
		return 0;
	}
	if (optind + 1 != argc)
		return cli_usage_error(v->name, "give exactly one operation ID");
	if (!parse_id(argv[optind], &a->id))
		return cli_usage_error(v->name, "'%s' is not an operation ID (a positive number)",
		                       argv[optind]);
	if (v->reason_required && (!a->reason || !*a->reason))
		return cli_usage_error(v->name, "%s needs --reason TEXT", v->name);
	return 0;
}

static int run_verb(const struct verb *v, int argc, char **argv)
{
	_cleanup_json_ json_t *req = json_object(), *keys = json_array(), *digests = json_array();
	struct args a = {
	    .verb = v->name, .wait_s = 3600, .req = req, .keys = keys, .digests = digests};

	if (v->run_argv)
		return v->run_argv(argc, argv);
	int r = parse_args(v, argc, argv, &a);
	if (r)
		return r < 0 ? 0 : r;
	return v->run(&a);
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: approvald VERB [OPTIONS]\n\nHuman approval for HSM signing keys.\n\n");
	for (size_t i = 0; i < P11G_ARRAY_SIZE(verbs); i++)
		fprintf(f, "  %-9s %s\n", verbs[i].name, verbs[i].summary);
	fprintf(f,
	        "\nEvery client verb takes --socket PATH (or APPROVALD_SOCKET; default %s).\n"
	        "Run 'approvald VERB --help' for a verb's options.  Exit status: 0 done,\n"
	        "1 refused, 2 usage error, 3 daemon not reachable.\n",
	        P11G_DEFAULT_SOCKET);
}

int p11g_cli_main(int argc, char **argv)
{
	p11g_local_init(argc, argv);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("approvald %s\n", P11GATE_VERSION);
		return 0;
	}
	opterr = 0;
	for (size_t i = 0; i < P11G_ARRAY_SIZE(verbs); i++)
		if (!strcmp(argv[1], verbs[i].name))
			return run_verb(&verbs[i], argc - 1, argv + 1);
	fprintf(stderr, "approvald: unknown verb '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
