/* The local verbs in approvald-local: the daemon, policy check, the offline audit (local.h). */
#include "approvald/audit_state.h"
#include "approvald/checkpoint.h"
#include "p11gate/wire.h"
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
	uint64_t since;
	EVP_PKEY *pubkey;
	json_t *report;
	p11g_audit_visit_fn visit;
	void *arg;
};

static int audit_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct audit_ctx *c = arg;
	return p11g_txn_audit_foreach(t, c->since, c->visit, c->arg, err) < 0 ? -1 : 0;
}

static EVP_PKEY *pubkey_read(const char *path, p11g_err *err)
{
	char buf[3 * P11G_CHECKPOINT_PUBKEY_MAX];
	FILE *f = fopen(path, "re");
	if (!f) {
		p11g_err_set(err, P11G_E_BAD_REQUEST, "--pubkey %s: %m", path);
		return NULL;
	}
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	EVP_PKEY *k = p11g_checkpoint_pubkey_parse(buf, n, err);
	if (!k)
		p11g_err_set(err, P11G_E_BAD_REQUEST, "--pubkey %s: not a public key in PEM", path);
	return k;
}

int p11g_local_audit(const char *dir, bool verify, const char *pubkey_file, uint64_t since,
                     p11g_audit_visit_fn visit, void *arg, json_t **ret_report, p11g_err *err)
{
	struct p11g_store_options so = {.read_only = true};
	struct audit_ctx c = {.verify = verify, .since = since, .visit = visit, .arg = arg};
	p11g_store *s = NULL;

	if (pubkey_file && !(c.pubkey = pubkey_read(pubkey_file, err)))
		return -1;
	int r = p11g_store_open(dir, &so, &s, err);
	if (r == 0) {
		r = verify ? p11g_audit_check(s, NULL, NULL, c.pubkey, &c.report, err)
		           : p11g_store_read(s, audit_body, &c, err);
		p11g_store_close(s);
	}
	EVP_PKEY_free(c.pubkey);
	if (ret_report)
		*ret_report = c.report;
	else
		json_decref(c.report);
	return r ? -1 : 0;
}

/* audit_key = pkcs11:: the public key approvald-audit-signer reads from the token. */
static EVP_PKEY *token_pubkey(struct p11g_daemon_config *cfg, p11g_err *err)
{
	unsigned char *der = NULL;
	size_t len = 0;
	EVP_PKEY *key = NULL;

	if (p11g_isolated_host.audit_pubkey(&cfg->host, cfg->audit_key, &der, &len, err) == 0 &&
	    !(key = p11g_checkpoint_pubkey_der(der, len)))
		p11g_err_set(err, P11G_E_INTERNAL,
		             "audit_key %s: the token's public key is not one "
		             "approvald can verify with",
		             cfg->audit_key);
	free(der);
	p11g_isolated_host.end();
	return key;
}

int p11g_local_export_pubkey(const char *config)
{
	struct p11g_daemon_config cfg;
	p11g_err err = {0};
	int rc = 1;

	p11g_daemon_config_init(&cfg);
	if (config && p11g_daemon_config_load(config, &cfg, &err) < 0) {
		print_message("", err.msg);
		goto out;
	}
	if (!cfg.audit_key_file && !cfg.audit_key) {
		fprintf(stderr, "approvald: no audit_key_file or audit_key in %s\n",
		        config ? config : "the configuration (use --config FILE)");
		goto out;
	}
	EVP_PKEY *key = cfg.audit_key ? token_pubkey(&cfg, &err)
	                              : p11g_checkpoint_key_load(cfg.audit_key_file, &err);
	char *pem = key ? p11g_checkpoint_pubkey_pem(key) : NULL;
	char id[80];
	if (!key) {
		print_message("", err.msg);
	} else if (pem && p11g_checkpoint_key_id(key, id) == 0) {
		fputs(pem, stdout);
		fprintf(stderr, "approvald: audit key %s\n", id);
		rc = 0;
	}
	free(pem);
	EVP_PKEY_free(key);
out:
	p11g_daemon_config_clear(&cfg);
	return rc;
}
