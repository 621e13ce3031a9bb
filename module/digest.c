/* The digest a use is bound to, per mechanism family (DESIGN.md), hashed aside with OpenSSL. */
#include <ctype.h>

#include "module/module.h"

/* DER DigestInfo prefixes (RFC 8017 section 9.2, note 1), each followed by
 * the hash itself. */
static const struct {
	const char *alg;
	unsigned char prefix[19];
	size_t prefix_len;
	size_t hash_len;
} digestinfos[] = {
    {"sha1",
     {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
     15,
     20},
    {"sha224",
     {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04,
      0x05, 0x00, 0x04, 0x1c},
     19,
     28},
    {"sha256",
     {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
      0x05, 0x00, 0x04, 0x20},
     19,
     32},
    {"sha384",
     {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
      0x05, 0x00, 0x04, 0x30},
     19,
     48},
    {"sha512",
     {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
      0x05, 0x00, 0x04, 0x40},
     19,
     64},
};

/* Pre-hashed input is named by its length alone: nothing else says which
 * hash made it. */
static const char *alg_by_length(size_t len)
{
	switch (len) {
	case 20:
		return "sha1";
	case 28:
		return "sha224";
	case 32:
		return "sha256";
	case 48:
		return "sha384";
	case 64:
		return "sha512";
	default:
		return NULL;
	}
}

const char *p11g_digestinfo_parse(const unsigned char *data, size_t len, size_t *ret_offset)
{
	for (size_t i = 0; i < P11G_ARRAY_SIZE(digestinfos); i++) {
		size_t pl = digestinfos[i].prefix_len;
		if (len == pl + digestinfos[i].hash_len &&
		    !memcmp(data, digestinfos[i].prefix, pl)) {
			if (ret_offset)
				*ret_offset = pl;
			return digestinfos[i].alg;
		}
	}
	return NULL;
}

/* "alg:hex" into d->text; alg lower-cased ("SHA3-256" -> "sha3-256"). */
static int put(struct p11g_use_digest *d, const char *alg, const unsigned char *hash, size_t len,
               bool raw)
{
	size_t alen = strlen(alg);

	if (len > EVP_MAX_MD_SIZE || alen + 1 + 2 * len + 1 > sizeof(d->text))
		return -1;
	for (size_t i = 0; i < alen; i++)
		d->text[i] = (char)tolower((unsigned char)alg[i]);
	d->text[alen] = ':';
	p11g_hex_encode(hash, len, d->text + alen + 1);
	d->raw = raw;
	return 0;
}

int p11g_digest_init(struct p11g_digest_ctx *ctx, const struct p11g_mech_info *mech)
{
	const EVP_MD *md;

	memset(ctx, 0, sizeof(*ctx));
	ctx->mech = mech;
	md = EVP_get_digestbyname(mech->family == P11G_MECH_HASH_SIGN && mech->hash ? mech->hash
	                                                                            : "SHA256");
	if (!md)
		return -1;
	ctx->md = EVP_MD_CTX_new();
	if (!ctx->md || EVP_DigestInit_ex(ctx->md, md, NULL) != 1) {
		EVP_MD_CTX_free(ctx->md);
		ctx->md = NULL;
		return -1;
	}
	return 0;
}

int p11g_digest_update(struct p11g_digest_ctx *ctx, const unsigned char *data, size_t len)
{
	if (!ctx->md)
		return -1;
	if (len == 0)
		return 0;
	if (ctx->mech->family != P11G_MECH_HASH_SIGN) {
		if (len > sizeof(ctx->keep) - ctx->kept) {
			ctx->overflow = true;
		} else {
			memcpy(ctx->keep + ctx->kept, data, len);
			ctx->kept += len;
		}
	}
	return EVP_DigestUpdate(ctx->md, data, len) == 1 ? 0 : -1;
}

int p11g_digest_final(struct p11g_digest_ctx *ctx, struct p11g_use_digest *ret)
{
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned hlen = 0;
	const char *alg;
	size_t off;

	if (!ctx->md || EVP_DigestFinal_ex(ctx->md, h, &hlen) != 1)
		return -1;
	EVP_MD_CTX_free(ctx->md);
	ctx->md = NULL;

	switch (ctx->mech->family) {
	case P11G_MECH_HASH_SIGN:
		return put(ret, ctx->mech->hash, h, hlen, false);
	case P11G_MECH_PREHASHED:
		alg = ctx->overflow ? NULL : alg_by_length(ctx->kept);
		if (alg)
			return put(ret, alg, ctx->keep, ctx->kept, false);
		break;
	case P11G_MECH_RSA_PKCS:
		alg = ctx->overflow ? NULL : p11g_digestinfo_parse(ctx->keep, ctx->kept, &off);
		if (alg)
			return put(ret, alg, ctx->keep + off, ctx->kept - off, false);
		break;
	case P11G_MECH_EDDSA:
		/* The signature covers the whole message; its SHA-256 is what a
		 * pipeline can compute and pin. */
		return put(ret, "sha256", h, hlen, false);
	case P11G_MECH_RAW:
		break;
	}
	/* Raw: not a digest approvald can name; SHA-256 of the input for the audit. */
	return put(ret, "sha256", h, hlen, true);
}

void p11g_digest_free(struct p11g_digest_ctx *ctx)
{
	EVP_MD_CTX_free(ctx->md);
	ctx->md = NULL;
	/* The kept bytes are data the caller signs; do not leave them about. */
	explicit_bzero(ctx->keep, sizeof(ctx->keep));
	ctx->kept = 0;
}

int p11g_digest_oneshot(const struct p11g_mech_info *mech, const unsigned char *data, size_t len,
                        struct p11g_use_digest *ret)
{
	struct p11g_digest_ctx ctx;
	int r;

	if (p11g_digest_init(&ctx, mech) < 0)
		return -1;
	r = p11g_digest_update(&ctx, data, len);
	if (r == 0)
		r = p11g_digest_final(&ctx, ret);
	p11g_digest_free(&ctx);
	return r;
}

/* ---- public-key fingerprints ------------------------------------------------ */

/* A DER buffer that fails once and stays failed (the caller checks at the end). */
struct der {
	unsigned char *p;
	size_t len, cap;
	bool failed;
};

static void der_put(struct der *d, const void *src, size_t n)
{
	if (d->failed)
		return;
	if (d->len + n > d->cap) {
		size_t cap = (d->len + n) * 2 + 64;
		unsigned char *p = realloc(d->p, cap);
		if (!p) {
			d->failed = true;
			return;
		}
		d->p = p;
		d->cap = cap;
	}
	memcpy(d->p + d->len, src, n);
	d->len += n;
}

/* Tag and length, then the n bytes of content (DER definite length). */
static void der_tlv(struct der *d, unsigned char tag, const void *content, size_t n)
{
	unsigned char h[6] = {tag};
	size_t hl = 1;

	if (n < 0x80) {
		h[hl++] = (unsigned char)n;
	} else {
		unsigned char len[4];
		size_t ln = 0;
		for (size_t v = n; v; v >>= 8)
			len[ln++] = (unsigned char)(v & 0xff);
		if (ln > 4) {
			d->failed = true;
			return;
		}
		h[hl++] = (unsigned char)(0x80 | ln);
		while (ln)
			h[hl++] = len[--ln];
	}
	der_put(d, h, hl);
	der_put(d, content, n);
}

/* An unsigned big-endian integer as a DER INTEGER (leading zeros dropped, a 0x00 added
 * before a set top bit). */
static void der_uint(struct der *d, const unsigned char *v, size_t n)
{
	struct der t = {0};
	while (n > 1 && v[0] == 0)
		v++, n--;
	if (n == 0 || (v[0] & 0x80))
		der_put(&t, "\0", 1);
	der_put(&t, v, n);
	if (t.failed)
		d->failed = true;
	else
		der_tlv(d, 0x02, t.p, t.len);
	free(t.p);
}

/* The bytes inside a DER OCTET STRING (CKA_EC_POINT), or the input as it is when it is
 * not one (some modules give the raw point). */
static void unwrap_octets(const unsigned char **v, size_t *n)
{
	const unsigned char *p = *v;
	size_t len, hl;

	if (*n < 2 || p[0] != 0x04)
		return;
	if (p[1] < 0x80) {
		len = p[1];
		hl = 2;
	} else if (p[1] == 0x81 && *n >= 3) {
		len = p[2];
		hl = 3;
	} else if (p[1] == 0x82 && *n >= 4) {
		len = (size_t)p[2] << 8 | p[3];
		hl = 4;
	} else {
		return;
	}
	if (hl + len != *n)
		return;
	*v = p + hl;
	*n = len;
}

int p11g_spki_der(const struct p11g_pubkey_parts *k, unsigned char **ret, size_t *ret_len)
{
	static const unsigned char rsa_alg[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
	                                        0x0d, 0x01, 0x01, 0x01, 0x05, 0x00};
	static const unsigned char ec_oid[] = {0x06, 0x07, 0x2a, 0x86, 0x48,
	                                       0xce, 0x3d, 0x02, 0x01};
	static const unsigned char ed25519_oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
	static const unsigned char ed448_oid[] = {0x06, 0x03, 0x2b, 0x65, 0x71};
	/* PrintableString "edwards25519" / "edwards448" (PKCS#11 3.0 curve names) */
	static const unsigned char ed25519_name[] = "\x13\x0c"
	                                            "edwards25519";
	static const unsigned char ed448_name[] = "\x13\x0a"
	                                          "edwards448";
	struct der alg = {0}, key = {0}, bits = {0}, spki = {0}, out = {0};
	int r = -1;

	if (k->spki_len) {
		der_put(&out, k->spki, k->spki_len);
	} else if (k->modulus_len && k->exponent_len) {
		der_tlv(&alg, 0x30, rsa_alg, sizeof(rsa_alg));
		der_uint(&key, k->modulus, k->modulus_len);
		der_uint(&key, k->exponent, k->exponent_len);
		struct der seq = {0};
		der_tlv(&seq, 0x30, key.p, key.len);
		der_put(&bits, "\0", 1);
		der_put(&bits, seq.p, seq.len);
		if (seq.failed || key.failed)
			bits.failed = true;
		free(seq.p);
	} else if (k->params_len && k->point_len) {
		const unsigned char *pt = k->point;
		size_t ptn = k->point_len;
		unwrap_octets(&pt, &ptn);
		if ((k->params_len == sizeof(ed25519_oid) &&
		     !memcmp(k->params, ed25519_oid, sizeof(ed25519_oid))) ||
		    (k->params_len == sizeof(ed25519_name) - 1 &&
		     !memcmp(k->params, ed25519_name, k->params_len))) {
			der_tlv(&alg, 0x30, ed25519_oid, sizeof(ed25519_oid));
		} else if ((k->params_len == sizeof(ed448_oid) &&
		            !memcmp(k->params, ed448_oid, sizeof(ed448_oid))) ||
		           (k->params_len == sizeof(ed448_name) - 1 &&
		            !memcmp(k->params, ed448_name, k->params_len))) {
			der_tlv(&alg, 0x30, ed448_oid, sizeof(ed448_oid));
		} else {
			struct der a = {0};
			der_put(&a, ec_oid, sizeof(ec_oid));
			der_put(&a, k->params, k->params_len);
			if (a.failed)
				alg.failed = true;
			else
				der_tlv(&alg, 0x30, a.p, a.len);
			free(a.p);
		}
		der_put(&bits, "\0", 1);
		der_put(&bits, pt, ptn);
	} else {
		return -ENOENT;
	}
	if (!k->spki_len) {
		der_put(&spki, alg.p, alg.len);
		der_tlv(&spki, 0x03, bits.p, bits.len);
		if (alg.failed || bits.failed || spki.failed)
			goto out;
		der_tlv(&out, 0x30, spki.p, spki.len);
	}
	if (out.failed)
		goto out;
	*ret = out.p;
	*ret_len = out.len;
	out.p = NULL;
	r = 0;
out:
	free(alg.p);
	free(key.p);
	free(bits.p);
	free(spki.p);
	free(out.p);
	return r < 0 ? -ENOMEM : 0;
}

int p11g_spki_fingerprint(const struct p11g_pubkey_parts *k, char ret[65])
{
	unsigned char *der = NULL, md[32];
	size_t len = 0;
	int r = p11g_spki_der(k, &der, &len);

	if (r < 0)
		return r;
	r = EVP_Digest(der, len, md, NULL, EVP_sha256(), NULL) ? 0 : -ENOMEM;
	free(der);
	if (r == 0)
		p11g_hex_encode(md, sizeof(md), ret);
	return r;
}
