/* The policy language: rules, principals, key matching and quorum evaluation, over texts and
 * identities it is given (approvald reads the files and asks the name service). */
#ifndef P11GATE_POLICY_H
#define P11GATE_POLICY_H

#include <jansson.h>
#include <sys/types.h>

#include "p11gate/common.h"
#include "p11gate/keyid.h"

/* ---- identities and principals ---------------------------------------- */

/* The most groups an identity holds (resolved or read back from JSON). */
#define P11G_IDENT_GROUPS_MAX 65536

/*
 * Who someone is at one moment: uid from the kernel, user name and group
 * names from the user and group databases at that moment (approvald's
 * p11g_ident_resolve, approvald/names.h, fills one).
 */
struct p11g_ident {
	uid_t uid;
	gid_t gid;
	pid_t pid;
	char user[64]; /* "" when the uid has no passwd entry */
	char **groups; /* names of every group the user is in (primary included) */
	size_t n_groups;
	/* how the caller came when not on approvald's own sockets ("web, proxy uid 33"): audit
	 * records name it beside the actor; "" otherwise.  Not part of an operation's terms. */
	char via[48];
};

void p11g_ident_clear(struct p11g_ident *id);
/* {uid, user, groups:[...]} — what an approval records; and back. */
json_t *p11g_ident_to_json(const struct p11g_ident *id);
int p11g_ident_from_json(const json_t *obj, struct p11g_ident *ret);

enum p11g_principal_kind { P11G_PRINCIPAL_USER, P11G_PRINCIPAL_GROUP, P11G_PRINCIPAL_UID };

struct p11g_principal {
	enum p11g_principal_kind kind;
	char *name; /* user or group name; for UID the decimal text */
	uid_t uid;  /* for UID */
};

struct p11g_principals {
	struct p11g_principal *v;
	size_t n;
};

/* "user:NAME", "group:NAME", "uid:N".  Errors: bad_request. */
int p11g_principal_parse(const char *s, struct p11g_principal *ret, p11g_err *err);
void p11g_principal_clear(struct p11g_principal *p);
/* Canonical text, malloc'd. */
char *p11g_principal_to_string(const struct p11g_principal *p);
bool p11g_principal_matches(const struct p11g_principal *p, const struct p11g_ident *id);
bool p11g_principals_match(const struct p11g_principals *ps, const struct p11g_ident *id);

/* ---- rules ------------------------------------------------------------- */

struct p11g_clause {
	struct p11g_principals from;
	unsigned count;
};

/* What a rule asks of a request's pipeline ID token (issue 19): "claims": {"issuer": NAME,
 * "match": {CLAIM: PATTERN, ...}}, and "actor_claim" beside it. */
#define P11G_CLAIMS_MATCH_MAX 32
struct p11g_rule_claims {
	char *issuer;             /* the name of one of the policy's issuers */
	char **names, **patterns; /* "match", in document order; '*' in a pattern: any run */
	size_t n;
	char *actor_claim;     /* NULL: none; else an approver may not be the user it names */
	unsigned line, column; /* of "issuer": where a policy naming no such issuer fails */
};

/* A trusted issuer of pipeline ID tokens: the policy's top-level "issuers". */
#define P11G_ISSUER_SHOW_MAX 32
struct p11g_issuer {
	char *name;                 /* as rules name it: 1 to 64 of A-Z a-z 0-9 . _ - */
	char *issuer;               /* exact "iss", https:// */
	char *audience;             /* in "aud" */
	char *jwks_file, *jwks_url; /* one of them: an absolute path, or https:// */
	char *jwks_ca_file; /* NULL: the system's CA certificates verify jwks_url's server */
	char **algorithms;  /* default RS256, ES256; never none or HMAC */
	size_t n_algorithms;
	char **show; /* claim names approvers see */
	size_t n_show;
	char *file;
	unsigned line, column;
};

/* Notifications (issue 21): the events a notifier may hear, as bits of p11g_notifier.events. */
enum p11g_notify_event {
	P11G_NOTIFY_CREATED = 1u << 0,   /* approvers must act */
	P11G_NOTIFY_APPROVAL = 1u << 1,  /* one approved; more are needed */
	P11G_NOTIFY_APPROVED = 1u << 2,  /* the quorum is met */
	P11G_NOTIFY_REJECTED = 1u << 3,  /* with the reason: the requester is told */
	P11G_NOTIFY_WITHDRAWN = 1u << 4, /* an approval withdrawn */
	P11G_NOTIFY_REVOKED = 1u << 5,
	P11G_NOTIFY_EXPIRED = 1u << 6,
	P11G_NOTIFY_EXPIRING = 1u << 7,    /* pending, its window ends within 15 minutes */
	P11G_NOTIFY_EXHAUSTED = 1u << 8,   /* every use spent */
	P11G_NOTIFY_USE_REFUSED = 1u << 9, /* refused uses of a key (a minute's burst, at most) */
	P11G_NOTIFY_TEST = 1u << 10,       /* approvald notify test NAME: every notifier hears it */
};
#define P11G_NOTIFY_EVENTS_MAX 11
/* "created" for P11G_NOTIFY_CREATED, ...; NULL for a value that is not one bit of them. */
const char *p11g_notify_event_name(unsigned event);
/* The bit of a name ("created", ...); 0 when none.  "test" gives P11G_NOTIFY_TEST, which a
 * policy's "events" refuses (every notifier hears a test). */
unsigned p11g_notify_event_parse(const char *name);

enum p11g_notify_format { P11G_NOTIFY_JSON, P11G_NOTIFY_SLACK, P11G_NOTIFY_TEAMS };

/* A notifier: the policy's top-level "notifiers" (issue 21). */
struct p11g_notifier {
	char *name; /* as rules name it: 1 to 64 of A-Z a-z 0-9 . _ - */
	/* one of url and command: */
	char *url;      /* https://HOST..., or http:// to 127.0.0.1, [::1] or localhost only */
	char **command; /* argv, NULL-terminated: an absolute program path, then its arguments */
	size_t n_command;
	enum p11g_notify_format format; /* "format" (url only): json (default), slack, teams */
	/* absolute path of the HMAC key (approvald checks it is 0600); or NULL */
	char *secret_file;
	char *ca_file;    /* absolute path: the only CA trusted for url's server; NULL: system's */
	unsigned events;  /* "events": a non-empty list of p11g_notify_event names */
	unsigned timeout; /* "timeout": seconds for one delivery (1 to 60; default 10) */
	char *file;
	unsigned line, column;
};

struct p11g_rule {
	char *name;
	char **keys; /* URI strings as written */
	size_t n_keys;
	P11KitUri **key_uris; /* parsed, same order */
	struct p11g_principals orderers, auto_approve, admins;
	/* "approvers"+"approvals" is normalised into one clause; "quorum" gives
	 * several.  No clause (or all counts 0) means approved on creation. */
	struct p11g_clause *quorum;
	size_t n_quorum;
	uint64_t max_uses;             /* 0: no ceiling */
	uint64_t max_validity;         /* seconds; 0: no ceiling */
	CK_MECHANISM_TYPE *mechanisms; /* n 0: any non-raw mechanism */
	size_t n_mechanisms;
	bool allow_raw;
	bool bind_digest;
	char **registries;
	size_t n_registries;
	struct p11g_rule_claims *claims; /* NULL: requests need no ID token */
	char **notify; /* "notify": names of the policy's notifiers (checked at finish), NULL-
	                * terminated; never in the rule's snapshot: events go to the notifiers of
	                * the policy in force */
	size_t n_notify;
	/* where it was defined, for messages */
	char *file;
	unsigned line, column;
};

struct p11g_policy {
	bool default_allow; /* "default": "allow" */
	struct p11g_rule *rules;
	size_t n_rules;
	size_t n_files;
	struct p11g_issuer *issuers;
	size_t n_issuers;
	struct p11g_notifier *notifiers;
	size_t n_notifiers;
	/* The issuers' key sets, by issuer (approvald's loader fills them: NULL, or one NULL
	 * set, is an issuer with no keys yet); freed with jwks_free. */
	struct p11g_jwks **jwks;
	void (*jwks_free)(struct p11g_jwks *);
	char digest[65]; /* sha256 hex over the file names and contents, in load order */
};

/* The largest policy text (one file) the parser takes. */
#define P11G_POLICY_TEXT_MAX (1024u * 1024u)

/*
 * A policy from one or more texts (the files of a policy directory, in name
 * order: approvald's p11g_policy_load), checked as one.  name is the text's
 * file for messages and the digest (which takes its base name).  On an error
 * add returns -1 with err (bad_request "name:line:column: message", or
 * internal "out of memory"), and the builder is good only for
 * p11g_policy_builder_free.  Errors include: malformed JSON, duplicate keys,
 * unknown keys, wrong types, missing "name"/"keys", bad principals, bad URIs,
 * unknown mechanisms, bad durations, "approvers" without "approvals" (or with
 * "quorum"), counts larger than the principals could ever satisfy is NOT an
 * error (groups change), duplicate rule names, two rules that could match
 * the same key, conflicting "default" values across texts.  finish consumes
 * the builder: 0 with *ret, or -1 with err and *ret untouched.
 * No texts give an empty deny-all policy.
 */
struct p11g_policy_builder;
/* NULL when out of memory. */
struct p11g_policy_builder *p11g_policy_builder_new(void);
int p11g_policy_builder_add(struct p11g_policy_builder *b, const char *name, const char *text,
                            size_t len, p11g_err *err);
int p11g_policy_builder_finish(struct p11g_policy_builder *b, struct p11g_policy **ret,
                               p11g_err *err);
void p11g_policy_builder_free(struct p11g_policy_builder *b);

/* One text: new, add, finish. */
int p11g_policy_parse(const char *name, const char *text, size_t len, struct p11g_policy **ret,
                      p11g_err *err);
void p11g_policy_free(struct p11g_policy *p);

/* The notifier of that name, or NULL. */
const struct p11g_notifier *p11g_policy_notifier(const struct p11g_policy *p, const char *name);

/* The issuer of that name, or NULL. */
const struct p11g_issuer *p11g_policy_issuer(const struct p11g_policy *p, const char *name);

/* Whether one of r's key URIs matches k. */
bool p11g_rule_covers(const struct p11g_rule *r, const struct p11g_keyid *k);
/* The rule whose keys match k, or NULL.  A policy never has two rules that
 * could match one key (the parser refuses it), so this is the only one. */
const struct p11g_rule *p11g_policy_match(const struct p11g_policy *p, const struct p11g_keyid *k);
/*
 * The rules that could govern a key the URI pattern u matches: those with a
 * key URI u overlaps (p11g_keyuri_overlap), in policy order.  Fills at most
 * max of them into ret and returns how many there are.  A request for u is
 * judged under a rule only when it is the one: then every key u matches and
 * any rule matches is matched by that rule, as p11g_policy_match finds at use.
 */
size_t p11g_policy_overlapping(const struct p11g_policy *p, P11KitUri *u,
                               const struct p11g_rule **ret, size_t max);
/* The rule by name, or NULL. */
const struct p11g_rule *p11g_policy_rule(const struct p11g_policy *p, const char *name);

/* A rule as JSON (the canonical form an operation snapshots), and back.
 * from_json uses the same strict checks as the file parser. */
json_t *p11g_rule_to_json(const struct p11g_rule *r);
int p11g_rule_from_json(const json_t *obj, struct p11g_rule **ret, p11g_err *err);
void p11g_rule_free(struct p11g_rule *r);

/* ---- decisions ---------------------------------------------------------- */

bool p11g_rule_may_order(const struct p11g_rule *r, const struct p11g_ident *id);
/* In any quorum clause's principals. */
bool p11g_rule_may_approve(const struct p11g_rule *r, const struct p11g_ident *id);
bool p11g_rule_is_admin(const struct p11g_rule *r, const struct p11g_ident *id);
/* Some quorum clause needs at least one approval. */
bool p11g_rule_needs_approval(const struct p11g_rule *r);
/* Approved on creation for this orderer: no clause needs anyone, or the
 * orderer is in auto_approve. */
bool p11g_rule_auto_approves(const struct p11g_rule *r, const struct p11g_ident *orderer);
bool p11g_rule_allows_mechanism(const struct p11g_rule *r, CK_MECHANISM_TYPE mech);

/*
 * Quorum: true when the approvers (as recorded at approval time) satisfy
 * every clause, each person (uid) counted once overall and never the
 * orderer.  Assigns people to clauses by bipartite matching.  If missing is
 * not NULL and the quorum is not met, writes a sentence such as "needs 1 more
 * approval from group:release-approvers".
 */
bool p11g_rule_quorum_met(const struct p11g_rule *r, const struct p11g_ident *approvers,
                          size_t n_approvers, uid_t orderer, char *missing, size_t missing_size);

#endif
