/* The local verbs in approvald-local: the daemon, policy check, the offline audit (local.h). */
#include "approvald/audit_state.h"
#include "approvald/cli.h"
#include "approvald/daemon.h"
#include "approvald/policy_load.h"
#include "approvald/textsafe.h"

/* A message that may quote a file's text (a config line, a policy's strings): escaped, so a
 * file under review cannot drive the terminal of whoever checks it. */
static void print_message(const char *prefix, const char *msg)
{
	_cleanup_free_ char *e = msg ? p11g_text_escaped(msg, strlen(msg)) : NULL;
	fprintf(stderr, "%s%s\n", prefix, e ? e : "out of memory");
}

void p11g_local_init(int argc, char **argv)
{
	(void)argc;
	(void)argv;
}

int p11g_local_serve(const char *config, const char *state_dir, const char *socket,
                     const char *policy_dir)
{
	struct p11g_daemon_config cfg;
	p11g_err err = {0};

	p11g_daemon_config_init(&cfg);
	if (config && p11g_daemon_config_load(config, &cfg, &err) < 0) {
		print_message("approvald: ", err.msg);
		p11g_daemon_config_clear(&cfg);
		return EXIT_USAGE;
	}
	/* Command-line options win over the file. */
	if ((state_dir && (free(cfg.state_dir), !(cfg.state_dir = strdup(state_dir)))) ||
	    (socket && (free(cfg.socket_path), !(cfg.socket_path = strdup(socket)))) ||
	    (policy_dir && (free(cfg.policy_dir), !(cfg.policy_dir = strdup(policy_dir))))) {
		p11g_daemon_config_clear(&cfg);
		return EXIT_REFUSED;
	}
	int rc = p11g_daemon_run(&cfg, &p11g_isolated_host);
	p11g_daemon_config_clear(&cfg);
	return rc;
}

int p11g_local_policy_check(const char *path)
{
	struct p11g_policy *p = NULL;
	p11g_err err = {0};
	if (p11g_policy_load(path, &p, &err) < 0) {
		print_message("", err.msg);
		return EXIT_REFUSED;
	}
	printf("%s: OK: %zu rules in %zu files, default %s\n", path, p->n_rules, p->n_files,
	       p->default_allow ? "allow" : "deny");
	p11g_policy_free(p);
	return 0;
}

struct audit_ctx {
	bool verify;
	uint64_t since, count;
	p11g_audit_visit_fn visit;
	void *arg;
};

static int audit_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct audit_ctx *c = arg;
	if (c->verify) {
		json_t *report = NULL;
		if (p11g_audit_check(t, NULL, &report, err) < 0)
			return -1;
		c->count = (uint64_t)json_integer_value(json_object_get(report, "records"));
		json_decref(report);
		return 0;
	}
	return p11g_txn_audit_foreach(t, c->since, c->visit, c->arg, err) < 0 ? -1 : 0;
}

int p11g_local_audit(const char *dir, bool verify, uint64_t since, p11g_audit_visit_fn visit,
                     void *arg, uint64_t *ret_count, p11g_err *err)
{
	struct p11g_store_options so = {.read_only = true};
	struct audit_ctx c = {.verify = verify, .since = since, .visit = visit, .arg = arg};
	p11g_store *s = NULL;

	if (p11g_store_open(dir, &so, &s, err) < 0)
		return -1;
	int r = p11g_store_read(s, audit_body, &c, err);
	p11g_store_close(s);
	if (ret_count)
		*ret_count = c.count;
	return r ? -1 : 0;
}
