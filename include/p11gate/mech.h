/* Signing mechanisms: names as in pkcs11t.h, and the family that says which digest a use is bound
 * to. */
#ifndef P11GATE_MECH_H
#define P11GATE_MECH_H

#include <p11-kit/pkcs11.h>

enum p11g_mech_family {
	P11G_MECH_HASH_SIGN, /* the mechanism hashes: digest = hash(data) (hash names it) */
	P11G_MECH_PREHASHED, /* CKM_ECDSA, CKM_RSA_PKCS_PSS, CKM_DSA: digest = the input bytes */
	P11G_MECH_RSA_PKCS,  /* digest = the hash inside the DigestInfo; raw otherwise */
	P11G_MECH_EDDSA,     /* digest = SHA-256 of the message */
	P11G_MECH_RAW,       /* CKM_RSA_X_509 and other raw private-key transforms */
};

struct p11g_mech_info {
	CK_MECHANISM_TYPE type;
	const char *name; /* "CKM_ECDSA_SHA256" */
	enum p11g_mech_family family;
	const char *hash; /* OpenSSL digest name for HASH_SIGN ("SHA256"), else NULL */
};

/* NULL for a mechanism that is not a known signing mechanism. */
const struct p11g_mech_info *p11g_mech_by_type(CK_MECHANISM_TYPE type);
const struct p11g_mech_info *p11g_mech_by_name(const char *name);

#endif
