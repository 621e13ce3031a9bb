/* OpenPGP signatures' hashed data as approvald reads it (pgp_payload.h): read whole, strictly,
 * and only as far as ocisign writes it; anything else is refused with a reason. */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <time.h>

#include "approvald/pgp_payload.h"
#include "approvald/textsafe.h"

#define UID_MAX 256

/* whether the ol bytes at oid are the curve OID (a string literal) */
#define OID_IS(oid, ol, lit) ((ol) == sizeof(lit) - 1 && !memcmp((oid), (lit), (ol)))

static uint32_t be(const unsigned char *p, int n)
{
	uint32_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

#define REFUSE(...)                                                                                \
	do {                                                                                       \
		snprintf(why, why_len, __VA_ARGS__);                                               \
		return -1;                                                                         \
	} while (0)

bool p11g_pgp_payload_looks(const unsigned char *p, size_t n)
{
	if (n < 12 || p[n - 6] != 4 || p[n - 5] != 0xff)
		return false;
	uint32_t l = be(p + n - 4, 4);
	return l >= 6 && l <= n - 6 && p[n - 6 - l] == 4;
}

/* An MPI at *off (RFC 4880 3.2) in minimal form: its bytes in *ret, *ret_len of them. */
static bool mpi(const unsigned char *p, size_t n, size_t *off, const unsigned char **ret,
                size_t *ret_len)
{
	if (*off + 2 > n)
		return false;
	uint32_t bits = be(p + *off, 2);
	size_t len = (bits + 7) / 8;
	if (bits == 0 || *off + 2 + len > n)
		return false;
	const unsigned char *v = p + *off + 2;
	/* the top byte holds the top bit the count names: no leading zero, no short count */
	unsigned top = (bits - 1) % 8;
	if (v[0] >> top != 1)
		return false;
	*ret = v;
	*ret_len = len;
	*off += 2 + len;
	return true;
}

/* SHA-256 of the DER SubjectPublicKeyInfo of a key (what p11gate.so names a token key by:
 * module/digest.c), lowercase hex; for RSA a and b are n and e, for EC a is the point (and
 * group its curve), for Ed25519 a is 0x40 and the point.  false when OpenSSL cannot make it. */
static bool spki_sha256(uint8_t algo, const char *group, const unsigned char *a, size_t al,
                        const unsigned char *b, size_t bl, char out[65])
{
	EVP_PKEY *pk = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	BIGNUM *n = NULL, *e = NULL;
	unsigned char *der = NULL, md[32];
	int len = 0;

	if (algo == P11G_PGP_EDDSA) {
		pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, a + 1, al - 1);
	} else if ((bld = OSSL_PARAM_BLD_new())) {
		bool ok;
		if (algo == P11G_PGP_RSA)
			ok = (n = BN_bin2bn(a, (int)al, NULL)) &&
			     (e = BN_bin2bn(b, (int)bl, NULL)) &&
			     OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
			     OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e);
		else
			ok = OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group,
			                                     0) &&
			     OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, a, al);
		if (ok && (params = OSSL_PARAM_BLD_to_param(bld)) &&
		    (ctx = EVP_PKEY_CTX_new_from_name(NULL, algo == P11G_PGP_RSA ? "RSA" : "EC",
		                                      NULL)) &&
		    EVP_PKEY_fromdata_init(ctx) == 1)
			EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params);
	}
	bool ok = pk && (len = i2d_PUBKEY(pk, &der)) > 0 &&
	          EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(), NULL);
	if (ok)
		p11g_hex_encode(md, sizeof(md), out);
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return ok;
}

/* A v4 public key packet's body: its description, creation time and SPKI fingerprint. */
static int read_key(const unsigned char *k, size_t n, uint8_t algo, char *desc, size_t desc_len,
                    uint32_t *created, char spki[65], char *why, size_t why_len)
{
	const unsigned char *a, *b;
	size_t al, bl, off = 6;

	if (n < 6 || k[0] != 4)
		REFUSE("not a version 4 OpenPGP key");
	*created = be(k + 1, 4);
	if (k[5] != algo)
		REFUSE("the key's algorithm %u is not the signature's %u", k[5], algo);
	if (algo == P11G_PGP_RSA) {
		if (!mpi(k, n, &off, &a, &al) || !mpi(k, n, &off, &b, &bl) || off != n)
			REFUSE("an RSA key that is not two minimal MPIs");
		size_t bits = al * 8;
		for (unsigned char top = a[0]; !(top & 0x80); top <<= 1)
			bits--;
		if (bits < 2048 || bits > 8192)
			REFUSE("an RSA key of %zu bits (2048 to 8192 are signed here)", bits);
		snprintf(desc, desc_len, "RSA %zu", bits);
		if (!spki_sha256(algo, NULL, a, al, b, bl, spki))
			REFUSE("an RSA key OpenSSL does not read");
		return 0;
	}
	if (off >= n || off + 1 + k[off] > n)
		REFUSE("a truncated curve name");
	size_t ol = k[off++];
	const unsigned char *oid = k + off;
	off += ol;
	size_t want = 0;
	if (algo == P11G_PGP_EDDSA && OID_IS(oid, ol, P11G_PGP_OID_ED25519))
		want = 33, snprintf(desc, desc_len, "Ed25519");
	else if (algo == P11G_PGP_ECDSA && OID_IS(oid, ol, P11G_PGP_OID_P256))
		want = 65, snprintf(desc, desc_len, "ECDSA P-256");
	else if (algo == P11G_PGP_ECDSA && OID_IS(oid, ol, P11G_PGP_OID_P384))
		want = 97, snprintf(desc, desc_len, "ECDSA P-384");
	else
		REFUSE("a curve other than P-256, P-384 and Ed25519");
	if (!mpi(k, n, &off, &a, &al) || off != n || al != want ||
	    a[0] != (algo == P11G_PGP_EDDSA ? 0x40 : 0x04))
		REFUSE("a %s key whose point is not one uncompressed MPI", desc);
	if (!spki_sha256(algo, want == 65 ? "prime256v1" : "secp384r1", a, al, NULL, 0, spki))
		REFUSE("a %s key OpenSSL does not read", desc);
	return 0;
}

/* The hashed subpackets; for a certification also those GnuPG's key flags and preferences. */
static int read_subpackets(const unsigned char *s, size_t n, bool cert, int64_t now,
                           struct p11g_pgp_payload *ret, char *why, size_t why_len)
{
	unsigned seen = 0; /* bit per subpacket type below 32, and bit 31 for 33 */
	for (size_t off = 0; off < n;) {
		size_t len, o = s[off];
		if (o < 192) {
			len = o, off += 1;
		} else if (o < 255) {
			if (off + 2 > n)
				REFUSE("a truncated subpacket length");
			len = ((o - 192) << 8) + s[off + 1] + 192, off += 2;
		} else {
			if (off + 5 > n)
				REFUSE("a truncated subpacket length");
			len = be(s + off + 1, 4), off += 5;
		}
		if (len < 1 || len > n - off)
			REFUSE("a subpacket longer than the hashed area");
		unsigned t = s[off] & 0x7f, bit = t == 33 ? 31 : t;
		const unsigned char *d = s + off + 1;
		size_t dl = len - 1;
		off += len;
		bool ok;
		if (t >= 31 && t != 33)
			REFUSE("hashed subpacket %u is not one approvald shows", t);
		if (seen >> bit & 1)
			REFUSE("subpacket %u twice", t);
		switch (t) {
		case 2: /* signature creation time */
			ok = dl == 4;
			if (ok)
				ret->when = be(d, 4);
			break;
		case 33: /* issuer fingerprint, v4 */
			ok = dl == 21 && d[0] == 4;
			if (ok)
				p11g_pgp_fingerprint_hex(d + 1, ret->issuer);
			break;
		case 27: /* key flags: sign and certify, what ocisign writes (approvers see none) */
			ok = cert && dl == 1 && d[0] == 0x03;
			break;
		case 30: /* features */
			ok = cert && dl >= 1 && dl <= 4;
			break;
		case 11: /* preferred ciphers, hashes, compression */
		case 21:
		case 22:
			ok = cert && dl <= 16;
			break;
		default:
			ok = false;
		}
		if (!ok)
			REFUSE("hashed subpacket %u is not one approvald shows", t);
		seen |= 1u << bit;
	}
	if (!(seen & 1u << 2) || !(seen & 1u << 31))
		REFUSE("no creation time or no issuer fingerprint");
	if ((int64_t)ret->when > now + 600)
		REFUSE("the signature's creation time is in the future");
	return 0;
}

void p11g_pgp_payload_clear(struct p11g_pgp_payload *pp)
{
	json_decref(pp->certification);
	pp->certification = NULL;
}

static int read_certification(const unsigned char *p, size_t f, struct p11g_pgp_payload *ret,
                              char *why, size_t why_len)
{
	char desc[24], fpr[41], created[32];
	unsigned char md[20];
	uint32_t kc;
	uint32_t cp;

	if (f < 3 || p[0] != 0x99)
		REFUSE("a certification that does not start with the key");
	size_t kl = be(p + 1, 2);
	if (3 + kl + 5 > f || p[3 + kl] != 0xb4)
		REFUSE("a certification whose key is not followed by a user ID");
	size_t ul = be(p + 3 + kl + 1, 4);
	const unsigned char *uid = p + 3 + kl + 5;
	if (3 + kl + 5 + ul != f)
		REFUSE("a certification with bytes after its user ID");
	if (read_key(p + 3, kl, ret->algo, desc, sizeof(desc), &kc, ret->key_spki, why, why_len) <
	    0)
		return -1;
	if (ul == 0 || ul > UID_MAX || p11g_text_find((const char *)uid, ul, &cp) >= 0)
		REFUSE("a user ID that is not 1 to %d bytes of printable UTF-8", UID_MAX);
	if (!p11g_pgp_fingerprint(p + 3, kl, md))
		REFUSE("out of memory");
	p11g_pgp_fingerprint_hex(md, fpr);
	if (strcmp(fpr, ret->issuer))
		REFUSE("a certification by another key than the one certified");
	if (ret->when < kc)
		REFUSE("a certification older than its key");
	time_t t = kc;
	struct tm tm;
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
	ret->certification = json_pack("{s:s%, s:s, s:s, s:s}", "user_id", (const char *)uid, ul,
	                               "fingerprint", fpr, "key", desc, "created", created);
	if (!ret->certification)
		REFUSE("out of memory");
	return 0;
}

int p11g_pgp_payload_read(const unsigned char *p, size_t n, int64_t now,
                          struct p11g_pgp_payload *ret, char *why, size_t why_len)
{
	memset(ret, 0, sizeof(*ret));
	if (!p11g_pgp_payload_looks(p, n))
		REFUSE("not the hashed data of an OpenPGP v4 signature");
	size_t l = be(p + n - 4, 4), f = n - 6 - l;
	const unsigned char *h = p + f;
	ret->type = h[1], ret->algo = h[2], ret->hash = h[3];
	if (ret->algo != P11G_PGP_RSA && ret->algo != P11G_PGP_ECDSA && ret->algo != P11G_PGP_EDDSA)
		REFUSE("OpenPGP public key algorithm %u (RSA, ECDSA and EdDSA are signed here)",
		       ret->algo);
	if (ret->hash != P11G_PGP_SHA256 && ret->hash != P11G_PGP_SHA384)
		REFUSE("OpenPGP hash algorithm %u (SHA-256 and SHA-384 are signed here)",
		       ret->hash);
	if (ret->algo == P11G_PGP_EDDSA && ret->hash != P11G_PGP_SHA256)
		REFUSE("an EdDSA signature of a hash other than SHA-256");
	if (be(h + 4, 2) != l - 6)
		REFUSE("hashed subpackets that do not fill the signature's hashed fields");
	bool cert = ret->type >= 0x10 && ret->type <= 0x13;
	if (ret->type != 0x00 && !cert)
		REFUSE("OpenPGP signature type 0x%02x (binary documents and user ID "
		       "certifications are signed here)",
		       ret->type);
	if (read_subpackets(h + 6, l - 6, cert, now, ret, why, why_len) < 0)
		return -1;
	if (cert && read_certification(p, f, ret, why, why_len) < 0)
		return -1;
	ret->doc_len = cert ? 0 : f;
	if (!p11g_pgp_use_digest(ret->algo, ret->hash, p, n, ret->use_digest)) {
		p11g_pgp_payload_clear(ret); /* a refusal holds nothing to free */
		REFUSE("cannot hash the signature's hashed data (OpenSSL failed)");
	}
	return 0;
}
