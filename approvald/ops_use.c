/* The use path (the hot path): find the approved operation a signature may spend, spend one
 * use durably, or refuse and say why; implicit one-use operations for rules needing no
 * approvals. */
#include "approvald/audit_state.h"
#include "approvald/authz.h"
#include "approvald/jbuild.h"
#include "approvald/notify.h"
#include "approvald/idtoken.h"
#include "approvald/ops_internal.h"
#include "approvald/refusals.h"

#include <inttypes.h>

#include "p11gate/log.h"
#include "p11gate/mech.h"
#include "p11gate/wire.h"

#define RECENT_ENDED 1024 /* ended operations looked at to explain a refusal */

static bool uri_matches(const char *uri, const struct p11g_keyid *k)
{
	P11KitUri *u = p11_kit_uri_new();
	bool m = u &&
	         p11_kit_uri_parse(uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, u) == P11_KIT_URI_OK &&
	         p11g_keyid_matches(k, u);
	if (u)
		p11_kit_uri_free(u);
	return m;
}

/* Refusal reasons, most telling first: the one a person can act on. */
enum refusal {
	REF_NONE,
	REF_OTHER_RULE, /* its entry for the key was judged under another rule */
	REF_NOT_SIGNER,
	REF_REVOKED,
	REF_REJECTED,
	REF_EXPIRED,
	REF_EXHAUSTED,
	REF_PENDING,
	REF_RAW,
	REF_MECHANISM,
	REF_DIGEST,
	REF_IMAGE, /* a rule with registries, and no payload of one of its images with the digest */
	REF_IDENTITY,  /* the rule now asks for a pipeline the operation does not show */
	REF_CERTIFIED, /* an OpenPGP certification of another key than the one signing */
	REF_DAMAGED,   /* its rule snapshot cannot be read back */
};

struct use_scan {
	struct p11g_ops *o;
	const struct p11g_use_args *a;
	const struct p11g_ident *caller;
	const struct p11g_mech_info *mech;
	const struct p11g_rule *rule; /* the policy's rule for the key, now */
	int64_t now;
	/* best candidate */
	uint64_t best_id;
	int64_t best_expires;
	size_t best_key;
	/* best refusal */
	enum refusal why;
	uint64_t why_id;
	char why_rule[65]; /* for REF_OTHER_RULE: the rule the operation's entry was judged under */
	p11g_err damaged;  /* why, for REF_DAMAGED (op_rule fills it) */
	bool signer_seen;  /* the caller signs for an operation of the key */
};

static void note(struct use_scan *s, enum refusal r, uint64_t id)
{
	if (r > s->why) {
		s->why = r;
		s->why_id = id;
	}
}

/* An operation whose entry for the key was judged under another rule, or
 * under an older version of the key's rule that did not cover the key. */
static void note_other_rule(struct use_scan *s, uint64_t id, const char *rule)
{
	if (s->why < REF_OTHER_RULE) {
		note(s, REF_OTHER_RULE, id);
		snprintf(s->why_rule, sizeof(s->why_rule), "%s", rule ? rule : "");
	}
}

/*
 * The key entry of op this use may spend: its URI names the key and it was
 * judged under rule, the one that governs the key now (the first with uses
 * left, if several).  -1 when none; then *ret_other is the rule of an entry
 * whose URI names the key under another rule, or NULL.
 */
static ssize_t op_key_index(const struct p11g_op *op, const struct p11g_keyid *k, const char *rule,
                            const char **ret_other)
{
	ssize_t found = -1;

	*ret_other = NULL;
	for (size_t i = 0; i < op->n_keys; i++) {
		const struct p11g_op_key *e = &op->keys[i];
		if (!uri_matches(e->uri, k))
			continue;
		if (strcmp(e->rule, rule)) {
			*ret_other = e->rule;
			continue;
		}
		if (e->used < e->uses)
			return (ssize_t)i;
		if (found < 0)
			found = (ssize_t)i;
	}
	return found;
}

/* A rule with registries signs only the payloads approvald read for the
 * operation (its images), of images in a registry the rule names, or a certificate request
 * or OpenPGP certification approvald read (csr_payload.c, pgp_payload.c: its registries limit
 * images, not names bound to the key). */
static bool image_signs(const struct p11g_op *op, const struct p11g_rule *r, const char *digest)
{
	size_t i;
	json_t *img;
	if (r->n_registries == 0)
		return true;
	json_array_foreach(op->images, i, img)
	{
		const char *pd = json_string_value(json_object_get(img, "payload_digest"));
		const char *ref = json_string_value(json_object_get(img, "reference"));
		if (!digest || !pd || strcmp(pd, digest))
			continue;
		if (ref ? ops_registry_allowed(r, ref) : ops_image_binds_identity(img))
			return true;
	}
	return false;
}

/* An OpenPGP user ID certification approvald read (pgp_payload.c) is signed by the key it
 * certifies and no other: approvers were shown that key (fpr: the signing key's SPKI
 * SHA-256, "" when the gate could not compute it, which signs no certification). */
static bool certifies_signer(const struct p11g_op *op, const char *digest, const char *fpr)
{
	size_t i;
	json_t *img;
	json_array_foreach(op->images, i, img)
	{
		const char *pd = json_string_value(json_object_get(img, "payload_digest"));
		const char *kf = json_string_value(json_object_get(img, "key_fingerprint"));
		if (!json_object_get(img, "openpgp_certification") || !digest || !pd ||
		    strcmp(pd, digest))
			continue;
		if (!kf || !fpr || !fpr[0] || strcmp(kf, fpr))
			return false;
	}
	return true;
}

/* A rule with claims (issue 19): the operation was filed with a verified ID token of the
 * rule's issuer whose kept claims match the rule as it stands (a claim the operation did not
 * keep fails: when in doubt, refuse). */
static bool identity_holds(const struct p11g_op *op, const struct p11g_rule *r)
{
	const struct p11g_rule_claims *rc = r->claims;
	char why[160];
	if (!rc)
		return true;
	const char *issuer = json_string_value(json_object_get(op->identity, "issuer"));
	if (!issuer || strcmp(issuer, rc->issuer))
		return false;
	_cleanup_json_ json_t *match = json_object();
	for (size_t i = 0; match && i < rc->n; i++)
		if (json_object_set_new(match, rc->names[i], json_string(rc->patterns[i])) < 0)
			return false;
	return match && p11g_claims_match(json_object_get(op->identity, "claims"), match, why,
	                                  sizeof(why)) == 0;
}

static bool digest_pinned(const struct p11g_op *op, const char *digest)
{
	for (size_t i = 0; digest && i < op->n_digests; i++)
		if (!strcmp(op->digests[i], digest))
			return true;
	return false;
}

static int scan_visit(const struct p11g_op *op, void *arg)
{
	struct use_scan *s = arg;
	uint64_t id = op->id;

	if (s->a->operation && id != s->a->operation)
		return 0;
	const char *other;
	ssize_t ki = op_key_index(op, &s->a->key, s->rule->name, &other);
	if (ki < 0) {
		if (other)
			note_other_rule(s, id, other);
		return 0;
	}
	if (!p11g_authz_is_signer(op->signer, s->caller)) {
		note(s, REF_NOT_SIGNER, id);
		return 0;
	}
	s->signer_seen = true;
	const struct p11g_op_key *key = &op->keys[ki];
	switch (p11g_op_effective_state(op, s->now)) {
	case P11G_OP_REVOKED:
		note(s, REF_REVOKED, id);
		return 0;
	case P11G_OP_REJECTED:
		note(s, REF_REJECTED, id);
		return 0;
	case P11G_OP_EXPIRED:
		note(s, REF_EXPIRED, id);
		return 0;
	case P11G_OP_EXHAUSTED:
		note(s, REF_EXHAUSTED, id);
		return 0;
	case P11G_OP_PENDING:
		note(s, key->used >= key->uses ? REF_EXHAUSTED : REF_PENDING, id);
		return 0;
	case P11G_OP_APPROVED:
		break;
	}
	if (key->used >= key->uses) {
		note(s, REF_EXHAUSTED, id);
		return 0;
	}
	const struct p11g_rule *rule = ops_rule(s->o, op, key->rule, &s->damaged);
	if (!rule) {
		/* Never used, and never silently: the admin must hear of it even
		 * when another operation answers this use.  The highest refusal:
		 * the last such operation is the one named, with its reason. */
		p11g_error("operation %" PRIu64 " cannot be used: %s", id, s->damaged.msg);
		s->why = REF_DAMAGED;
		s->why_id = id;
		return 0;
	}
	/* The rule as it was approved must cover the key too: its keys may have
	 * grown since, and approvers judged the operation by those it had. */
	if (!p11g_rule_covers(rule, &s->a->key)) {
		note_other_rule(s, id, rule->name);
		return 0;
	}
	if ((s->mech->family == P11G_MECH_RAW || s->a->raw) && !rule->allow_raw) {
		note(s, REF_RAW, id);
		return 0;
	}
	if (!p11g_rule_allows_mechanism(rule, s->a->mechanism)) {
		note(s, REF_MECHANISM, id);
		return 0;
	}
	if ((op->n_digests > 0 || rule->bind_digest) && !digest_pinned(op, s->a->digest)) {
		note(s, REF_DIGEST, id);
		return 0;
	}
	/* The rule as approved and the rule now: either may name registries. */
	if (!image_signs(op, rule, s->a->digest) || !image_signs(op, s->rule, s->a->digest)) {
		note(s, REF_IMAGE, id);
		return 0;
	}
	if (!certifies_signer(op, s->a->digest, s->a->key.fingerprint)) {
		note(s, REF_CERTIFIED, id);
		return 0;
	}
	/* The rule now may ask who ordered (claims added or tightened since): the operation's
	 * verified identity must satisfy it as it stands. */
	if (!identity_holds(op, s->rule)) {
		note(s, REF_IDENTITY, id);
		return 0;
	}
	/* Spend the operation that ends soonest first. */
	if (!s->best_id || op->expires < s->best_expires) {
		s->best_id = id;
		s->best_expires = op->expires;
		s->best_key = (size_t)ki;
	}
	return 0;
}

static const char *refusal_code(enum refusal r)
{
	switch (r) {
	case REF_OTHER_RULE:
		return P11G_E_NO_OPERATION;
	case REF_NOT_SIGNER:
		return P11G_E_NOT_SIGNER;
	case REF_REVOKED:
		return P11G_E_REVOKED;
	case REF_REJECTED:
		return P11G_E_REJECTED;
	case REF_EXPIRED:
		return P11G_E_EXPIRED;
	case REF_EXHAUSTED:
		return P11G_E_EXHAUSTED;
	case REF_PENDING:
		return P11G_E_PENDING;
	case REF_RAW:
		return P11G_E_RAW;
	case REF_MECHANISM:
		return P11G_E_MECHANISM;
	case REF_DIGEST:
		return P11G_E_DIGEST_MISMATCH;
	case REF_IMAGE:
		return P11G_E_REGISTRY;
	case REF_IDENTITY:
		return P11G_E_CLAIMS_MISMATCH;
	case REF_CERTIFIED:
		return P11G_E_DIGEST_MISMATCH;
	case REF_DAMAGED:
		return P11G_E_INTERNAL;
	case REF_NONE:
		break;
	}
	return P11G_E_NO_OPERATION;
}

static void refusal_message(struct use_scan *s, const char *uri, p11g_err *err)
{
	uint64_t id = s->why_id;
	const char *code = refusal_code(s->why);
	switch (s->why) {
	case REF_OTHER_RULE:
		if (!strcmp(s->why_rule, s->rule->name))
			p11g_err_set(
			    err, code,
			    "operation %" PRIu64 " was approved under an earlier version of "
			    "rule %s, which did not cover %s; request one: approvald request "
			    "--key '%s'",
			    id, s->why_rule, uri, uri);
		else
			p11g_err_set(err, code,
			             "operation %" PRIu64
			             " was approved under rule %s, but rule %s "
			             "governs %s; request one: approvald request --key '%s'",
			             id, s->why_rule, s->rule->name, uri, uri);
		break;
	case REF_NOT_SIGNER:
		p11g_err_set(err, code, "operation %" PRIu64 " for %s names another signer", id,
		             uri);
		break;
	case REF_REVOKED:
		p11g_err_set(err, code,
		             "operation %" PRIu64 " for %s was revoked; request a new one", id,
		             uri);
		break;
	case REF_REJECTED:
		p11g_err_set(err, code, "operation %" PRIu64 " for %s was rejected", id, uri);
		break;
	case REF_EXPIRED:
		p11g_err_set(err, code,
		             "operation %" PRIu64 " for %s has expired; request a new one", id,
		             uri);
		break;
	case REF_EXHAUSTED:
		p11g_err_set(err, code,
		             "operation %" PRIu64 " has no uses of %s left; request a new one", id,
		             uri);
		break;
	case REF_PENDING:
		p11g_err_set(err, code,
		             "operation %" PRIu64
		             " for %s is waiting for approval (approvald show %" PRIu64 ")",
		             id, uri, id);
		break;
	case REF_RAW:
		p11g_err_set(err, code, "raw use of %s is not allowed by its rule", uri);
		break;
	case REF_MECHANISM:
		p11g_err_set(err, code, "mechanism %s is not allowed for %s by its rule",
		             s->mech->name, uri);
		break;
	case REF_DIGEST:
		p11g_err_set(err, code, "digest %s is not one operation %" PRIu64 " pinned for %s",
		             s->a->digest ? s->a->digest : "(none)", id, uri);
		break;
	case REF_IMAGE:
		p11g_err_set(err, code,
		             "operation %" PRIu64 " holds no payload with digest %s of an image in "
		             "a registry the rule of %s names (such a rule signs only payloads "
		             "approvald read: ocisign sign --request)",
		             id, s->a->digest ? s->a->digest : "(none)", uri);
		break;
	case REF_IDENTITY:
		p11g_err_set(err, code,
		             "operation %" PRIu64 " for %s does not show the pipeline rule %s now "
		             "asks for (its ID token's issuer and claims); request one with an ID "
		             "token",
		             id, uri, s->rule->name);
		break;
	case REF_CERTIFIED:
		p11g_err_set(err, code,
		             "operation %" PRIu64
		             " pinned digest %s to an OpenPGP certification of "
		             "another key than %s: only the key it certifies signs it",
		             id, s->a->digest ? s->a->digest : "(none)", uri);
		break;
	case REF_DAMAGED:
		p11g_err_set(err, code,
		             "operation %" PRIu64
		             " for %s cannot be used: %s (see approvald's log)",
		             id, uri, s->damaged.msg);
		break;
	case REF_NONE:
		p11g_err_set(
		    err, code,
		    "no approved operation for %s; request one: approvald request --key '%s'", uri,
		    uri);
		break;
	}
}

/* The ended operations worth a look when nothing usable was found: the newest. */
static int scan_recent(p11g_txn *t, struct use_scan *s, p11g_err *err)
{
	uint64_t last = 0;
	if (p11g_txn_last_id(t, &last, err) < 0)
		return -1;
	return p11g_txn_op_foreach(t, false, last > RECENT_ENDED ? last - RECENT_ENDED : 0,
	                           scan_visit, s, err);
}

/* Records a refusal in the same transaction that found it, or counts it into the record of
 * its kind that the sweep writes when its minute is over (refusals.h). */
static int refuse(p11g_txn *t, struct txn_ctx *c, json_t *what, bool role, p11g_err *err)
{
	struct p11g_ops *o = c->o;
	const char *key = json_string_value(json_object_get(what, "key"));

	if (!o->refusals)
		o->refusals = p11g_refusals_new();
	/* Noted once per request: the store may run this body again (a map that grew), and the
	 * second run must write what the first decided, not count the refusal twice. */
	if (!c->refusal_noted && o->refusals && key) {
		c->refusal_counted =
		    p11g_refusals_note(o->refusals, c->caller->uid, c->caller->gid, key,
		                       c->refusal.code, role, p11g_now()) == P11G_REFUSAL_COUNTED;
		c->refusal_noted = true;
	}
	/* the notifiers of the key's rule hear of it, once a minute per key at most */
	if (p11g_notify_use_refused(t, o, c->caller, &c->use->key, c->refusal.code, c->refusal.msg,
	                            &c->refusal_told, err) < 0)
		return -1;
	if (c->refusal_counted) {
		c->refused = true;
		return 0;
	}
	struct p11g_jb b = {0};
	json_t *rec = p11g_jb_new(&b, json_deep_copy(what));
	p11g_jb_set_str(&b, rec, "reason", c->refusal.code);
	p11g_jb_set_str(&b, rec, "message", c->refusal.msg);
	if (b.failed) {
		json_decref(rec);
		rec = NULL; /* ops_audit refuses it */
	}
	if (ops_audit(t, "use_refused", c->caller, c->refusal_op, rec, err) < 0)
		return -1;
	c->refused = true;
	return 0;
}

static bool implicit_allowed(const struct p11g_rule *rule, const struct use_scan *s)
{
	const struct p11g_use_args *a = s->a;
	/* A pending operation for the key holds its uses until it is decided; a rule that asks
	 * who orders (claims) takes requests with ID tokens only, never a bare use. */
	return !s->best_id && s->why != REF_PENDING && !rule->claims &&
	       p11g_rule_may_order(rule, s->caller) && p11g_rule_auto_approves(rule, s->caller) &&
	       !rule->bind_digest && rule->n_registries == 0 &&
	       ((s->mech->family != P11G_MECH_RAW && !a->raw) || rule->allow_raw) &&
	       p11g_rule_allows_mechanism(rule, a->mechanism);
}

/* A rule that needs no approvals: a one-use operation created, approved and
 * consumed at once, every step audited. */
static int use_implicit(p11g_txn *t, struct txn_ctx *c, const struct p11g_rule *rule,
                        const char *uri, json_t *what, p11g_err *err)
{
	int64_t now = p11g_now();
	_cleanup_op_ struct p11g_op op = {
	    .state = P11G_OP_APPROVED, .created = now, .expires = now, .implicit = true};
	char signer[32];

	snprintf(signer, sizeof(signer), "uid:%u", (unsigned)c->caller->uid);
	if (p11g_txn_next_id(t, &op.id, err) < 0)
		return -1;
	if (p11g_op_set_orderer(&op, c->caller) < 0 || !(op.signer = strdup(signer)) ||
	    !(op.description = strdup("implicit single use")) || !(op.context = strdup("")) ||
	    !(op.digests = calloc(1, sizeof(char *))) ||
	    !(op.approvals = calloc(1, sizeof(*op.approvals))) ||
	    !(op.keys = calloc(1, sizeof(*op.keys))) || !(op.rules = json_object()) ||
	    json_object_set_new(op.rules, rule->name, p11g_rule_to_json(rule)) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	op.orderer_pid = false; /* the record of an implicit use names no process */
	op.n_keys = 1;
	op.keys[0] = (struct p11g_op_key){
	    .uri = strdup(uri), .rule = strdup(rule->name), .uses = 1, .used = 0};
	if (!op.keys[0].uri || !op.keys[0].rule)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	uint64_t id = op.id;
	_cleanup_json_ json_t *granted = json_deep_copy(what);
	if (!granted || json_object_set_new(granted, "implicit", json_true()) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	/* its records as for any operation: created and approved by the policy, then used up */
	if (ops_audit_op(
	        t, "created", c->caller, &op,
	        json_pack("{s:[s], s:s, s:b}", "keys", uri, "signer", op.signer, "implicit", 1),
	        err) < 0 ||
	    ops_audit_op(t, "approved", c->caller, &op,
	                 json_pack("{s:s, s:s}", "state", "approved", "by", "policy"), err) < 0)
		return -1;
	op.keys[0].used = 1;
	op.state = P11G_OP_EXHAUSTED;
	if (ops_audit_op(t, "use_granted", c->caller, &op, json_incref(granted), err) < 0)
		return -1;
	ops_ctx_result(c, json_pack("{s:I, s:i, s:b}", "operation", (json_int_t)id, "remaining", 0,
	                            "implicit", 1));
	return 0;
}

static int use_body(p11g_txn *t, void *arg, p11g_err *err)
{
	struct txn_ctx *c = arg;
	struct p11g_ops *o = c->o;
	const struct p11g_use_args *a = c->use;
	_cleanup_free_ char *uri = p11g_keyid_to_uri(&a->key);
	struct use_scan s = {.o = o, .a = a, .caller = c->caller, .now = p11g_now()};

	c->refused = false;
	c->refusal_op = 0;
	if (!uri)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	s.mech = p11g_mech_by_type(a->mechanism);
	const struct p11g_rule *rule = p11g_policy_match(o->policy, &a->key);
	if (!rule && o->policy->default_allow) {
		ops_ctx_result(c, json_pack("{s:b}", "guarded", 0));
		return 0;
	}
	_cleanup_json_ json_t *what =
	    json_pack("{s:s, s:s, s:s}", "key", uri, "mechanism", s.mech ? s.mech->name : "unknown",
	              "digest", a->digest ? a->digest : "");
	/* Which key object signed: two keys under one name never leave the same record. */
	if (!what ||
	    (a->key.fingerprint[0] &&
	     json_object_set_new(what, "key_fingerprint", json_string(a->key.fingerprint)) < 0))
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory");
	if (!rule) {
		p11g_err_set(&c->refusal, P11G_E_DENIED_DEFAULT,
		             "no policy rule covers %s and the default is deny", uri);
		return refuse(t, c, what,
		              p11g_authz_has_role(o->daemon_uid, NULL, c->caller, false), err);
	}
	s.rule = rule;
	if (!s.mech) {
		p11g_err_set(&c->refusal, P11G_E_MECHANISM,
		             "mechanism 0x%lx is not a signing mechanism p11gate knows",
		             (unsigned long)a->mechanism);
		return refuse(t, c, what,
		              p11g_authz_has_role(o->daemon_uid, rule, c->caller, false), err);
	}

	/* The current rule's word on raw use stands whatever older operations allowed. */
	if ((s.mech->family == P11G_MECH_RAW || a->raw) && !rule->allow_raw) {
		p11g_err_set(&c->refusal, P11G_E_RAW,
		             "raw use of %s (%s) is not allowed by rule %s", uri, s.mech->name,
		             rule->name);
		return refuse(t, c, what,
		              p11g_authz_has_role(o->daemon_uid, rule, c->caller, false), err);
	}
	/* The operations that could name the key, through the index: a use costs the same
	 * however many operations of other keys are open. */
	char terms[3][P11G_KEY_TERM_MAX];
	p11g_keyid_terms(&a->key, terms);
	const char *const term_list[] = {terms[0], terms[1], terms[2]};
	if (p11g_txn_op_foreach_key(t, term_list, 3, scan_visit, &s, err) < 0)
		return -1;
	if (!s.best_id && p11g_rule_auto_approves(rule, c->caller) &&
	    !p11g_rule_allows_mechanism(rule, a->mechanism))
		note(&s, REF_MECHANISM, 0);
	if (implicit_allowed(rule, &s))
		return use_implicit(t, c, rule, uri, what, err);
	bool role = p11g_authz_has_role(o->daemon_uid, rule, c->caller, s.signer_seen);
	/* The ended operations explain a refusal to those who had a part in them; walking
	 * them for anyone else would let any uid make every refusal cost a thousand reads, and
	 * so would a uid with a role past its allowance of refusals written one by one. */
	if (!s.best_id && s.why <= REF_NOT_SIGNER && role &&
	    (!o->refusals || p11g_refusals_allowance_left(o->refusals, c->caller->uid, s.now)) &&
	    scan_recent(t, &s, err) < 0)
		return -1;
	if (!s.best_id) {
		refusal_message(&s, uri, &c->refusal);
		c->refusal_op = s.why_id;
		return refuse(t, c, what, role, err);
	}

	/* The walk saw the store's copy; the use spends one of its own. */
	_cleanup_op_ struct p11g_op op = {0};
	if (ops_load_op(t, s.best_id, &op, err) < 0 || ops_check_audited(t, &op, err) < 0)
		return -1;
	struct p11g_op_key *key = &op.keys[s.best_key];
	key->used++;
	int64_t left_total = 0;
	for (size_t i = 0; i < op.n_keys; i++)
		left_total += op.keys[i].uses - op.keys[i].used;
	if (left_total == 0)
		op.state = P11G_OP_EXHAUSTED;
	/* A use that is not counted must not be granted. */
	if (ops_audit_op(t, "use_granted", c->caller, &op, json_incref(what), err) < 0)
		return -1;
	ops_ctx_result(c, json_pack("{s:I, s:I}", "operation", (json_int_t)s.best_id, "remaining",
	                            (json_int_t)(key->uses - key->used)));
	if (left_total == 0)
		c->changed = s.best_id;
	return 0;
}

int p11g_ops_use(struct p11g_ops *o, const struct p11g_ident *caller,
                 const struct p11g_use_args *args, json_t **ret_result, p11g_err *err)
{
	struct txn_ctx c = {.o = o, .caller = caller, .use = args};
	if (o->audit_key && p11g_keyid_matches(&args->key, o->audit_key)) {
		int64_t now = p11g_mono_us();
		if (now - o->audit_key_logged_us >= 1000000) {
			o->audit_key_logged_us = now;
			_cleanup_free_ char *uri = p11g_keyid_to_uri(&args->key);
			p11g_warn("uid %u asked to sign with the audit key %s: refused (it signs "
			          "approvald's audit checkpoints and nothing else)",
			          (unsigned)caller->uid, uri ? uri : "?");
		}
		return p11g_err_set(err, P11G_E_FORBIDDEN,
		                    "this key is approvald's audit key: it signs approvald's audit "
		                    "checkpoints and nothing else");
	}
	int r = p11g_store_write(o->store, use_body, &c, err);
	if (r == 0 && c.refused) {
		*err = c.refusal;
		r = -1;
	}
	return ops_finish(&c, r, ret_result, err);
}

json_t *p11g_ops_key_info(struct p11g_ops *o, const struct p11g_keyid *key)
{
	if (o->audit_key && p11g_keyid_matches(key, o->audit_key))
		return json_pack("{s:b, s:b, s:b}", "guarded", 1, "allow_raw", 0, "audit_key", 1);
	const struct p11g_rule *rule = p11g_policy_match(o->policy, key);
	if (!rule)
		return json_pack("{s:b, s:b, s:b}", "guarded", !o->policy->default_allow,
		                 "allow_raw", 0, "default", 1);
	struct p11g_jb b = {0};
	json_t *mechs = p11g_jb_new(&b, json_array());
	for (size_t i = 0; i < rule->n_mechanisms; i++) {
		const struct p11g_mech_info *m = p11g_mech_by_type(rule->mechanisms[i]);
		if (m)
			p11g_jb_append(&b, mechs, json_string(m->name));
	}
	if (b.failed) {
		json_decref(mechs);
		return NULL; /* the module hears an error and refuses the key */
	}
	return json_pack("{s:b, s:s, s:b, s:b, s:o}", "guarded", 1, "rule", rule->name, "allow_raw",
	                 rule->allow_raw, "bind_digest", rule->bind_digest, "mechanisms", mechs);
}
