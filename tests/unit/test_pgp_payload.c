/* Unit tests for pgp_payload.c: what approvald reads of the hashed data of an OpenPGP signature
 * it is asked to have made, that it reads exactly what ocisign's writer (openpgp.c) writes, and
 * what it refuses to read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "approvald/pgp_payload.h"
#include "openpgp.h"

#define CREATED 1700000000u /* 2023-11-14T22:13:20Z: the keys' creation time */
#define WHEN    1700000500u /* the signatures' */
#define NOW     1700001000  /* what approvald's clock says */
#define UID     "Release Signing <release@acme.example>"
#define DOC                                                                                        \
	"{\"critical\":{\"identity\":{\"docker-reference\":\"registry.example/app:1\"},"           \
	"\"image\":{\"docker-manifest-digest\":\"sha256:"                                          \
	"1111111111111111111111111111111111111111111111111111111111111111\"},"                     \
	"\"type\":\"atomic container signature\"},\"optional\":null}"

enum { K_RSA, K_P256, K_P384, K_ED, K_P256B, NKEYS };

static const struct {
	const char *alg, *param, *desc;
	uint8_t algo, hash;
} kinfo[NKEYS] = {
    [K_RSA] = {"RSA", "2048", "RSA 2048", 1, 8},
    [K_P256] = {"EC", "P-256", "ECDSA P-256", 19, 8},
    [K_P384] = {"EC", "P-384", "ECDSA P-384", 19, 9},
    [K_ED] = {"ED25519", NULL, "Ed25519", 22, 8},
    [K_P256B] = {"EC", "P-256", "ECDSA P-256", 19, 8}, /* a second key, for another's issuer */
};

static const unsigned char oid_p256[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const unsigned char oid_p384[] = {0x2b, 0x81, 0x04, 0x00, 0x22};
static const unsigned char oid_ed25519[] = {0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01};
static const unsigned char oid_secp256k1[] = {0x2b, 0x81, 0x04, 0x00, 0x0a};

static EVP_PKEY *pkeys[NKEYS];
static struct oci_pgp_key pgpk[NKEYS];

static EVP_PKEY *keygen(const char *alg, const char *param)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
	EVP_PKEY *pk = NULL;
	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
	if (param && !strcmp(alg, "EC"))
		assert_int_equal(EVP_PKEY_CTX_set_group_name(ctx, param), 1);
	if (param && !strcmp(alg, "RSA"))
		assert_int_equal(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, atoi(param)), 1);
	assert_int_equal(EVP_PKEY_generate(ctx, &pk), 1);
	EVP_PKEY_CTX_free(ctx);
	return pk;
}

static int setup(void **state)
{
	(void)state;
	for (int i = 0; i < NKEYS; i++) {
		p11g_err err;
		pkeys[i] = keygen(kinfo[i].alg, kinfo[i].param);
		if (oci_pgp_key_init(pkeys[i], CREATED, &pgpk[i], &err) < 0)
			fail_msg("oci_pgp_key_init (%s): %s", kinfo[i].desc, err.msg);
		assert_string_equal(pgpk[i].desc, kinfo[i].desc);
		assert_int_equal(pgpk[i].algo, kinfo[i].algo);
		assert_int_equal(pgpk[i].hash, kinfo[i].hash);
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < NKEYS; i++)
		EVP_PKEY_free(pkeys[i]);
	return 0;
}

/* --- the writer's bytes ------------------------------------------------------------------ */

/* What ocisign has the token sign: a certification of uid, or a binary document. */
static void writer_tbs(int key, uint8_t type, uint32_t when, const char *uid, struct oci_buf *b,
                       size_t *fields)
{
	p11g_err err;
	size_t f;
	if (oci_pgp_tbs(&pgpk[key], type, when, DOC, strlen(DOC), uid, b, &f, &err) < 0)
		fail_msg("oci_pgp_tbs: %s", err.msg);
	if (fields)
		*fields = f;
}

/* --- reading ----------------------------------------------------------------------------- */

static void accepted_(const unsigned char *p, size_t n, struct p11g_pgp_payload *pp,
                      const char *what, int line)
{
	char why[200] = "";
	if (p11g_pgp_payload_read(p, n, NOW, pp, why, sizeof(why)) != 0)
		fail_msg("line %d: %s was refused: %s", line, what, why);
	assert_true(p11g_pgp_payload_looks(p, n));
}
#define ACCEPTED(p, n, pp) accepted_(p, n, pp, #p, __LINE__)

/* Refused, with a reason, and (reason not NULL) for that reason. */
static void refused_(const unsigned char *p, size_t n, const char *reason, const char *what,
                     int line)
{
	struct p11g_pgp_payload pp;
	char why[200] = "";
	memset(&pp, 0x5a, sizeof(pp));
	int r = p11g_pgp_payload_read(p, n, NOW, &pp, why, sizeof(why));
	if (r == 0) {
		p11g_pgp_payload_clear(&pp);
		fail_msg("line %d: %s (%zu bytes) was read", line, what, n);
	}
	if (r != -1)
		fail_msg("line %d: %s: returned %d", line, what, r);
	if (!why[0])
		fail_msg("line %d: %s refused without a reason", line, what);
	if (reason && !strstr(why, reason))
		fail_msg("line %d: %s refused as \"%s\", not for \"%s\"", line, what, why, reason);
	assert_null(pp.certification);
}
#define REFUSED(p, n, reason) refused_(p, n, reason, #p, __LINE__)

static void hex_of(const unsigned char *h, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", h[i]);
}

/* The digest the gate binds the signature to, recomputed here without either side's code. */
static void independent_digest(const unsigned char *p, size_t n, int key, char *out)
{
	unsigned char h[64], hh[32];
	unsigned hl = 0;
	const EVP_MD *md = kinfo[key].hash == 9 ? EVP_sha384() : EVP_sha256();
	assert_int_equal(EVP_Digest(p, n, h, &hl, md, NULL), 1);
	if (kinfo[key].algo == 22) {
		assert_int_equal(EVP_Digest(h, hl, hh, NULL, EVP_sha256(), NULL), 1);
		strcpy(out, "sha256:");
		hex_of(hh, 32, out + 7);
	} else {
		strcpy(out, kinfo[key].hash == 9 ? "sha384:" : "sha256:");
		hex_of(h, hl, out + 7);
	}
}

static const char *str(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	if (!s)
		fail_msg("no string \"%s\"", k);
	return s;
}

/* --- 1. round trips ---------------------------------------------------------------------- */

static void test_round_trip(void **state)
{
	(void)state;
	for (int i = 0; i < NKEYS; i++) {
		struct oci_buf b;
		struct p11g_pgp_payload pp;
		char fpr[OCI_PGP_FPR_HEX], want[P11G_PGP_DIGEST_MAX], mine[P11G_PGP_DIGEST_MAX];
		p11g_pgp_fingerprint_hex(pgpk[i].fpr, fpr);

		/* the self-certification of a user ID */
		writer_tbs(i, P11G_PGP_SIG_POSITIVE_CERT, WHEN, UID, &b, NULL);
		ACCEPTED(b.data, b.len, &pp);
		assert_int_equal(pp.type, 0x13);
		assert_int_equal(pp.algo, kinfo[i].algo);
		assert_int_equal(pp.hash, kinfo[i].hash);
		assert_int_equal(pp.when, WHEN);
		assert_string_equal(pp.issuer, fpr);
		assert_int_equal(pp.doc_len, 0);
		assert_non_null(pp.certification);
		assert_int_equal(json_object_size(pp.certification), 4);
		assert_string_equal(str(pp.certification, "user_id"), UID);
		assert_string_equal(str(pp.certification, "fingerprint"), fpr);
		assert_string_equal(str(pp.certification, "key"), kinfo[i].desc);
		assert_string_equal(str(pp.certification, "created"), "2023-11-14T22:13:20Z");
		assert_true(p11g_pgp_use_digest(pgpk[i].algo, pgpk[i].hash, b.data, b.len, want));
		assert_string_equal(pp.use_digest, want);
		independent_digest(b.data, b.len, i, mine);
		assert_string_equal(pp.use_digest, mine);
		assert_int_equal(strlen(pp.use_digest), 7 + (kinfo[i].hash == 9 ? 96 : 64));
		p11g_pgp_payload_clear(&pp);
		assert_null(pp.certification);
		p11g_pgp_payload_clear(&pp); /* twice is harmless */
		oci_buf_free(&b);

		/* a binary document: the claim, left to the caller */
		writer_tbs(i, P11G_PGP_SIG_BINARY, WHEN, NULL, &b, NULL);
		ACCEPTED(b.data, b.len, &pp);
		assert_int_equal(pp.type, 0x00);
		assert_int_equal(pp.algo, kinfo[i].algo);
		assert_int_equal(pp.hash, kinfo[i].hash);
		assert_int_equal(pp.when, WHEN);
		assert_string_equal(pp.issuer, fpr);
		assert_int_equal(pp.doc_len, strlen(DOC));
		assert_memory_equal(b.data, DOC, pp.doc_len);
		assert_null(pp.certification);
		assert_true(p11g_pgp_use_digest(pgpk[i].algo, pgpk[i].hash, b.data, b.len, want));
		assert_string_equal(pp.use_digest, want);
		independent_digest(b.data, b.len, i, mine);
		assert_string_equal(pp.use_digest, mine);
		p11g_pgp_payload_clear(&pp);
		oci_buf_free(&b);
	}
}

/* An empty document is a document; user IDs of other scripts, and of 256 bytes, are read. */
static void test_round_trip_edges(void **state)
{
	(void)state;
	struct oci_buf b;
	struct p11g_pgp_payload pp;
	p11g_err err;
	size_t f;

	assert_int_equal(
	    oci_pgp_tbs(&pgpk[K_ED], P11G_PGP_SIG_BINARY, WHEN, "", 0, NULL, &b, &f, &err), 0);
	assert_int_equal(f, 0);
	ACCEPTED(b.data, b.len, &pp);
	assert_int_equal(pp.doc_len, 0);
	p11g_pgp_payload_clear(&pp);
	oci_buf_free(&b);

	static const char *const uids[] = {"Jürgen Müller <jm@beispiel.de>",
	                                   "署名 <sig@example.jp>"};
	for (size_t i = 0; i < sizeof(uids) / sizeof(uids[0]); i++) {
		writer_tbs(K_P256, P11G_PGP_SIG_POSITIVE_CERT, WHEN, uids[i], &b, NULL);
		ACCEPTED(b.data, b.len, &pp);
		assert_string_equal(str(pp.certification, "user_id"), uids[i]);
		p11g_pgp_payload_clear(&pp);
		oci_buf_free(&b);
	}
	char uid[257];
	memset(uid, 'a', 256);
	uid[256] = '\0';
	writer_tbs(K_RSA, P11G_PGP_SIG_POSITIVE_CERT, WHEN, uid, &b, NULL);
	ACCEPTED(b.data, b.len, &pp);
	assert_int_equal(strlen(str(pp.certification, "user_id")), 256);
	p11g_pgp_payload_clear(&pp);
	oci_buf_free(&b);
}

/* --- hashed data built here, part by part ------------------------------------------------ */

struct bld {
	unsigned char b[4096];
	size_t n;
};

static void add(struct bld *b, const void *p, size_t n)
{
	assert_true(b->n + n <= sizeof(b->b));
	memcpy(b->b + b->n, p, n);
	b->n += n;
}

static void add_byte(struct bld *b, unsigned c)
{
	unsigned char x = (unsigned char)c;
	add(b, &x, 1);
}

static void add_be(struct bld *b, uint32_t v, int n)
{
	for (int i = n - 1; i >= 0; i--)
		add_byte(b, (v >> (8 * i)) & 0xff);
}

/* An MPI with the bit count given, whatever the bytes. */
static void add_mpi_bits(struct bld *b, unsigned bits, const unsigned char *p, size_t n)
{
	add_be(b, bits, 2);
	add(b, p, n);
}

/* An MPI of bytes that start with a non-zero one, with its minimal bit count. */
static unsigned mpi_bits(const unsigned char *p, size_t n)
{
	unsigned bits = (unsigned)n * 8;
	assert_true(n > 0 && p[0] != 0);
	for (unsigned char top = p[0]; !(top & 0x80); top <<= 1)
		bits--;
	return bits;
}

static void add_mpi(struct bld *b, const unsigned char *p, size_t n)
{
	add_mpi_bits(b, mpi_bits(p, n), p, n);
}

/* One hashed subpacket, its length in one octet or two. */
static void sp(struct bld *s, unsigned type, const void *d, size_t dl)
{
	size_t len = dl + 1;
	if (len < 192) {
		add_byte(s, (unsigned)len);
	} else {
		assert_true(len < 8384);
		add_byte(s, (unsigned)(((len - 192) >> 8) + 192));
		add_byte(s, (unsigned)((len - 192) & 0xff));
	}
	add_byte(s, type);
	add(s, d, dl);
}

static void sp_time(struct bld *s, uint32_t when)
{
	unsigned char t[4] = {(unsigned char)(when >> 24), (unsigned char)(when >> 16),
	                      (unsigned char)(when >> 8), (unsigned char)when};
	sp(s, 2, t, 4);
}

static void sp_fpr(struct bld *s, const unsigned char fpr[20])
{
	unsigned char d[21] = {4};
	memcpy(d + 1, fpr, 20);
	sp(s, 33, d, 21);
}

/* What a certification has besides: key flags, preferred hashes and ciphers, features. */
static void sp_cert(struct bld *s)
{
	sp(s, 27, "\x03", 1);
	sp(s, 21, "\x08\x09\x0a", 3);
	sp(s, 11, "\x09\x08\x07", 3);
	sp(s, 30, "\x01", 1);
}

/* The hashed data: data, the hashed fields around subs, and the trailer counting them. */
static void hashed(struct bld *out, const void *data, size_t dl, unsigned type, unsigned algo,
                   unsigned hash, const struct bld *subs)
{
	out->n = 0;
	add(out, data, dl);
	add_byte(out, 4);
	add_byte(out, type);
	add_byte(out, algo);
	add_byte(out, hash);
	add_be(out, (uint32_t)subs->n, 2);
	add(out, subs->b, subs->n);
	add_byte(out, 4);
	add_byte(out, 0xff);
	add_be(out, (uint32_t)(6 + subs->n), 4);
}

/* A binary document's, with the usual subpackets by key (the time given). */
static void doc_hashed(struct bld *out, int key, uint32_t when)
{
	struct bld subs = {.n = 0};
	sp_time(&subs, when);
	sp_fpr(&subs, pgpk[key].fpr);
	hashed(out, DOC, strlen(DOC), 0x00, kinfo[key].algo, kinfo[key].hash, &subs);
}

static void fpr_of(const struct bld *body, unsigned char fpr[20])
{
	unsigned char pre[3] = {0x99, (body->n >> 8) & 0xff, body->n & 0xff};
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	assert_non_null(c);
	assert_int_equal(EVP_DigestInit_ex(c, EVP_sha1(), NULL), 1);
	assert_int_equal(EVP_DigestUpdate(c, pre, 3), 1);
	assert_int_equal(EVP_DigestUpdate(c, body->b, body->n), 1);
	assert_int_equal(EVP_DigestFinal_ex(c, fpr, NULL), 1);
	EVP_MD_CTX_free(c);
}

/* A certification of the key body and user ID at `when`, issued by fpr (NULL: the body's own),
 * signed with algo and hash. */
static void cert_hashed(struct bld *out, const struct bld *body, const void *uid, size_t ul,
                        unsigned algo, unsigned hash, uint32_t when, const unsigned char *fpr)
{
	struct bld data = {.n = 0}, subs = {.n = 0};
	unsigned char own[20];
	add_byte(&data, 0x99);
	add_be(&data, (uint32_t)body->n, 2);
	add(&data, body->b, body->n);
	add_byte(&data, 0xb4);
	add_be(&data, (uint32_t)ul, 4);
	add(&data, uid, ul);
	if (!fpr) {
		fpr_of(body, own);
		fpr = own;
	}
	sp_time(&subs, when);
	sp_fpr(&subs, fpr);
	sp_cert(&subs);
	hashed(out, data.b, data.n, 0x13, algo, hash, &subs);
}

static size_t bn_bytes(EVP_PKEY *pk, const char *param, unsigned char *out)
{
	BIGNUM *bn = NULL;
	assert_int_equal(EVP_PKEY_get_bn_param(pk, param, &bn), 1);
	assert_true(BN_num_bytes(bn) <= 1024);
	int n = BN_bn2bin(bn, out);
	BN_free(bn);
	assert_true(n > 0);
	return (size_t)n;
}

static void body_start(struct bld *b, uint32_t created, unsigned algo)
{
	b->n = 0;
	add_byte(b, 4);
	add_be(b, created, 4);
	add_byte(b, algo);
}

/* A key's public point as written: EC uncompressed, Ed25519 after GnuPG's 0x40. */
static size_t point_of(EVP_PKEY *pk, unsigned char pt[200])
{
	size_t n = 0;
	if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519) {
		n = 32;
		pt[0] = 0x40;
		assert_int_equal(EVP_PKEY_get_raw_public_key(pk, pt + 1, &n), 1);
		return n + 1;
	}
	assert_int_equal(EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, pt, 200, &n),
	                 1);
	assert_int_equal(pt[0], 0x04);
	return n;
}

/* The public key packet's body of one of the keys, as OpenPGP has it. */
static void key_body(struct bld *b, EVP_PKEY *pk, unsigned algo, uint32_t created)
{
	unsigned char x[1024];
	size_t xl;
	body_start(b, created, algo);
	if (algo == 1) {
		xl = bn_bytes(pk, OSSL_PKEY_PARAM_RSA_N, x);
		add_mpi(b, x, xl);
		xl = bn_bytes(pk, OSSL_PKEY_PARAM_RSA_E, x);
		add_mpi(b, x, xl);
		return;
	}
	xl = point_of(pk, x);
	if (algo == 22) {
		add_byte(b, sizeof(oid_ed25519));
		add(b, oid_ed25519, sizeof(oid_ed25519));
	} else if (xl == 65) {
		add_byte(b, sizeof(oid_p256));
		add(b, oid_p256, sizeof(oid_p256));
	} else {
		add_byte(b, sizeof(oid_p384));
		add(b, oid_p384, sizeof(oid_p384));
	}
	add_mpi(b, x, xl);
}

/* The parts above make the writer's bytes, so what they build wrong is wrong in that one way. */
static void test_builder_is_the_writer(void **state)
{
	(void)state;
	for (int i = 0; i < NKEYS; i++) {
		struct oci_buf b;
		struct bld body, mine;
		unsigned char fpr[20];
		key_body(&body, pkeys[i], kinfo[i].algo, CREATED);
		assert_int_equal(body.n, pgpk[i].body_len);
		assert_memory_equal(body.b, pgpk[i].body, body.n);
		fpr_of(&body, fpr);
		assert_memory_equal(fpr, pgpk[i].fpr, 20);

		writer_tbs(i, P11G_PGP_SIG_POSITIVE_CERT, WHEN, UID, &b, NULL);
		cert_hashed(&mine, &body, UID, strlen(UID), kinfo[i].algo, kinfo[i].hash, WHEN,
		            NULL);
		assert_int_equal(mine.n, b.len);
		assert_memory_equal(mine.b, b.data, b.len);
		oci_buf_free(&b);

		writer_tbs(i, P11G_PGP_SIG_BINARY, WHEN, NULL, &b, NULL);
		doc_hashed(&mine, i, WHEN);
		assert_int_equal(mine.n, b.len);
		assert_memory_equal(mine.b, b.data, b.len);
		oci_buf_free(&b);
	}
}

/* --- 2. refusals ------------------------------------------------------------------------- */

/* Every prefix of what the writer writes is refused, with a reason, and never read past. */
static void test_truncated(void **state)
{
	(void)state;
	for (int i = 0; i < NKEYS; i++) {
		for (int c = 0; c < 2; c++) {
			struct oci_buf b;
			writer_tbs(i, c ? P11G_PGP_SIG_POSITIVE_CERT : P11G_PGP_SIG_BINARY, WHEN,
			           UID, &b, NULL);
			for (size_t k = 0; k < b.len; k++) {
				/* a copy of exactly k bytes, so that ASan sees a read past them */
				unsigned char *p = malloc(k ? k : 1);
				assert_non_null(p);
				memcpy(p, b.data, k);
				refused_(p, k, NULL, kinfo[i].desc, __LINE__);
				free(p);
			}
			oci_buf_free(&b);
		}
	}
}

static void test_trailer(void **state)
{
	(void)state;
	struct oci_buf b;
	size_t fields;
	for (int c = 0; c < 2; c++) {
		writer_tbs(K_RSA, c ? P11G_PGP_SIG_POSITIVE_CERT : P11G_PGP_SIG_BINARY, WHEN, UID,
		           &b, &fields);
		unsigned char *p = malloc(b.len + 1);
		size_t n = b.len;
		assert_non_null(p);
		/* one flipped byte in the trailer's length, each of its four */
		for (size_t k = n - 4; k < n; k++) {
			memcpy(p, b.data, n);
			p[k] ^= 0x01;
			REFUSED(p, n, NULL);
			memcpy(p, b.data, n);
			p[k] ^= 0x80;
			REFUSED(p, n, NULL);
		}
		/* the trailer's version and marker */
		memcpy(p, b.data, n);
		p[n - 6] = 3;
		REFUSED(p, n, "not the hashed data");
		assert_false(p11g_pgp_payload_looks(p, n));
		memcpy(p, b.data, n);
		p[n - 5] = 0xfe;
		REFUSED(p, n, "not the hashed data");
		/* the hashed fields' version */
		memcpy(p, b.data, n);
		p[fields] = 3;
		REFUSED(p, n, "not the hashed data");
		/* a byte after it */
		memcpy(p, b.data, n);
		p[n] = 0;
		REFUSED(p, n + 1, NULL);
		p[n] = 4;
		REFUSED(p, n + 1, NULL);
		/* the hashed subpackets' count one more or one less than the trailer's */
		memcpy(p, b.data, n);
		p[fields + 5]++;
		REFUSED(p, n, "do not fill");
		memcpy(p, b.data, n);
		p[fields + 5]--;
		REFUSED(p, n, "do not fill");
		/* unchanged, it is read */
		struct p11g_pgp_payload pp;
		memcpy(p, b.data, n);
		ACCEPTED(p, n, &pp);
		p11g_pgp_payload_clear(&pp);
		free(p);
		oci_buf_free(&b);
	}
}

/* The signature's type and algorithms, patched in the writer's bytes. */
static void test_signature_fields(void **state)
{
	(void)state;
	struct oci_buf doc, cert, ed;
	size_t fd, fc, fe;
	writer_tbs(K_RSA, P11G_PGP_SIG_BINARY, WHEN, NULL, &doc, &fd);
	writer_tbs(K_P256, P11G_PGP_SIG_POSITIVE_CERT, WHEN, UID, &cert, &fc);
	writer_tbs(K_ED, P11G_PGP_SIG_BINARY, WHEN, NULL, &ed, &fe);
	unsigned char *d = doc.data, *c = cert.data, *e = ed.data;

	/* type: text (0x01), subkey binding (0x18), a standalone or timestamp signature */
	static const unsigned char bad_types[] = {0x01, 0x02, 0x18, 0x1f, 0x20, 0x30, 0x40, 0xff};
	for (size_t i = 0; i < sizeof(bad_types); i++) {
		d[fd + 1] = bad_types[i];
		REFUSED(d, doc.len, "signature type");
		c[fc + 1] = bad_types[i];
		REFUSED(c, cert.len, "signature type");
	}
	d[fd + 1] = 0x00;
	/* 0x10..0x12: the other certifications are read as such */
	for (unsigned t = 0x10; t <= 0x13; t++) {
		struct p11g_pgp_payload pp;
		c[fc + 1] = (unsigned char)t;
		ACCEPTED(c, cert.len, &pp);
		assert_int_equal(pp.type, t);
		assert_non_null(pp.certification);
		p11g_pgp_payload_clear(&pp);
	}
	/* a binary document is never a certification: 0x10 over a document */
	d[fd + 1] = 0x10;
	REFUSED(d, doc.len, "certification");
	d[fd + 1] = 0x00;

	/* hash: SHA-1 (2), SHA-224 (11), SHA-512 (10), MD5 (1) */
	static const unsigned char bad_hashes[] = {1, 2, 3, 10, 11, 0, 255};
	for (size_t i = 0; i < sizeof(bad_hashes); i++) {
		d[fd + 3] = bad_hashes[i];
		REFUSED(d, doc.len, "hash algorithm");
		c[fc + 3] = bad_hashes[i];
		REFUSED(c, cert.len, "hash algorithm");
	}
	d[fd + 3] = 8;
	c[fc + 3] = 8;
	/* public key algorithm: DSA (17), ElGamal (16), RSA sign-only (3), ECDH (18), 0 */
	static const unsigned char bad_algos[] = {17, 16, 3, 18, 0, 2, 20, 23, 255};
	for (size_t i = 0; i < sizeof(bad_algos); i++) {
		d[fd + 2] = bad_algos[i];
		REFUSED(d, doc.len, "public key algorithm");
		c[fc + 2] = bad_algos[i];
		REFUSED(c, cert.len, "public key algorithm");
	}
	d[fd + 2] = 1;
	c[fc + 2] = 19;
	/* EdDSA signs SHA-256 here, nothing else */
	e[fe + 3] = 9;
	REFUSED(e, ed.len, "EdDSA");
	e[fe + 3] = 8;
	/* a certification whose signature's algorithm is not its key's */
	c[fc + 2] = 1;
	REFUSED(c, cert.len, "the key's algorithm");
	c[fc + 2] = 22;
	REFUSED(c, cert.len, "the key's algorithm");
	c[fc + 2] = 19;

	/* restored, all three are read */
	struct p11g_pgp_payload pp;
	ACCEPTED(d, doc.len, &pp);
	p11g_pgp_payload_clear(&pp);
	ACCEPTED(e, ed.len, &pp);
	p11g_pgp_payload_clear(&pp);
	ACCEPTED(c, cert.len, &pp);
	p11g_pgp_payload_clear(&pp);
	oci_buf_free(&doc);
	oci_buf_free(&cert);
	oci_buf_free(&ed);
}

/* Hashed subpackets, built here around the writer's document. */
static void test_subpackets(void **state)
{
	(void)state;
	const unsigned char *fpr = pgpk[K_RSA].fpr;
	struct bld subs, out;
	struct p11g_pgp_payload pp;
#define DOC_WITH(subs) hashed(&out, DOC, strlen(DOC), 0x00, 1, 8, &(subs))
#define RESET()        subs.n = 0

	/* the control: time and issuer */
	RESET();
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	DOC_WITH(subs);
	ACCEPTED(out.b, out.n, &pp);
	p11g_pgp_payload_clear(&pp);
	/* in the other order, or marked critical, the same */
	RESET();
	sp_fpr(&subs, fpr);
	sp_time(&subs, WHEN);
	DOC_WITH(subs);
	ACCEPTED(out.b, out.n, &pp);
	assert_int_equal(pp.when, WHEN);
	p11g_pgp_payload_clear(&pp);
	RESET();
	sp_time(&subs, WHEN);
	subs.b[1] |= 0x80;
	sp_fpr(&subs, fpr);
	DOC_WITH(subs);
	ACCEPTED(out.b, out.n, &pp);
	p11g_pgp_payload_clear(&pp);

	/* notation data (20): what approvers would not see */
	RESET();
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	sp(&subs, 20,
	   "\x80\0\0\0\0\x01\0\x01"
	   "ab",
	   10);
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "subpacket 20");
	/* and others: the issuer's key ID (16, ocisign puts it unhashed), an embedded signature
	 * (32), a policy URI (26), signature expiry (3), 31, 34, 0, 127 */
	static const unsigned other[] = {16, 32, 26, 3, 31, 34, 0, 127, 9, 25};
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
		RESET();
		sp_time(&subs, WHEN);
		sp_fpr(&subs, fpr);
		sp(&subs, other[i], "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
		DOC_WITH(subs);
		REFUSED(out.b, out.n, "subpacket");
	}

	/* each once */
	RESET();
	sp_time(&subs, WHEN);
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "twice");
	RESET();
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	sp_fpr(&subs, fpr);
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "twice");

	/* both there */
	RESET();
	sp_fpr(&subs, fpr);
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "no creation time");
	RESET();
	sp_time(&subs, WHEN);
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "no issuer fingerprint");
	RESET();
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "no creation time");

	/* of their sizes: a 3- or 5-byte time, a v5 or short fingerprint */
	RESET();
	sp(&subs, 2, "\x65\x53\xf3", 3);
	sp_fpr(&subs, fpr);
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "subpacket 2");
	RESET();
	sp(&subs, 2, "\0\x65\x53\xf3\x00", 5);
	sp_fpr(&subs, fpr);
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "subpacket 2");
	{
		unsigned char v5[33] = {5};
		memcpy(v5 + 1, fpr, 20);
		RESET();
		sp_time(&subs, WHEN);
		sp(&subs, 33, v5, 21);
		DOC_WITH(subs);
		REFUSED(out.b, out.n, "subpacket 33");
		RESET();
		sp_time(&subs, WHEN);
		sp(&subs, 33, v5, 33); /* a v5 fingerprint is 32 bytes */
		DOC_WITH(subs);
		REFUSED(out.b, out.n, "subpacket 33");
		v5[0] = 4;
		RESET();
		sp_time(&subs, WHEN);
		sp(&subs, 33, v5, 20);
		DOC_WITH(subs);
		REFUSED(out.b, out.n, "subpacket 33");
	}

	/* a subpacket's length running past the area, in each of its three forms */
	RESET();
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	subs.b[6]++; /* the fingerprint's one-byte length: 23 for 22 */
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "longer than the hashed area");
	RESET();
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	add_byte(&subs, 192); /* a two-byte length, cut */
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "truncated subpacket length");
	RESET();
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	add(&subs, "\xff\x00\x00\x00", 4); /* a five-byte length, cut */
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "truncated subpacket length");
	RESET();
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	add(&subs, "\xff\xff\xff\xff\xff\x02", 6); /* 4 GiB */
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "longer than the hashed area");
	RESET();
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	add(&subs, "\xc0\xff\x02", 3); /* 447 bytes, in two */
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "longer than the hashed area");
	RESET();
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	add_byte(&subs, 0); /* no type */
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "longer than the hashed area");
	/* the longer length forms, in bounds: a 192-byte fingerprint in two bytes' length is the
	 * wrong size; a time in five bytes' length is a time */
	RESET();
	sp_time(&subs, WHEN);
	add(&subs, "\xc0\x00\x21", 3);
	for (int i = 0; i < 191; i++)
		add_byte(&subs, 4);
	DOC_WITH(subs);
	REFUSED(out.b, out.n, "subpacket 33");
	RESET();
	add(&subs, "\xff\x00\x00\x00\x05\x02", 6);
	add_be(&subs, WHEN, 4);
	sp_fpr(&subs, fpr);
	DOC_WITH(subs);
	ACCEPTED(out.b, out.n, &pp);
	assert_int_equal(pp.when, WHEN);
	p11g_pgp_payload_clear(&pp);

	/* a certification's subpackets in a binary document's signature */
	static const unsigned cert_only[] = {27, 21, 11, 22, 30};
	for (size_t i = 0; i < sizeof(cert_only) / sizeof(cert_only[0]); i++) {
		RESET();
		sp_time(&subs, WHEN);
		sp_fpr(&subs, fpr);
		sp(&subs, cert_only[i], "\x03", 1);
		DOC_WITH(subs);
		REFUSED(out.b, out.n, "subpacket");
	}
	/* and in a certification, of sizes no writer gives them */
	struct bld body;
	key_body(&body, pkeys[K_RSA], 1, CREATED);
	struct bld data = {.n = 0};
	add_byte(&data, 0x99);
	add_be(&data, (uint32_t)body.n, 2);
	add(&data, body.b, body.n);
	add_byte(&data, 0xb4);
	add_be(&data, (uint32_t)strlen(UID), 4);
	add(&data, UID, strlen(UID));
	static const struct {
		unsigned type;
		size_t len;
		bool ok;
	} sized[] = {{27, 0, false},  {27, 4, false}, {27, 5, false},  {30, 0, false},
	             {30, 1, true},   {21, 16, true}, {21, 17, false}, {11, 0, true},
	             {22, 17, false}, {22, 2, true}};
	for (size_t i = 0; i < sizeof(sized) / sizeof(sized[0]); i++) {
		unsigned char z[20];
		memset(z, 1, sizeof(z));
		RESET();
		sp_time(&subs, WHEN);
		sp_fpr(&subs, fpr);
		sp(&subs, sized[i].type, z, sized[i].len);
		hashed(&out, data.b, data.n, 0x13, 1, 8, &subs);
		if (sized[i].ok) {
			ACCEPTED(out.b, out.n, &pp);
			assert_non_null(pp.certification);
			p11g_pgp_payload_clear(&pp);
		} else {
			REFUSED(out.b, out.n, "subpacket");
		}
	}
	/* the control: a certification with all of them once, then one twice */
	RESET();
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	sp_cert(&subs);
	hashed(&out, data.b, data.n, 0x13, 1, 8, &subs);
	ACCEPTED(out.b, out.n, &pp);
	p11g_pgp_payload_clear(&pp);
	sp(&subs, 27, "\x01", 1);
	hashed(&out, data.b, data.n, 0x13, 1, 8, &subs);
	REFUSED(out.b, out.n, "twice");
	/* key flags are sign and certify (0x03), nothing more or less: approvers see none */
	static const char *const flags[] = {"\x01", "\x02", "\x07", "\x0f", "\x23"};
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		RESET();
		sp_time(&subs, WHEN);
		sp_fpr(&subs, fpr);
		sp(&subs, 27, flags[i], 1);
		hashed(&out, data.b, data.n, 0x13, 1, 8, &subs);
		REFUSED(out.b, out.n, "subpacket 27");
	}
	RESET();
	sp_time(&subs, WHEN);
	sp_fpr(&subs, fpr);
	sp(&subs, 27, "\x03", 1);
	hashed(&out, data.b, data.n, 0x13, 1, 8, &subs);
	ACCEPTED(out.b, out.n, &pp);
	p11g_pgp_payload_clear(&pp);
#undef DOC_WITH
#undef RESET
}

static void test_times(void **state)
{
	(void)state;
	struct oci_buf b;
	struct p11g_pgp_payload pp;
	/* up to ten minutes ahead of approvald's clock */
	for (int c = 0; c < 2; c++) {
		uint8_t type = c ? P11G_PGP_SIG_POSITIVE_CERT : P11G_PGP_SIG_BINARY;
		writer_tbs(K_P384, type, NOW + 600, UID, &b, NULL);
		ACCEPTED(b.data, b.len, &pp);
		assert_int_equal(pp.when, NOW + 600);
		p11g_pgp_payload_clear(&pp);
		oci_buf_free(&b);
		writer_tbs(K_P384, type, NOW + 601, UID, &b, NULL);
		REFUSED(b.data, b.len, "future");
		oci_buf_free(&b);
		writer_tbs(K_P384, type, UINT32_MAX, UID, &b, NULL);
		REFUSED(b.data, b.len, "future");
		oci_buf_free(&b);
	}
	/* a certification as old as its key, not older */
	writer_tbs(K_ED, P11G_PGP_SIG_POSITIVE_CERT, CREATED, UID, &b, NULL);
	ACCEPTED(b.data, b.len, &pp);
	p11g_pgp_payload_clear(&pp);
	oci_buf_free(&b);
	writer_tbs(K_ED, P11G_PGP_SIG_POSITIVE_CERT, CREATED - 1, UID, &b, NULL);
	REFUSED(b.data, b.len, "older than its key");
	oci_buf_free(&b);
	writer_tbs(K_RSA, P11G_PGP_SIG_POSITIVE_CERT, 1, UID, &b, NULL);
	REFUSED(b.data, b.len, "older than its key");
	oci_buf_free(&b);
	/* a document's signature is older than no key it names */
	writer_tbs(K_ED, P11G_PGP_SIG_BINARY, 1, NULL, &b, NULL);
	ACCEPTED(b.data, b.len, &pp);
	p11g_pgp_payload_clear(&pp);
	oci_buf_free(&b);
}

/* A self-certification, not another key's certification of this one. */
static void test_other_key(void **state)
{
	(void)state;
	struct oci_buf b;
	size_t fields;
	/* key B's certification, patched to name key A (same algorithm) as its issuer */
	writer_tbs(K_P256B, P11G_PGP_SIG_POSITIVE_CERT, WHEN, UID, &b, &fields);
	unsigned char *fp = b.data + fields + 6 + 6 + 3;
	assert_memory_equal(fp, pgpk[K_P256B].fpr, 20);
	memcpy(fp, pgpk[K_P256].fpr, 20);
	REFUSED(b.data, b.len, "another key");
	/* one bit of it */
	memcpy(fp, pgpk[K_P256B].fpr, 20);
	fp[19] ^= 1;
	REFUSED(b.data, b.len, "another key");
	oci_buf_free(&b);

	/* the same, built: key A's certification issued by key B's fingerprint */
	struct bld body, out;
	key_body(&body, pkeys[K_P256], 19, CREATED);
	cert_hashed(&out, &body, UID, strlen(UID), 19, 8, WHEN, pgpk[K_P256B].fpr);
	REFUSED(out.b, out.n, "another key");
	cert_hashed(&out, &body, UID, strlen(UID), 19, 8, WHEN, NULL);
	struct p11g_pgp_payload pp;
	ACCEPTED(out.b, out.n, &pp);
	p11g_pgp_payload_clear(&pp);
	/* an RSA key's certification under the Ed25519 key's fingerprint */
	key_body(&body, pkeys[K_RSA], 1, CREATED);
	cert_hashed(&out, &body, UID, strlen(UID), 1, 8, WHEN, pgpk[K_ED].fpr);
	REFUSED(out.b, out.n, "another key");
}

static void test_user_ids(void **state)
{
	(void)state;
	char long_uid[258];
	memset(long_uid, 'a', 257);
	long_uid[257] = '\0';
	static const char *const bad[] = {
	    "Release \x1b[31mSigning <r@acme.example>", /* an escape sequence */
	    "Release \xc3\x28 <r@acme.example>",        /* invalid UTF-8 */
	    "Release \xff <r@acme.example>",
	    "Release \xc0\xaf <r@acme.example>", /* overlong */
	    "Release\r\nSigning",
	    "Release \xe2\x80\xae gnisis", /* a right-to-left override */
	    "Release \x7f",
	    "Release \xc2\x85", /* NEL, a C1 control */
	    "",
	    NULL, /* 257 bytes */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct oci_buf b;
		writer_tbs(K_RSA, P11G_PGP_SIG_POSITIVE_CERT, WHEN, bad[i] ? bad[i] : long_uid, &b,
		           NULL);
		refused_(b.data, b.len, "user ID", bad[i] ? bad[i] : "257 bytes", __LINE__);
		oci_buf_free(&b);
	}
	/* a NUL in it (the writer takes C strings: built here) */
	struct bld body, out;
	key_body(&body, pkeys[K_ED], 22, CREATED);
	cert_hashed(&out, &body, "Release\0Signing", 15, 22, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "user ID");
	cert_hashed(&out, &body, "Release Signing", 15, 22, 8, WHEN, NULL);
	struct p11g_pgp_payload pp;
	ACCEPTED(out.b, out.n, &pp);
	p11g_pgp_payload_clear(&pp);
}

/* The certification's framing: the key packet's tag and length, the user ID's tag and length. */
static void test_certification_framing(void **state)
{
	(void)state;
	struct oci_buf b;
	size_t fields;
	writer_tbs(K_P256, P11G_PGP_SIG_POSITIVE_CERT, WHEN, UID, &b, &fields);
	unsigned char *p = b.data;
	size_t kl = pgpk[K_P256].body_len, ul = strlen(UID);
	assert_int_equal(fields, 3 + kl + 5 + ul);

	p[0] = 0x98; /* an old-format header */
	REFUSED(p, b.len, "start with the key");
	p[0] = 0x99;
	p[2]++;
	REFUSED(p, b.len, NULL);
	p[2] -= 2;
	REFUSED(p, b.len, NULL);
	p[2]++;
	p[1] = 0xff; /* past the data */
	REFUSED(p, b.len, "not followed by a user ID");
	p[1] = 0;
	p[3 + kl] = 0xd1; /* a user attribute, not an ID */
	REFUSED(p, b.len, "not followed by a user ID");
	p[3 + kl] = 0xb4;
	p[3 + kl + 4]--; /* a byte after the user ID */
	REFUSED(p, b.len, "bytes after its user ID");
	p[3 + kl + 4] += 2;
	REFUSED(p, b.len, "bytes after its user ID");
	p[3 + kl + 4]--;
	p[3 + kl + 1] = 0x80;
	REFUSED(p, b.len, "bytes after its user ID");
	p[3 + kl + 1] = 0;
	p[3] = 5; /* a v5 key */
	REFUSED(p, b.len, "version 4");
	p[3] = 4;
	struct p11g_pgp_payload pp;
	ACCEPTED(p, b.len, &pp);
	p11g_pgp_payload_clear(&pp);
	oci_buf_free(&b);

	/* less than a key before the hashed fields */
	struct bld subs = {.n = 0}, out;
	sp_time(&subs, WHEN);
	sp_fpr(&subs, pgpk[K_P256].fpr);
	hashed(&out, "", 0, 0x13, 19, 8, &subs);
	REFUSED(out.b, out.n, "start with the key");
	hashed(&out, "\x99\x00", 2, 0x13, 19, 8, &subs);
	REFUSED(out.b, out.n, "start with the key");
	hashed(&out, "\x99\x00\x00\xb4\x00\x00\x00\x00", 8, 0x13, 19, 8, &subs);
	REFUSED(out.b, out.n, NULL);
}

/* Keys built here: each wrong in one way, with its own fingerprint as the issuer. */
static void test_keys(void **state)
{
	(void)state;
	struct bld body, out;
	struct p11g_pgp_payload pp;
	unsigned char n[1024], e[1024], pt[200], z[1200];
	size_t nl, el, ptl;

	/* RSA of 1024 bits */
	EVP_PKEY *small = keygen("RSA", "1024");
	key_body(&body, small, 1, CREATED);
	cert_hashed(&out, &body, UID, strlen(UID), 1, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "1024 bits");
	EVP_PKEY_free(small);

	/* the sizes read: 2048 to 8192 bits (moduli made up here: only their size is read) */
	static const struct {
		unsigned bits;
		bool ok;
	} sizes[] = {{2047, false}, {2048, true}, {2049, true},  {4096, true},
	             {8191, true},  {8192, true}, {8193, false}, {9000, false}};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t len = (sizes[i].bits + 7) / 8;
		memset(z, 0xa5, len);
		z[0] = (unsigned char)(0xff >> ((8 - sizes[i].bits % 8) % 8));
		assert_int_equal(mpi_bits(z, len), sizes[i].bits);
		body_start(&body, CREATED, 1);
		add_mpi(&body, z, len);
		add_mpi(&body, (const unsigned char *)"\x01\x00\x01", 3);
		cert_hashed(&out, &body, UID, strlen(UID), 1, 8, WHEN, NULL);
		if (sizes[i].ok) {
			char want[16];
			snprintf(want, sizeof(want), "RSA %u", sizes[i].bits);
			ACCEPTED(out.b, out.n, &pp);
			assert_string_equal(str(pp.certification, "key"), want);
			p11g_pgp_payload_clear(&pp);
		} else {
			REFUSED(out.b, out.n, "bits");
		}
	}

	/* the RSA key's modulus as a non-minimal MPI */
	nl = bn_bytes(pkeys[K_RSA], OSSL_PKEY_PARAM_RSA_N, n);
	el = bn_bytes(pkeys[K_RSA], OSSL_PKEY_PARAM_RSA_E, e);
	assert_int_equal(mpi_bits(n, nl), 2048);
	z[0] = 0;
	memcpy(z + 1, n, nl);
	struct {
		unsigned bits;
		const unsigned char *p;
		size_t len;
		const char *what;
	} mpis[] = {
	    {2056, z, nl + 1, "a leading zero byte, counted"},
	    {2048, z, nl + 1, "a leading zero byte, not counted"},
	    {2047, n, nl, "a bit count one short"},
	    {2049, n, nl, "a bit count one over"},
	    {2041, n, nl, "a bit count a byte short"},
	    {0, n, nl, "a bit count of 0"},
	};
	for (size_t i = 0; i < sizeof(mpis) / sizeof(mpis[0]); i++) {
		body_start(&body, CREATED, 1);
		add_mpi_bits(&body, mpis[i].bits, mpis[i].p, mpis[i].len);
		add_mpi(&body, e, el);
		cert_hashed(&out, &body, UID, strlen(UID), 1, 8, WHEN, NULL);
		refused_(out.b, out.n, "RSA", mpis[i].what, __LINE__);
	}
	/* the exponent non-minimal, or missing, or followed by a byte */
	body_start(&body, CREATED, 1);
	add_mpi(&body, n, nl);
	add_mpi_bits(&body, 32, (const unsigned char *)"\x00\x01\x00\x01", 4);
	cert_hashed(&out, &body, UID, strlen(UID), 1, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "two minimal MPIs");
	body_start(&body, CREATED, 1);
	add_mpi(&body, n, nl);
	cert_hashed(&out, &body, UID, strlen(UID), 1, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "two minimal MPIs");
	/* an exponent of 0 bits (nothing after it but the user ID's tag) */
	body_start(&body, CREATED, 1);
	add_mpi(&body, n, nl);
	add_mpi_bits(&body, 0, (const unsigned char *)"", 0);
	cert_hashed(&out, &body, UID, strlen(UID), 1, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "two minimal MPIs");
	body_start(&body, CREATED, 1);
	add_mpi(&body, n, nl);
	add_mpi(&body, e, el);
	add_byte(&body, 0);
	cert_hashed(&out, &body, UID, strlen(UID), 1, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "two minimal MPIs");
	/* the control: built right, read */
	body_start(&body, CREATED, 1);
	add_mpi(&body, n, nl);
	add_mpi(&body, e, el);
	cert_hashed(&out, &body, UID, strlen(UID), 1, 8, WHEN, NULL);
	ACCEPTED(out.b, out.n, &pp);
	assert_string_equal(str(pp.certification, "key"), "RSA 2048");
	p11g_pgp_payload_clear(&pp);

	/* the P-256 key's point compressed (0x02 or 0x03 and x) */
	ptl = point_of(pkeys[K_P256], pt);
	assert_int_equal(ptl, 65);
	unsigned char comp[33];
	comp[0] = (unsigned char)(0x02 | (pt[64] & 1));
	memcpy(comp + 1, pt + 1, 32);
	body_start(&body, CREATED, 19);
	add_byte(&body, sizeof(oid_p256));
	add(&body, oid_p256, sizeof(oid_p256));
	add_mpi(&body, comp, sizeof(comp));
	cert_hashed(&out, &body, UID, strlen(UID), 19, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "uncompressed");
	/* 65 bytes that do not start 0x04 */
	pt[0] = 0x06;
	body_start(&body, CREATED, 19);
	add_byte(&body, sizeof(oid_p256));
	add(&body, oid_p256, sizeof(oid_p256));
	add_mpi(&body, pt, ptl);
	cert_hashed(&out, &body, UID, strlen(UID), 19, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "uncompressed");
	pt[0] = 0x04;
	/* a P-256 point under P-384's name, and under secp256k1's */
	body_start(&body, CREATED, 19);
	add_byte(&body, sizeof(oid_p384));
	add(&body, oid_p384, sizeof(oid_p384));
	add_mpi(&body, pt, ptl);
	cert_hashed(&out, &body, UID, strlen(UID), 19, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "ECDSA P-384");
	body_start(&body, CREATED, 19);
	add_byte(&body, sizeof(oid_secp256k1));
	add(&body, oid_secp256k1, sizeof(oid_secp256k1));
	add_mpi(&body, pt, ptl);
	cert_hashed(&out, &body, UID, strlen(UID), 19, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "curve");
	/* Ed25519's name under ECDSA; P-256's and P-384's under EdDSA, with points of their sizes
	 * in GnuPG's native form, so that only the curve is wrong */
	body_start(&body, CREATED, 19);
	add_byte(&body, sizeof(oid_ed25519));
	add(&body, oid_ed25519, sizeof(oid_ed25519));
	add_mpi(&body, pt, ptl);
	cert_hashed(&out, &body, UID, strlen(UID), 19, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "curve");
	for (int c = 0; c < 2; c++) {
		unsigned char native[97];
		memset(native, 0x5a, sizeof(native));
		native[0] = 0x40;
		body_start(&body, CREATED, 22);
		add_byte(&body, c ? sizeof(oid_p384) : sizeof(oid_p256));
		add(&body, c ? oid_p384 : oid_p256, c ? sizeof(oid_p384) : sizeof(oid_p256));
		add_mpi(&body, native, c ? 97 : 65);
		cert_hashed(&out, &body, UID, strlen(UID), 22, 8, WHEN, NULL);
		REFUSED(out.b, out.n, "curve");
	}
	/* a curve name cut short, and longer than the body */
	body_start(&body, CREATED, 19);
	add_byte(&body, 200);
	add(&body, oid_p256, sizeof(oid_p256));
	cert_hashed(&out, &body, UID, strlen(UID), 19, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "curve");
	body_start(&body, CREATED, 19);
	cert_hashed(&out, &body, UID, strlen(UID), 19, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "curve");
	/* the point followed by a byte, with a bit count one over */
	body_start(&body, CREATED, 19);
	add_byte(&body, sizeof(oid_p256));
	add(&body, oid_p256, sizeof(oid_p256));
	add_mpi(&body, pt, ptl);
	add_byte(&body, 0);
	cert_hashed(&out, &body, UID, strlen(UID), 19, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "uncompressed");
	body_start(&body, CREATED, 19);
	add_byte(&body, sizeof(oid_p256));
	add(&body, oid_p256, sizeof(oid_p256));
	add_mpi_bits(&body, 516, pt, ptl);
	cert_hashed(&out, &body, UID, strlen(UID), 19, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "uncompressed");

	/* Ed25519 without GnuPG's 0x40, and with its bit count rounded up */
	ptl = point_of(pkeys[K_ED], pt);
	assert_int_equal(ptl, 33);
	body_start(&body, CREATED, 22);
	add_byte(&body, sizeof(oid_ed25519));
	add(&body, oid_ed25519, sizeof(oid_ed25519));
	if (pt[1]) { /* the point's own first byte, minimal: one key in 256 starts with 0 */
		add_mpi(&body, pt + 1, 32);
		cert_hashed(&out, &body, UID, strlen(UID), 22, 8, WHEN, NULL);
		REFUSED(out.b, out.n, "Ed25519");
	}
	body_start(&body, CREATED, 22);
	add_byte(&body, sizeof(oid_ed25519));
	add(&body, oid_ed25519, sizeof(oid_ed25519));
	add_mpi_bits(&body, 264, pt, ptl);
	cert_hashed(&out, &body, UID, strlen(UID), 22, 8, WHEN, NULL);
	REFUSED(out.b, out.n, "Ed25519");
	/* the control */
	body_start(&body, CREATED, 22);
	add_byte(&body, sizeof(oid_ed25519));
	add(&body, oid_ed25519, sizeof(oid_ed25519));
	add_mpi_bits(&body, 263, pt, ptl);
	cert_hashed(&out, &body, UID, strlen(UID), 22, 8, WHEN, NULL);
	ACCEPTED(out.b, out.n, &pp);
	assert_string_equal(str(pp.certification, "key"), "Ed25519");
	p11g_pgp_payload_clear(&pp);
}

/* Whatever one flipped bit makes of a certification, it is a refusal with a reason or a read
 * whose digest is of the bytes given. */
static void test_flipped_bits(void **state)
{
	(void)state;
	for (int i = 0; i < NKEYS; i++) {
		struct oci_buf b;
		writer_tbs(i, P11G_PGP_SIG_POSITIVE_CERT, WHEN, UID, &b, NULL);
		size_t nread = 0;
		for (size_t k = 0; k < b.len * 8; k++) {
			struct p11g_pgp_payload pp;
			char why[200] = "", want[P11G_PGP_DIGEST_MAX];
			b.data[k / 8] ^= (unsigned char)(1u << (k % 8));
			if (p11g_pgp_payload_read(b.data, b.len, NOW, &pp, why, sizeof(why)) == 0) {
				nread++;
				assert_true(
				    p11g_pgp_use_digest(pp.algo, pp.hash, b.data, b.len, want));
				assert_string_equal(pp.use_digest, want);
				assert_int_equal(strlen(pp.issuer), 40);
				if (pp.type)
					assert_non_null(pp.certification);
				p11g_pgp_payload_clear(&pp);
			} else if (!why[0]) {
				fail_msg("bit %zu flipped: refused without a reason", k);
			}
			b.data[k / 8] ^= (unsigned char)(1u << (k % 8));
		}
		/* some flips are harmless (the user ID's letters, the signature's time), most are
		 * not: the key's bytes change its fingerprint */
		assert_true(nread > 0);
		assert_true(nread < b.len * 8 / 2);
		oci_buf_free(&b);
	}
}

/* --- 3. what looks like hashed data ------------------------------------------------------ */

static unsigned char *csr_tbs(size_t *ret_len)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *nm = X509_NAME_new();
	X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8, (const unsigned char *)"release", -1,
	                           -1, 0);
	X509_REQ_set_subject_name(req, nm);
	X509_REQ_set_pubkey(req, pkeys[K_P256]);
	unsigned char *tbs = NULL;
	int len = i2d_re_X509_REQ_tbs(req, &tbs);
	assert_true(len > 0);
	*ret_len = (size_t)len;
	X509_NAME_free(nm);
	X509_REQ_free(req);
	return tbs;
}

static void test_looks(void **state)
{
	(void)state;
	static const char cosign[] =
	    "{\"critical\":{\"identity\":{\"docker-reference\":\"registry.example/app\"},"
	    "\"image\":{\"docker-manifest-digest\":\"sha256:"
	    "1111111111111111111111111111111111111111111111111111111111111111\"},"
	    "\"type\":\"cosign container image signature\"},\"optional\":null}";
	assert_false(p11g_pgp_payload_looks((const unsigned char *)cosign, strlen(cosign)));
	REFUSED((const unsigned char *)cosign, strlen(cosign), "not the hashed data");
	size_t n;
	unsigned char *csr = csr_tbs(&n);
	assert_int_equal(csr[0], 0x30);
	assert_false(p11g_pgp_payload_looks(csr, n));
	REFUSED(csr, n, "not the hashed data");
	OPENSSL_free(csr);
	assert_false(p11g_pgp_payload_looks(NULL, 0));
	assert_false(p11g_pgp_payload_looks((const unsigned char *)"", 0));

	/* the smallest that looks: the fields and the trailer, no subpackets */
	static const unsigned char least[12] = {4, 0, 1, 8, 0, 0, 4, 0xff, 0, 0, 0, 6};
	assert_true(p11g_pgp_payload_looks(least, 12));
	REFUSED(least, 12, "no creation time");
	/* its last k bytes, for every k under 12, do not */
	for (size_t k = 0; k < 12; k++)
		assert_false(p11g_pgp_payload_looks(least + 12 - k, k));
	/* the trailer counting fewer than the six fields, or more than there is */
	unsigned char t[12];
	memcpy(t, least, 12);
	t[11] = 5;
	assert_false(p11g_pgp_payload_looks(t, 12));
	t[11] = 7;
	assert_false(p11g_pgp_payload_looks(t, 12));
	t[8] = 0x80, t[11] = 6;
	assert_false(p11g_pgp_payload_looks(t, 12));

	/* what the writer writes does */
	struct oci_buf b;
	for (int i = 0; i < NKEYS; i++) {
		writer_tbs(i, P11G_PGP_SIG_BINARY, WHEN, NULL, &b, NULL);
		assert_true(p11g_pgp_payload_looks(b.data, b.len));
		oci_buf_free(&b);
		writer_tbs(i, P11G_PGP_SIG_POSITIVE_CERT, WHEN, UID, &b, NULL);
		assert_true(p11g_pgp_payload_looks(b.data, b.len));
		oci_buf_free(&b);
	}
}

/* A refusal's reason fits whatever room it has: cut, NUL-terminated. */
static void test_why_room(void **state)
{
	(void)state;
	struct oci_buf b;
	size_t fields;
	writer_tbs(K_RSA, P11G_PGP_SIG_BINARY, WHEN, NULL, &b, &fields);
	b.data[fields + 2] = 17;
	char why[8];
	memset(why, 'x', sizeof(why));
	struct p11g_pgp_payload pp;
	assert_int_equal(p11g_pgp_payload_read(b.data, b.len, NOW, &pp, why, 5), -1);
	assert_int_equal(strlen(why), 4);
	assert_int_equal(why[5], 'x');
	oci_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_round_trip_edges),
	    cmocka_unit_test(test_builder_is_the_writer),
	    cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_trailer),
	    cmocka_unit_test(test_signature_fields),
	    cmocka_unit_test(test_subpackets),
	    cmocka_unit_test(test_times),
	    cmocka_unit_test(test_other_key),
	    cmocka_unit_test(test_user_ids),
	    cmocka_unit_test(test_certification_framing),
	    cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_flipped_bits),
	    cmocka_unit_test(test_looks),
	    cmocka_unit_test(test_why_room),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
