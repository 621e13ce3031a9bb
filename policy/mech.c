/* The signing mechanisms p11gate knows, and the family that decides which digest a use binds. */
#include "p11gate/mech.h"

#include <string.h>

/* Older pkcs11.h copies lack some of these; the values are the spec's. */
#ifndef CKM_ECDSA_SHA224
#define CKM_ECDSA_SHA224 0x1043UL
#endif
#ifndef CKM_ECDSA_SHA256
#define CKM_ECDSA_SHA256 0x1044UL
#endif
#ifndef CKM_ECDSA_SHA384
#define CKM_ECDSA_SHA384 0x1045UL
#endif
#ifndef CKM_ECDSA_SHA512
#define CKM_ECDSA_SHA512 0x1046UL
#endif
#ifndef CKM_EDDSA
#define CKM_EDDSA 0x1057UL
#endif

#define M(mech, family, hash)                                                                      \
	{                                                                                          \
		mech, #mech, family, hash                                                          \
	}

static const struct p11g_mech_info mechs[] = {
    M(CKM_RSA_PKCS, P11G_MECH_RSA_PKCS, NULL),
    M(CKM_RSA_X_509, P11G_MECH_RAW, NULL),
    M(CKM_RSA_9796, P11G_MECH_RAW, NULL),
    M(CKM_RSA_PKCS_PSS, P11G_MECH_PREHASHED, NULL),
    /* Weak hashes, but real signatures: rules that care list their mechanisms. */
    M(CKM_MD5_RSA_PKCS, P11G_MECH_HASH_SIGN, "MD5"),
    M(CKM_RIPEMD160_RSA_PKCS, P11G_MECH_HASH_SIGN, "RIPEMD160"),
    M(CKM_SHA1_RSA_PKCS, P11G_MECH_HASH_SIGN, "SHA1"),
    M(CKM_SHA224_RSA_PKCS, P11G_MECH_HASH_SIGN, "SHA224"),
    M(CKM_SHA256_RSA_PKCS, P11G_MECH_HASH_SIGN, "SHA256"),
    M(CKM_SHA384_RSA_PKCS, P11G_MECH_HASH_SIGN, "SHA384"),
    M(CKM_SHA512_RSA_PKCS, P11G_MECH_HASH_SIGN, "SHA512"),
    M(CKM_SHA1_RSA_PKCS_PSS, P11G_MECH_HASH_SIGN, "SHA1"),
    M(CKM_SHA224_RSA_PKCS_PSS, P11G_MECH_HASH_SIGN, "SHA224"),
    M(CKM_SHA256_RSA_PKCS_PSS, P11G_MECH_HASH_SIGN, "SHA256"),
    M(CKM_SHA384_RSA_PKCS_PSS, P11G_MECH_HASH_SIGN, "SHA384"),
    M(CKM_SHA512_RSA_PKCS_PSS, P11G_MECH_HASH_SIGN, "SHA512"),
#ifdef CKM_SHA3_224_RSA_PKCS
    M(CKM_SHA3_224_RSA_PKCS, P11G_MECH_HASH_SIGN, "SHA3-224"),
#endif
#ifdef CKM_SHA3_256_RSA_PKCS
    M(CKM_SHA3_256_RSA_PKCS, P11G_MECH_HASH_SIGN, "SHA3-256"),
#endif
#ifdef CKM_SHA3_384_RSA_PKCS
    M(CKM_SHA3_384_RSA_PKCS, P11G_MECH_HASH_SIGN, "SHA3-384"),
#endif
#ifdef CKM_SHA3_512_RSA_PKCS
    M(CKM_SHA3_512_RSA_PKCS, P11G_MECH_HASH_SIGN, "SHA3-512"),
#endif
#ifdef CKM_SHA3_224_RSA_PKCS_PSS
    M(CKM_SHA3_224_RSA_PKCS_PSS, P11G_MECH_HASH_SIGN, "SHA3-224"),
#endif
#ifdef CKM_SHA3_256_RSA_PKCS_PSS
    M(CKM_SHA3_256_RSA_PKCS_PSS, P11G_MECH_HASH_SIGN, "SHA3-256"),
#endif
#ifdef CKM_SHA3_384_RSA_PKCS_PSS
    M(CKM_SHA3_384_RSA_PKCS_PSS, P11G_MECH_HASH_SIGN, "SHA3-384"),
#endif
#ifdef CKM_SHA3_512_RSA_PKCS_PSS
    M(CKM_SHA3_512_RSA_PKCS_PSS, P11G_MECH_HASH_SIGN, "SHA3-512"),
#endif
    M(CKM_ECDSA, P11G_MECH_PREHASHED, NULL),
    M(CKM_ECDSA_SHA1, P11G_MECH_HASH_SIGN, "SHA1"),
    M(CKM_ECDSA_SHA224, P11G_MECH_HASH_SIGN, "SHA224"),
    M(CKM_ECDSA_SHA256, P11G_MECH_HASH_SIGN, "SHA256"),
    M(CKM_ECDSA_SHA384, P11G_MECH_HASH_SIGN, "SHA384"),
    M(CKM_ECDSA_SHA512, P11G_MECH_HASH_SIGN, "SHA512"),
#ifdef CKM_ECDSA_SHA3_224
    M(CKM_ECDSA_SHA3_224, P11G_MECH_HASH_SIGN, "SHA3-224"),
#endif
#ifdef CKM_ECDSA_SHA3_256
    M(CKM_ECDSA_SHA3_256, P11G_MECH_HASH_SIGN, "SHA3-256"),
#endif
#ifdef CKM_ECDSA_SHA3_384
    M(CKM_ECDSA_SHA3_384, P11G_MECH_HASH_SIGN, "SHA3-384"),
#endif
#ifdef CKM_ECDSA_SHA3_512
    M(CKM_ECDSA_SHA3_512, P11G_MECH_HASH_SIGN, "SHA3-512"),
#endif
    M(CKM_EDDSA, P11G_MECH_EDDSA, NULL),
    M(CKM_DSA, P11G_MECH_PREHASHED, NULL),
    M(CKM_DSA_SHA1, P11G_MECH_HASH_SIGN, "SHA1"),
#ifdef CKM_DSA_SHA224
    M(CKM_DSA_SHA224, P11G_MECH_HASH_SIGN, "SHA224"),
#endif
#ifdef CKM_DSA_SHA256
    M(CKM_DSA_SHA256, P11G_MECH_HASH_SIGN, "SHA256"),
#endif
#ifdef CKM_DSA_SHA384
    M(CKM_DSA_SHA384, P11G_MECH_HASH_SIGN, "SHA384"),
#endif
#ifdef CKM_DSA_SHA512
    M(CKM_DSA_SHA512, P11G_MECH_HASH_SIGN, "SHA512"),
#endif
#ifdef CKM_DSA_SHA3_224
    M(CKM_DSA_SHA3_224, P11G_MECH_HASH_SIGN, "SHA3-224"),
#endif
#ifdef CKM_DSA_SHA3_256
    M(CKM_DSA_SHA3_256, P11G_MECH_HASH_SIGN, "SHA3-256"),
#endif
#ifdef CKM_DSA_SHA3_384
    M(CKM_DSA_SHA3_384, P11G_MECH_HASH_SIGN, "SHA3-384"),
#endif
#ifdef CKM_DSA_SHA3_512
    M(CKM_DSA_SHA3_512, P11G_MECH_HASH_SIGN, "SHA3-512"),
#endif
};

const struct p11g_mech_info *p11g_mech_by_type(CK_MECHANISM_TYPE type)
{
	for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++)
		if (mechs[i].type == type)
			return &mechs[i];
	return NULL;
}

const struct p11g_mech_info *p11g_mech_by_name(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++)
		if (strcmp(mechs[i].name, name) == 0)
			return &mechs[i];
	return NULL;
}
