/* What policy.c, policy_issuers.c and policy_notifiers.c share: the parsing context and its error
 * helpers. */
#ifndef P11GATE_POLICY_INTERNAL_H
#define P11GATE_POLICY_INTERNAL_H

#include <openssl/evp.h>

#include "policy/pjson.h"
#include "policy/policy.h"

#define RULE_NAME_MAX 64

struct rule_ctx {
	const char *file;
	p11g_err *err;
	bool snapshot; /* accept "defined_at", written by p11g_rule_to_json */
};

/* Where a rule's "notify" named a notifier: checked once every file is read. */
struct pol_notify_ref {
	size_t rule;  /* index in pol->rules */
	size_t index; /* in that rule's notify */
	unsigned line, column;
};

struct p11g_policy_builder {
	struct p11g_policy *pol;
	size_t cap;
	bool default_seen;
	char *default_file;
	EVP_MD_CTX *md;
	struct pol_notify_ref *notify_refs;
	size_t n_notify_refs;
};

/* A bad policy text: bad_request "file:line:column: message" (kvconf.h's form); -1. */
__attribute__((format(printf, 5, 6))) int pol_fail_at(p11g_err *e, const char *file, unsigned line,
                                                      unsigned column, const char *fmt, ...);
/* The same at a value of c's file. */
int pol_fail_at_value(struct rule_ctx *c, const struct pjson_value *v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int pol_fail_oom(struct rule_ctx *c);
int pol_fail_unknown(struct rule_ctx *c, const struct pjson_member *m, const char *where);
int pol_expect_type(struct rule_ctx *c, const struct pjson_member *m, enum pjson_type t);
/* An array member whose entries are all strings; non_empty refuses []. */
int pol_expect_strings(struct rule_ctx *c, const struct pjson_member *m, bool non_empty);
/* 1 to 64 of A-Z a-z 0-9 . _ - */
bool pol_valid_rule_name(const char *s, size_t len);

/* A rule object (of a file, or of a snapshot when c->snapshot) into r. */
int pol_parse_rule(struct rule_ctx *c, const struct pjson_value *v, struct p11g_rule *r);

/* policy_issuers.c: a rule's "claims" and "actor_claim" name, and the top-level "issuers". */
int pol_parse_claims(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r);
int pol_claim_name_member(struct rule_ctx *c, const struct pjson_member *m, char **ret);
int pol_loader_add_issuers(struct p11g_policy_builder *ld, struct rule_ctx *c,
                           const struct pjson_member *m);
void pol_issuer_clear(struct p11g_issuer *is);

/* policy_notifiers.c: the top-level "notifiers" and a rule's "notify". */
int pol_loader_add_notifiers(struct p11g_policy_builder *ld, struct rule_ctx *c,
                             const struct pjson_member *m);
void pol_notifier_clear(struct p11g_notifier *n);
int pol_parse_notify(struct rule_ctx *c, const struct pjson_member *m, struct p11g_rule *r);
/* Records where the "notify" of rule rv (ld->pol->rules[rule], just added) names notifiers. */
int pol_note_notify(struct p11g_policy_builder *ld, struct rule_ctx *c,
                    const struct pjson_value *rv, size_t rule);
/* At finish: every name a rule's "notify" lists is one of the policy's notifiers. */
int pol_check_notify(struct p11g_policy_builder *ld, p11g_err *err);

#endif
