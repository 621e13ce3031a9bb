/* An operation's stored JSON decoded into struct p11g_op and encoded back (op.h). */
#include "approvald/op.h"

#include <openssl/evp.h>

#include "approvald/jbuild.h"
#include "p11gate/wire.h"

static const char *const state_names[] = {
    [P11G_OP_PENDING] = "pending",     [P11G_OP_APPROVED] = "approved",
    [P11G_OP_EXHAUSTED] = "exhausted", [P11G_OP_REJECTED] = "rejected",
    [P11G_OP_REVOKED] = "revoked",     [P11G_OP_EXPIRED] = "expired",
};

const char *p11g_op_state_name(enum p11g_op_state s)
{
	return (size_t)s < P11G_ARRAY_SIZE(state_names) ? state_names[s] : "";
}

int p11g_op_state_parse(const char *name, enum p11g_op_state *ret)
{
	for (size_t i = 0; name && i < P11G_ARRAY_SIZE(state_names); i++) {
		if (!strcmp(name, state_names[i])) {
			*ret = (enum p11g_op_state)i;
			return 0;
		}
	}
	return -1;
}

/* The members decode knows; the rest are kept in extra. */
static const char *const known[] = {
    "id",          "state",    "orderer",   "signer",     "created",       "expires",
    "description", "context",  "digests",   "keys",       "rules",         "approvals",
    "images",      "oci",      "rejection", "revocation", "implicit",      "audit_seq",
    "terms_seq",   "identity", "name",      "meta",       "payload_names",
};

#define damaged(err, what)                                                                         \
	p11g_err_set(err, P11G_E_INTERNAL, "operation record is damaged: %s", what)
#define oom(err) p11g_err_set(err, P11G_E_INTERNAL, "out of memory")

static int get_int(const json_t *j, const char *name, int64_t *ret, p11g_err *err)
{
	const json_t *v = json_object_get(j, name);
	if (!json_is_integer(v))
		return damaged(err, name);
	*ret = (int64_t)json_integer_value(v);
	return 0;
}

/* A string without NULs inside, copied. */
static int get_str(const json_t *j, const char *name, char **ret, p11g_err *err)
{
	const json_t *v = json_object_get(j, name);
	if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
		return damaged(err, name);
	if (!(*ret = strdup(json_string_value(v))))
		return oom(err);
	return 0;
}

static int get_ident(const json_t *j, struct p11g_ident *ret, const char *what, p11g_err *err)
{
	int r = p11g_ident_from_json(j, ret);
	if (r == -ENOMEM)
		return oom(err);
	return r < 0 ? damaged(err, what) : 0;
}

static int decode_end(const json_t *j, struct p11g_op_end *ret, const char *what, p11g_err *err)
{
	const json_t *user = json_object_get(j, "user");
	int64_t uid = 0, pid = 0;
	if (!j)
		return 0;
	if (!json_is_object(j) || !json_is_string(user) ||
	    json_string_length(user) >= sizeof(ret->who.user))
		return damaged(err, what);
	if (get_int(j, "uid", &uid, err) < 0 || get_int(j, "pid", &pid, err) < 0 ||
	    get_int(j, "time", &ret->time, err) < 0 || get_str(j, "reason", &ret->reason, err) < 0)
		return -1;
	ret->present = true;
	ret->who.uid = (uid_t)uid;
	ret->who.pid = (pid_t)pid;
	snprintf(ret->who.user, sizeof(ret->who.user), "%s", json_string_value(user));
	return 0;
}

static int decode_keys(const json_t *arr, struct p11g_op *op, p11g_err *err)
{
	const json_t *k;
	size_t i;
	if (!json_is_array(arr) || json_array_size(arr) == 0)
		return damaged(err, "keys");
	if (!(op->keys = calloc(json_array_size(arr), sizeof(*op->keys))))
		return oom(err);
	json_array_foreach(arr, i, k)
	{
		struct p11g_op_key *e = &op->keys[op->n_keys++];
		if (get_str(k, "uri", &e->uri, err) < 0 || get_str(k, "rule", &e->rule, err) < 0 ||
		    get_int(k, "uses", &e->uses, err) < 0 || get_int(k, "used", &e->used, err) < 0)
			return -1;
		if (e->uses < 1 || e->used < 0 || e->used > e->uses)
			return damaged(err, "keys (counts)");
	}
	return 0;
}

static int decode_lists(const json_t *j, struct p11g_op *op, p11g_err *err)
{
	const json_t *dig = json_object_get(j, "digests"), *apv = json_object_get(j, "approvals"),
	             *v;
	size_t i;
	if (!json_is_array(dig))
		return damaged(err, "digests");
	if (!json_is_array(apv))
		return damaged(err, "approvals");
	if (!(op->digests = calloc(json_array_size(dig) + 1, sizeof(*op->digests))) ||
	    !(op->approvals = calloc(json_array_size(apv) + 1, sizeof(*op->approvals))))
		return oom(err);
	json_array_foreach(dig, i, v)
	{
		if (!json_is_string(v))
			return damaged(err, "digests");
		if (!(op->digests[op->n_digests] = strdup(json_string_value(v))))
			return oom(err);
		op->n_digests++;
	}
	json_array_foreach(apv, i, v)
	{
		struct p11g_op_approval *a = &op->approvals[op->n_approvals];
		if (get_ident(v, &a->who, "approvals", err) < 0)
			return -1;
		op->n_approvals++;
		if (get_int(v, "time", &a->time, err) < 0)
			return -1;
	}
	return 0;
}

/* An optional member kept as JSON: absent is NULL, present must be of the type check wants. */
static int get_json(const json_t *j, const char *name, int (*check)(const json_t *), json_t **ret,
                    p11g_err *err)
{
	json_t *v = json_object_get(j, name);
	if (!v)
		return 0;
	if (!check(v))
		return damaged(err, name);
	*ret = json_incref(v);
	return 0;
}

static int is_object(const json_t *v)
{
	return json_is_object(v);
}

static int is_array(const json_t *v)
{
	return json_is_array(v);
}

static int decode_extra(const json_t *j, struct p11g_op *op, p11g_err *err)
{
	const char *name;
	json_t *v;
	json_object_foreach((json_t *)j, name, v)
	{
		bool is_known = false;
		for (size_t i = 0; i < P11G_ARRAY_SIZE(known) && !is_known; i++)
			is_known = !strcmp(name, known[i]);
		if (is_known)
			continue;
		if ((!op->extra && !(op->extra = json_object())) ||
		    json_object_set(op->extra, name, v) < 0)
			return oom(err);
	}
	return 0;
}

static int decode_head(const json_t *j, struct p11g_op *op, p11g_err *err)
{
	const json_t *orderer = json_object_get(j, "orderer"),
	             *pid = json_object_get(orderer, "pid"),
	             *implicit = json_object_get(j, "implicit");
	int64_t id = 0;

	if (get_int(j, "id", &id, err) < 0)
		return -1;
	op->id = (uint64_t)id;
	if (p11g_op_state_parse(json_string_value(json_object_get(j, "state")), &op->state) < 0)
		return damaged(err, "state");
	if (get_ident(orderer, &op->orderer, "orderer", err) < 0)
		return -1;
	if (pid && !json_is_integer(pid))
		return damaged(err, "orderer");
	op->orderer_pid = pid != NULL;
	op->orderer.pid = pid ? (pid_t)json_integer_value(pid) : 0;
	if (implicit && !json_is_boolean(implicit))
		return damaged(err, "implicit");
	op->implicit = json_is_true(implicit);
	const json_t *aseq = json_object_get(j, "audit_seq");
	if (aseq && (!json_is_integer(aseq) || json_integer_value(aseq) < 1))
		return damaged(err, "audit_seq");
	op->audit_seq = aseq ? (uint64_t)json_integer_value(aseq) : 0;
	const json_t *tseq = json_object_get(j, "terms_seq");
	if (tseq && (!json_is_integer(tseq) || json_integer_value(tseq) < 1))
		return damaged(err, "terms_seq");
	op->terms_seq = tseq ? (uint64_t)json_integer_value(tseq) : 0;
	if (!json_is_object(json_object_get(j, "rules")))
		return damaged(err, "rules");
	return 0;
}

int p11g_op_decode(const json_t *j, struct p11g_op *ret, p11g_err *err)
{
	struct p11g_op op = {0};

	if (!json_is_object(j))
		return damaged(err, "not an object");
	if (decode_head(j, &op, err) < 0 || get_str(j, "signer", &op.signer, err) < 0 ||
	    get_int(j, "created", &op.created, err) < 0 ||
	    get_int(j, "expires", &op.expires, err) < 0 ||
	    get_str(j, "description", &op.description, err) < 0 ||
	    get_str(j, "context", &op.context, err) < 0 ||
	    decode_keys(json_object_get(j, "keys"), &op, err) < 0 ||
	    decode_lists(j, &op, err) < 0 || get_json(j, "rules", is_object, &op.rules, err) < 0 ||
	    get_json(j, "images", is_array, &op.images, err) < 0 ||
	    get_json(j, "oci", is_object, &op.oci, err) < 0 ||
	    get_json(j, "identity", is_object, &op.identity, err) < 0 ||
	    (json_object_get(j, "name") && get_str(j, "name", &op.name, err) < 0) ||
	    get_json(j, "meta", is_object, &op.meta, err) < 0 ||
	    get_json(j, "payload_names", is_array, &op.payload_names, err) < 0 ||
	    decode_end(json_object_get(j, "rejection"), &op.rejection, "rejection", err) < 0 ||
	    decode_end(json_object_get(j, "revocation"), &op.revocation, "revocation", err) < 0 ||
	    decode_extra(j, &op, err) < 0) {
		p11g_op_clear(&op);
		return -1;
	}
	*ret = op;
	return 0;
}

static json_t *encode_end(struct p11g_jb *b, const struct p11g_op_end *e)
{
	json_t *j = p11g_jb_new(b, json_object());
	p11g_jb_set_int(b, j, "uid", e->who.uid);
	p11g_jb_set_str(b, j, "user", e->who.user);
	p11g_jb_set_int(b, j, "pid", e->who.pid);
	p11g_jb_set_int(b, j, "time", e->time);
	p11g_jb_set_str(b, j, "reason", e->reason);
	return j;
}

json_t *p11g_op_encode(const struct p11g_op *op)
{
	struct p11g_jb b = {0};
	json_t *j = p11g_jb_new(&b, json_object()), *v;
	const char *name;

	p11g_jb_set_int(&b, j, "id", (int64_t)op->id);
	p11g_jb_set_str(&b, j, "state", p11g_op_state_name(op->state));
	json_t *orderer = p11g_jb_new(&b, p11g_ident_to_json(&op->orderer));
	if (op->orderer_pid)
		p11g_jb_set_int(&b, orderer, "pid", op->orderer.pid);
	p11g_jb_set(&b, j, "orderer", orderer);
	p11g_jb_set_str(&b, j, "signer", op->signer);
	p11g_jb_set_int(&b, j, "created", op->created);
	p11g_jb_set_int(&b, j, "expires", op->expires);
	p11g_jb_set_str(&b, j, "description", op->description);
	p11g_jb_set_str(&b, j, "context", op->context);
	json_t *digests = p11g_jb_new(&b, json_array());
	for (size_t i = 0; i < op->n_digests; i++)
		p11g_jb_append(&b, digests, json_string(op->digests[i]));
	p11g_jb_set(&b, j, "digests", digests);
	json_t *keys = p11g_jb_new(&b, json_array());
	for (size_t i = 0; i < op->n_keys; i++) {
		json_t *k = p11g_jb_new(&b, json_object());
		p11g_jb_set_str(&b, k, "uri", op->keys[i].uri);
		p11g_jb_set_str(&b, k, "rule", op->keys[i].rule);
		p11g_jb_set_int(&b, k, "uses", op->keys[i].uses);
		p11g_jb_set_int(&b, k, "used", op->keys[i].used);
		p11g_jb_append(&b, keys, k);
	}
	p11g_jb_set(&b, j, "keys", keys);
	p11g_jb_set(&b, j, "rules", json_incref(op->rules));
	json_t *apv = p11g_jb_new(&b, json_array());
	for (size_t i = 0; i < op->n_approvals; i++) {
		json_t *a = p11g_jb_new(&b, p11g_ident_to_json(&op->approvals[i].who));
		p11g_jb_set_int(&b, a, "time", op->approvals[i].time);
		p11g_jb_append(&b, apv, a);
	}
	p11g_jb_set(&b, j, "approvals", apv);
	if (op->images)
		p11g_jb_set(&b, j, "images", json_incref(op->images));
	if (op->oci)
		p11g_jb_set(&b, j, "oci", json_incref(op->oci));
	if (op->identity)
		p11g_jb_set(&b, j, "identity", json_incref(op->identity));
	if (op->name)
		p11g_jb_set_str(&b, j, "name", op->name);
	if (op->meta)
		p11g_jb_set(&b, j, "meta", json_incref(op->meta));
	if (op->payload_names)
		p11g_jb_set(&b, j, "payload_names", json_incref(op->payload_names));
	if (op->rejection.present)
		p11g_jb_set(&b, j, "rejection", encode_end(&b, &op->rejection));
	if (op->revocation.present)
		p11g_jb_set(&b, j, "revocation", encode_end(&b, &op->revocation));
	if (op->implicit)
		p11g_jb_set(&b, j, "implicit", json_true());
	if (op->audit_seq)
		p11g_jb_set_int(&b, j, "audit_seq", (int64_t)op->audit_seq);
	if (op->terms_seq)
		p11g_jb_set_int(&b, j, "terms_seq", (int64_t)op->terms_seq);
	json_object_foreach(op->extra, name, v) p11g_jb_set(&b, j, name, json_incref(v));
	if (b.failed) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static void end_clear(struct p11g_op_end *e)
{
	free(e->reason);
}

void p11g_op_clear(struct p11g_op *op)
{
	p11g_ident_clear(&op->orderer);
	free(op->signer);
	free(op->description);
	free(op->context);
	for (size_t i = 0; i < op->n_digests; i++)
		free(op->digests[i]);
	free(op->digests);
	for (size_t i = 0; i < op->n_keys; i++) {
		free(op->keys[i].uri);
		free(op->keys[i].rule);
	}
	free(op->keys);
	for (size_t i = 0; i < op->n_approvals; i++)
		p11g_ident_clear(&op->approvals[i].who);
	free(op->approvals);
	json_decref(op->rules);
	json_decref(op->images);
	json_decref(op->oci);
	json_decref(op->identity);
	free(op->name);
	json_decref(op->meta);
	json_decref(op->payload_names);
	end_clear(&op->rejection);
	end_clear(&op->revocation);
	json_decref(op->extra);
	memset(op, 0, sizeof(*op));
}

int64_t p11g_op_uses_made(const struct p11g_op *op)
{
	int64_t n = 0;
	for (size_t i = 0; i < op->n_keys; i++)
		n += op->keys[i].used;
	return n;
}

bool p11g_op_state_active(enum p11g_op_state s)
{
	return s == P11G_OP_PENDING || s == P11G_OP_APPROVED;
}

enum p11g_op_state p11g_op_effective_state(const struct p11g_op *op, int64_t now)
{
	return p11g_op_state_active(op->state) && now >= op->expires ? P11G_OP_EXPIRED : op->state;
}

ssize_t p11g_op_approval_of(const struct p11g_op *op, uid_t uid)
{
	for (size_t i = 0; i < op->n_approvals; i++)
		if (op->approvals[i].who.uid == uid)
			return (ssize_t)i;
	return -1;
}

/* *dst = *src with its own group list.  0, or -ENOMEM with dst holding no groups. */
static int ident_copy(struct p11g_ident *dst, const struct p11g_ident *src)
{
	*dst = *src;
	dst->groups = NULL;
	dst->n_groups = 0;
	if (src->n_groups && !(dst->groups = calloc(src->n_groups, sizeof(char *))))
		return -ENOMEM;
	for (size_t i = 0; i < src->n_groups; i++) {
		if (!(dst->groups[i] = strdup(src->groups[i]))) {
			p11g_ident_clear(dst);
			return -ENOMEM;
		}
		dst->n_groups = i + 1;
	}
	return 0;
}

int p11g_op_set_orderer(struct p11g_op *op, const struct p11g_ident *who)
{
	p11g_ident_clear(&op->orderer);
	op->orderer_pid = true;
	return ident_copy(&op->orderer, who);
}

int p11g_op_approve(struct p11g_op *op, const struct p11g_ident *who, int64_t time)
{
	struct p11g_op_approval *v = realloc(op->approvals, (op->n_approvals + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	op->approvals = v;
	v[op->n_approvals].time = time;
	if (ident_copy(&v[op->n_approvals].who, who) < 0)
		return -ENOMEM;
	op->n_approvals++;
	return 0;
}

/* A copy of s (NULL stays NULL); false when memory ran out. */
static bool dup_str(char **dst, const char *s)
{
	*dst = s ? strdup(s) : NULL;
	return !s || *dst;
}

static bool copy_end(struct p11g_op_end *dst, const struct p11g_op_end *src)
{
	*dst = *src;
	dst->who.groups = NULL;
	dst->who.n_groups = 0;
	return dup_str(&dst->reason, src->reason);
}

static bool copy_lists(struct p11g_op *d, const struct p11g_op *s)
{
	/* Each entry is counted before it is filled, so a failure frees what was copied. */
	if (!(d->digests = calloc(s->n_digests + 1, sizeof(*d->digests))) ||
	    !(d->keys = calloc(s->n_keys + 1, sizeof(*d->keys))) ||
	    !(d->approvals = calloc(s->n_approvals + 1, sizeof(*d->approvals))))
		return false;
	for (size_t i = 0; i < s->n_digests; i++)
		if (!dup_str(&d->digests[d->n_digests++], s->digests[i]))
			return false;
	for (size_t i = 0; i < s->n_keys; i++) {
		struct p11g_op_key *k = &d->keys[d->n_keys++];
		k->uses = s->keys[i].uses;
		k->used = s->keys[i].used;
		if (!dup_str(&k->uri, s->keys[i].uri) || !dup_str(&k->rule, s->keys[i].rule))
			return false;
	}
	for (size_t i = 0; i < s->n_approvals; i++) {
		d->approvals[d->n_approvals].time = s->approvals[i].time;
		if (ident_copy(&d->approvals[d->n_approvals++].who, &s->approvals[i].who) < 0)
			return false;
	}
	return true;
}

int p11g_op_copy(const struct p11g_op *src, struct p11g_op *ret)
{
	struct p11g_op d = *src;

	/* Nothing of src is owned by d until copied: a failure part-way frees only copies. */
	d.orderer.groups = NULL;
	d.orderer.n_groups = 0;
	d.signer = d.description = d.context = NULL;
	d.digests = NULL;
	d.n_digests = 0;
	d.keys = NULL;
	d.n_keys = 0;
	d.approvals = NULL;
	d.n_approvals = 0;
	d.rejection.reason = d.revocation.reason = NULL;
	d.rules = json_incref(src->rules);
	d.images = json_incref(src->images);
	d.oci = json_incref(src->oci);
	d.identity = json_incref(src->identity);
	d.name = NULL;
	d.meta = json_incref(src->meta);
	d.payload_names = json_incref(src->payload_names);
	d.extra = json_incref(src->extra);
	if (ident_copy(&d.orderer, &src->orderer) < 0 || !dup_str(&d.signer, src->signer) ||
	    !dup_str(&d.description, src->description) || !dup_str(&d.context, src->context) ||
	    (src->name && !dup_str(&d.name, src->name)) || !copy_lists(&d, src) ||
	    !copy_end(&d.rejection, &src->rejection) ||
	    !copy_end(&d.revocation, &src->revocation)) {
		p11g_op_clear(&d);
		return -ENOMEM;
	}
	*ret = d;
	return 0;
}

void p11g_op_unapprove(struct p11g_op *op, size_t i)
{
	p11g_ident_clear(&op->approvals[i].who);
	memmove(&op->approvals[i], &op->approvals[i + 1],
	        (op->n_approvals - i - 1) * sizeof(op->approvals[0]));
	op->n_approvals--;
}

int p11g_op_end(struct p11g_op *op, enum p11g_op_state state, const struct p11g_ident *who,
                int64_t time, const char *reason)
{
	struct p11g_op_end *e = state == P11G_OP_REJECTED ? &op->rejection : &op->revocation;
	char *r = strdup(reason);
	if (!r)
		return -ENOMEM;
	end_clear(e);
	*e = (struct p11g_op_end){.present = true, .time = time, .reason = r};
	e->who.uid = who->uid;
	e->who.pid = who->pid;
	snprintf(e->who.user, sizeof(e->who.user), "%s", who->user);
	op->state = state;
	return 0;
}

json_t *p11g_op_terms(const struct p11g_op *op)
{
	struct p11g_jb b = {0};
	json_t *j = p11g_jb_new(&b, json_object());
	unsigned char md[32];
	char hex[65];
	unsigned int mdlen = 0;

	p11g_jb_set_int(&b, j, "orderer", op->orderer.uid);
	p11g_jb_set_str(&b, j, "signer", op->signer ? op->signer : "");
	p11g_jb_set_int(&b, j, "created", op->created);
	p11g_jb_set_int(&b, j, "expires", op->expires);
	json_t *keys = p11g_jb_new(&b, json_array());
	for (size_t i = 0; i < op->n_keys; i++)
		p11g_jb_append(&b, keys,
		               json_pack("{s:s, s:s, s:I}", "uri", op->keys[i].uri, "rule",
		                         op->keys[i].rule ? op->keys[i].rule : "", "uses",
		                         (json_int_t)op->keys[i].uses));
	p11g_jb_set(&b, j, "keys", keys);
	/* the pinned digests, one per line, hashed: a record of bounded size */
	EVP_MD_CTX *md_ctx = EVP_MD_CTX_new();
	bool ok = md_ctx && EVP_DigestInit_ex(md_ctx, EVP_sha256(), NULL) == 1;
	for (size_t i = 0; ok && i < op->n_digests; i++)
		ok = EVP_DigestUpdate(md_ctx, op->digests[i], strlen(op->digests[i])) == 1 &&
		     EVP_DigestUpdate(md_ctx, "\n", 1) == 1;
	ok = ok && EVP_DigestFinal_ex(md_ctx, md, &mdlen) == 1 && mdlen == sizeof(md);
	EVP_MD_CTX_free(md_ctx);
	p11g_hex_encode(md, sizeof(md), hex);
	p11g_jb_set_int(&b, j, "pinned", (int64_t)op->n_digests);
	p11g_jb_set_str(&b, j, "digests", hex);
	/* what a use is judged against besides (the rules as approved: mechanisms, digests
	 * bound, registries; the images approvers saw), hashed */
	/* what the requester called it, when it did (optional: older terms hash as before) */
	json_t *labels __attribute__((cleanup(json_decrefp))) = NULL;
	if (op->name || op->meta || op->payload_names) {
		labels = json_pack("{s:s?, s:O?, s:O?}", "name", op->name, "meta", op->meta,
		                   "payload_names", op->payload_names);
		ok = ok && labels;
	}
	const json_t *judged[] = {op->rules, op->images, op->oci, op->identity, labels};
	const char *names[] = {"rules", "images", "oci", "identity", "labels"};
	for (size_t i = 0; ok && i < P11G_ARRAY_SIZE(judged); i++) {
		if (i >= 3 && !judged[i])
			continue; /* optional terms: the terms of operations without them unchanged
			           */
		char *text =
		    judged[i] ? json_dumps(judged[i], JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		ok = !judged[i] ||
		     (text && EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL) == 1);
		if (ok && judged[i])
			p11g_hex_encode(md, sizeof(md), hex);
		p11g_jb_set_str(&b, j, names[i], judged[i] ? hex : "");
		free(text);
	}
	if (!ok || b.failed) {
		json_decref(j);
		return NULL;
	}
	return j;
}

const char *const p11g_op_term_names[] = {"orderer",  "signer",  "keys",  "created", "expires",
                                          "pinned",   "digests", "rules", "images",  "oci",
                                          "identity", "labels",  NULL};
const size_t p11g_op_term_optional = 10; /* "identity" and after */

int p11g_op_terms_hash(const json_t *after, char hex[65])
{
	json_t *t = json_object();
	unsigned char md[32];
	unsigned int len = 0;
	for (size_t i = 0; t && p11g_op_term_names[i]; i++) {
		json_t *v = json_object_get(after, p11g_op_term_names[i]);
		if (!v && i >= p11g_op_term_optional)
			continue;
		if (!v || json_object_set(t, p11g_op_term_names[i], v) < 0) {
			json_decref(t);
			return -1;
		}
	}
	char *text = t ? json_dumps(t, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(t);
	int ok = text && EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL) == 1 &&
	         len == sizeof(md);
	free(text);
	if (!ok)
		return -1;
	p11g_hex_encode(md, sizeof(md), hex);
	return 0;
}

json_t *p11g_op_audited(const struct p11g_op *op, uint64_t terms_seq)
{
	struct p11g_jb b = {0};
	json_t *j = p11g_jb_new(&b, terms_seq ? json_object() : p11g_op_terms(op));
	char hex[65];

	if (!j)
		return NULL;
	p11g_jb_set_str(&b, j, "state", p11g_op_state_name(op->state));
	json_t *used = p11g_jb_new(&b, json_array());
	for (size_t i = 0; i < op->n_keys; i++)
		p11g_jb_append(&b, used, json_integer(op->keys[i].used));
	p11g_jb_set(&b, j, "used", used);
	json_t *apv = p11g_jb_new(&b, json_array());
	for (size_t i = 0; i < op->n_approvals; i++)
		p11g_jb_append(&b, apv, json_integer(op->approvals[i].who.uid));
	p11g_jb_set(&b, j, "approvals", apv);
	if (terms_seq) {
		json_t *terms = p11g_op_terms(op);
		if (!terms || p11g_op_terms_hash(terms, hex) < 0) {
			json_decref(terms);
			json_decref(j);
			return NULL;
		}
		json_decref(terms);
		p11g_jb_set_int(&b, j, "terms_seq", (int64_t)terms_seq);
	} else if (p11g_op_terms_hash(j, hex) < 0) {
		json_decref(j);
		return NULL;
	}
	p11g_jb_set_str(&b, j, "terms", hex);
	if (b.failed) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static void value_text(const json_t *v, char *out, size_t n)
{
	char *t = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	snprintf(out, n, "%s", t ? t : "(none)");
	free(t);
}

static bool diff_at(const json_t *a, const json_t *b, char *what, size_t what_n, char *sa, char *sb,
                    size_t n)
{
	if (json_is_object(a) && json_is_object(b)) {
		const char *name;
		json_t *v;
		size_t len = strlen(what);
		json_object_foreach((json_t *)a, name, v)
		{
			snprintf(what + len, what_n - len, "%s%s", len ? "." : "", name);
			if (diff_at(v, json_object_get(b, name), what, what_n, sa, sb, n))
				return true;
		}
		json_object_foreach((json_t *)b, name, v)
		{
			snprintf(what + len, what_n - len, "%s%s", len ? "." : "", name);
			if (!json_object_get(a, name)) {
				value_text(NULL, sa, n);
				value_text(v, sb, n);
				return true;
			}
		}
		what[len] = '\0';
		return false;
	}
	if (json_is_array(a) && json_is_array(b) && json_array_size(a) == json_array_size(b)) {
		size_t len = strlen(what);
		for (size_t i = 0; i < json_array_size(a); i++) {
			snprintf(what + len, what_n - len, "[%zu]", i);
			if (diff_at(json_array_get(a, i), json_array_get(b, i), what, what_n, sa,
			            sb, n))
				return true;
		}
		what[len] = '\0';
		return false;
	}
	if (a && b && json_equal((json_t *)a, (json_t *)b))
		return false;
	value_text(a, sa, n);
	value_text(b, sb, n);
	return true;
}

bool p11g_op_audited_diff(const json_t *a, const json_t *b, char *what, size_t what_n, char *sa,
                          char *sb, size_t n)
{
	if (what_n)
		what[0] = '\0';
	return diff_at(a, b, what, what_n, sa, sb, n);
}
