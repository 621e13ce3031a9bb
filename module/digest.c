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
