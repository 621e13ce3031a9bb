/* Signature formats and verification: ECDSA raw to DER, public keys from PKCS#11 attributes,
 * checks. */
#ifndef OCISIGN_SIGCRYPTO_H
#define OCISIGN_SIGCRYPTO_H

#include <openssl/evp.h>

#include "ocisign.h"

/* PKCS#11 returns ECDSA signatures as r||s, each half the curve's size;
 * cosign and OpenSSL want DER ECDSA-Sig-Value.  -1 for an empty, odd or
 * over-long (beyond P-521) input. */
int oci_ecdsa_raw_to_der(const unsigned char *raw, size_t len, unsigned char **ret,
                         size_t *ret_len);

/* Public keys from the attributes a token keeps.  ec_params: CKA_EC_PARAMS
 * (a named-curve OID, or the printable string "edwards25519");
 * ec_point: CKA_EC_POINT, DER OCTET STRING or bare. */
EVP_PKEY *oci_pkey_from_ec(const unsigned char *ec_params, size_t plen,
                           const unsigned char *ec_point, size_t qlen, p11g_err *err);
EVP_PKEY *oci_pkey_from_rsa(const unsigned char *n, size_t nlen, const unsigned char *e,
                            size_t elen, p11g_err *err);
/* PEM SubjectPublicKeyInfo, malloc'd. */
int oci_pkey_to_pem(EVP_PKEY *pk, char **ret, p11g_err *err);

EVP_PKEY *oci_pkey_load_pem(const char *path, p11g_err *err);

/* cosign's checks: ECDSA (DER) and RSA PKCS#1 v1.5 over SHA-256, Ed25519
 * over the message.  1 verified, 0 not. */
int oci_verify(EVP_PKEY *pk, const void *msg, size_t mlen, const unsigned char *sig, size_t slen);

#endif
