/* The hash-chained audit log: append, listing and verification over the store's raw audit table. */
#include "approvald/store_internal.h"

#include <inttypes.h>

#include <openssl/evp.h>

#include "approvald/jbuild.h"
#include "p11gate/wire.h"

#define HEX_LEN (2 * P11G_AUDIT_HASH_LEN)

static void md_ctx_freep(EVP_MD_CTX **c)
{
	EVP_MD_CTX_free(*c);
}
#define _cleanup_md_   __attribute__((cleanup(md_ctx_freep)))
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

static int hash_text(EVP_MD_CTX *md, const char *canon,
                     const unsigned char prev[P11G_AUDIT_HASH_LEN],
                     unsigned char out[P11G_AUDIT_HASH_LEN])
{
	unsigned int len = 0;
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, prev, P11G_AUDIT_HASH_LEN) != 1 ||
	    EVP_DigestUpdate(md, canon, strlen(canon)) != 1 ||
	    EVP_DigestFinal_ex(md, out, &len) != 1 || len != P11G_AUDIT_HASH_LEN)
		return -1;
	return 0;
}

/* hash = SHA-256(prev || canonical JSON of rec without "hash"); canonical
 * is jansson's compact, key-sorted form, which any reader can reproduce. */
static int record_hash(EVP_MD_CTX *md, json_t *rec, const unsigned char prev[P11G_AUDIT_HASH_LEN],
                       unsigned char out[P11G_AUDIT_HASH_LEN])
{
	_cleanup_json_ json_t *body = json_copy(rec);
	if (!body || (json_object_get(body, "hash") && json_object_del(body, "hash") < 0))
		return -1;
	_cleanup_free_ char *canon = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
	return canon ? hash_text(md, canon, prev, out) : -1;
}

int p11g_txn_audit_append(p11g_txn *t, const json_t *event, uint64_t *ret_seq, p11g_err *err)
{
	struct p11g_audit_head head;
	unsigned char hash[P11G_AUDIT_HASH_LEN];
	char hex[HEX_LEN + 1];
	_cleanup_md_ EVP_MD_CTX *md = EVP_MD_CTX_new();

	if (!json_is_object(event) || !json_is_string(json_object_get(event, "event")))
		return p11g_err_set(err, P11G_E_INTERNAL,
		                    "audit record without an \"event\" string");
	if (p11g_store_audit_head(t, &head, err) < 0 || p11g_store_audit_expect(t, &head, err) < 0)
		return -1;
	if (head.seq >= (uint64_t)INT64_MAX)
		return p11g_err_set(err, P11G_E_STORE, "audit log: record numbers exhausted");
	uint64_t seq = head.seq + 1;

	/* Only top-level members are added or dropped: a shallow copy will do. */
	_cleanup_json_ json_t *rec = json_copy((json_t *)event);
	if (!md || !rec)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory writing an audit record");
	p11g_hex_encode(head.hash, sizeof(head.hash), hex);
	if (json_object_get(rec, "hash"))
		json_object_del(rec, "hash");
	/* Every member or no record: a failed allocation fails the transaction. */
	struct p11g_jb b = {0};
	if (!json_object_get(rec, "time"))
		p11g_jb_set_int(&b, rec, "time", p11g_now());
	p11g_jb_set_int(&b, rec, "seq", (int64_t)seq);
	p11g_jb_set_str(&b, rec, "prev", hex);
	if (b.failed)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot hash audit record %" PRIu64, seq);
	/* The record as stored is its canonical text with "hash" added last:
	 * one encoding, and what was hashed reads off the stored text. */
	_cleanup_free_ char *canon = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
	if (!canon || hash_text(md, canon, head.hash, hash) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot hash audit record %" PRIu64, seq);
	char quoted[HEX_LEN + 3];
	p11g_hex_encode(hash, sizeof(hash), hex);
	snprintf(quoted, sizeof(quoted), "\"%s\"", hex);
	_cleanup_free_ char *text = p11g_json_text_add(canon, "hash", quoted);
	if (!text)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot encode audit record %" PRIu64,
		                    seq);
	if (p11g_store_audit_put(t, seq, text, strlen(text), hash, err) < 0)
		return -1;
	if (ret_seq)
		*ret_seq = seq;
	return 0;
}

#define broken(err, ...) p11g_err_set(err, P11G_E_AUDIT_BROKEN, __VA_ARGS__)

static json_t *record_parse(const char *text, size_t len)
{
	json_error_t jerr;
	json_t *rec = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (rec && !json_is_object(rec)) {
		json_decref(rec);
		return NULL;
	}
	return rec;
}

struct foreach_ctx {
	p11g_audit_visit_fn fn;
	void *arg;
};

static int foreach_raw(uint64_t seq, const char *text, size_t len, void *arg, p11g_err *err)
{
	struct foreach_ctx *c = arg;
	_cleanup_json_ json_t *rec = record_parse(text, len);
	if (!rec)
		return broken(err, "record %" PRIu64 ": not a JSON object (record altered)", seq);
	return c->fn(seq, rec, c->arg);
}

int p11g_txn_audit_foreach(p11g_txn *t, uint64_t since, p11g_audit_visit_fn fn, void *arg,
                           p11g_err *err)
{
	struct foreach_ctx c = {.fn = fn, .arg = arg};
	return p11g_store_audit_scan(t, since, foreach_raw, &c, err);
}

struct get_ctx {
	uint64_t want;
	json_t *rec;
	bool bad;
};

static int get_raw(uint64_t seq, const char *text, size_t len, void *arg, p11g_err *err)
{
	struct get_ctx *g = arg;
	(void)err;
	if (seq == g->want && !(g->rec = record_parse(text, len)))
		g->bad = true;
	return 1;
}

int p11g_txn_audit_get(p11g_txn *t, uint64_t seq, json_t **ret, p11g_err *err)
{
	struct get_ctx g = {.want = seq};
	if (seq == 0)
		return -ENOENT;
	if (p11g_store_audit_scan(t, seq - 1, get_raw, &g, err) < 0)
		return -1;
	if (g.bad)
		return broken(err, "record %" PRIu64 ": not a JSON object (record altered)", seq);
	if (!g.rec)
		return -ENOENT;
	*ret = g.rec;
	return 0;
}

struct verify_ctx {
	EVP_MD_CTX *md;
	p11g_audit_check_fn visit;
	void *arg;
	uint64_t upto;                           /* the last record to walk; 0: to the end */
	uint64_t expect;                         /* the seq the next key must carry */
	unsigned char prev[P11G_AUDIT_HASH_LEN]; /* hash of record expect - 1 */
};

static bool hex_hash(const json_t *rec, const char *name, unsigned char out[P11G_AUDIT_HASH_LEN])
{
	const char *hex = json_string_value(json_object_get(rec, name));
	return hex && strlen(hex) == HEX_LEN &&
	       p11g_hex_decode(hex, HEX_LEN, out, P11G_AUDIT_HASH_LEN) == P11G_AUDIT_HASH_LEN;
}

static int verify_raw(uint64_t key, const char *text, size_t len, void *arg, p11g_err *err)
{
	struct verify_ctx *v = arg;
	unsigned char prev[P11G_AUDIT_HASH_LEN], hash[P11G_AUDIT_HASH_LEN],
	    want[P11G_AUDIT_HASH_LEN];

	if (v->upto && key > v->upto)
		return 1;
	/* Keys arrive in ascending order, so a gap is a deletion and a key
	 * below the expected one can only be a record 0 that was never ours. */
	if (key > v->expect)
		return broken(err, "record %" PRIu64 ": missing (expected after %" PRIu64 ")",
		              v->expect, v->expect - 1);
	if (key < v->expect)
		return broken(err, "record %" PRIu64 ": not part of the chain (it starts at 1)",
		              key);

	_cleanup_json_ json_t *rec = record_parse(text, len);
	if (!rec)
		return broken(err, "record %" PRIu64 ": not a JSON object (record altered)", key);
	json_t *seq = json_object_get(rec, "seq");
	if (!json_is_integer(seq))
		return broken(err, "record %" PRIu64 ": no seq (record altered)", key);
	if (json_integer_value(seq) != (json_int_t)key)
		return broken(
		    err, "record %" PRIu64 ": out of order (holds seq %" JSON_INTEGER_FORMAT ")",
		    key, json_integer_value(seq));
	/* The record's own prev goes into its hash: a mismatch there is an
	 * edit of this record, a valid hash over the wrong prev is a broken
	 * link to the one before. */
	if (!hex_hash(rec, "prev", prev) || !hex_hash(rec, "hash", want))
		return broken(err, "record %" PRIu64 ": malformed prev or hash (record altered)",
		              key);
	if (record_hash(v->md, rec, prev, hash) < 0)
		return p11g_err_set(err, P11G_E_INTERNAL, "cannot hash audit record %" PRIu64, key);
	if (memcmp(hash, want, sizeof(hash)) != 0)
		return broken(err, "record %" PRIu64 ": hash mismatch (record altered)", key);
	if (memcmp(prev, v->prev, sizeof(prev)) != 0) {
		if (key == 1)
			return broken(err, "record 1: prev is not the start of the chain");
		return broken(err, "record %" PRIu64 ": prev does not match record %" PRIu64, key,
		              key - 1);
	}
	if (v->visit && v->visit(key, rec, v->arg, err) != 0)
		return -1;
	memcpy(v->prev, hash, sizeof(hash));
	v->expect++;
	return 0;
}

/* Record from->seq still carries from->hash. */
int p11g_txn_audit_check_mark(p11g_txn *t, const struct p11g_audit_mark *from, p11g_err *err)
{
	_cleanup_json_ json_t *rec = NULL;
	unsigned char have[P11G_AUDIT_HASH_LEN];
	int r = p11g_txn_audit_get(t, from->seq, &rec, err);
	if (r == -ENOENT)
		return broken(err, "record %" PRIu64 ": missing (verified before)", from->seq);
	if (r < 0)
		return -1;
	if (!hex_hash(rec, "hash", have) || memcmp(have, from->hash, sizeof(have)) != 0)
		return broken(err,
		              "record %" PRIu64 ": no longer the record verified before (the chain "
		              "up to it was rewritten)",
		              from->seq);
	return 0;
}

int p11g_txn_audit_head_seq(p11g_txn *t, uint64_t *ret, p11g_err *err)
{
	struct p11g_audit_head head;
	if (p11g_store_audit_head(t, &head, err) < 0)
		return -1;
	*ret = head.seq;
	return 0;
}

int p11g_txn_audit_verify_from(p11g_txn *t, const struct p11g_audit_mark *from,
                               p11g_audit_check_fn visit, void *arg,
                               struct p11g_audit_mark *ret_through, p11g_err *err)
{
	return p11g_txn_audit_verify_range(t, from, 0, visit, arg, ret_through, err);
}

int p11g_txn_audit_verify_range(p11g_txn *t, const struct p11g_audit_mark *from, uint64_t upto,
                                p11g_audit_check_fn visit, void *arg,
                                struct p11g_audit_mark *ret_through, p11g_err *err)
{
	struct p11g_audit_head head;
	_cleanup_md_ EVP_MD_CTX *md = EVP_MD_CTX_new();
	struct verify_ctx v = {.md = md, .visit = visit, .arg = arg, .expect = 1, .upto = upto};

	if (!md)
		return p11g_err_set(err, P11G_E_INTERNAL, "out of memory verifying the audit log");
	if (p11g_store_audit_head(t, &head, err) < 0)
		return -1;
	if (from && from->seq > 0) {
		if (head.seq < from->seq)
			return broken(err,
			              "chain head: records after %" PRIu64 " deleted (%" PRIu64
			              " were verified before)",
			              head.seq, from->seq);
		if (p11g_txn_audit_check_mark(t, from, err) < 0)
			return -1;
		v.expect = from->seq + 1;
		memcpy(v.prev, from->hash, sizeof(v.prev));
	}
	if (p11g_store_audit_scan(t, v.expect - 1, verify_raw, &v, err) < 0)
		return -1;

	/* The records agree with each other; the head says where they end. */
	uint64_t last = v.expect - 1;
	if (upto && upto < head.seq) {
		/* a part of the chain: the head is further on */
		if (last < upto)
			return broken(err,
			              "record %" PRIu64 ": missing (expected after %" PRIu64 ")",
			              last + 1, last);
		ret_through->seq = last;
		memcpy(ret_through->hash, v.prev, sizeof(v.prev));
		return 0;
	}
	if (!head.present && last > 0)
		return broken(err, "chain head: missing (records 1 to %" PRIu64 " present)", last);
	if (head.seq > last)
		return broken(err, "chain head: records after %" PRIu64 " deleted", last);
	if (head.seq < last)
		return broken(err,
		              "chain head: records after %" PRIu64 " were not appended through the "
		              "chain",
		              head.seq);
	if (memcmp(head.hash, v.prev, sizeof(v.prev)) != 0)
		return broken(err,
		              "record %" PRIu64 ": does not match the chain head (record altered)",
		              last);
	ret_through->seq = last;
	memcpy(ret_through->hash, v.prev, sizeof(v.prev));
	return 0;
}

int p11g_txn_audit_verify(p11g_txn *t, uint64_t *ret_count, p11g_err *err)
{
	struct p11g_audit_mark through;
	if (p11g_txn_audit_verify_from(t, NULL, NULL, NULL, &through, err) < 0)
		return -1;
	*ret_count = through.seq;
	return 0;
}
