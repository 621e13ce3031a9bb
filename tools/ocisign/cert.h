/* X.509 for ocisign: certificate requests around a PKCS#11 key, and certificates and chains
 * checked with OpenSSL (cosign's --certificate, --certificate-chain). */
#ifndef OCISIGN_CERT_H
#define OCISIGN_CERT_H

#include <openssl/x509.h>

#include "ocisign.h"

#define OCI_CERTS_MAX 16 /* certificates in one PEM file or chain annotation */

/* "/CN=build/O=Acme" (the form of openssl req -subj; "\/" and "\\" escape a slash and a
 * backslash in a value) as an X509_NAME of UTF-8 strings.  Every part is TYPE=VALUE with a
 * type OpenSSL knows and a value that is not empty. */
X509_NAME *oci_subject_parse(const char *s, p11g_err *err);

/* A PKCS#10 request for pk and subject, asking for the extensions a code-signing certificate
 * has: key usage digitalSignature (critical), extended key usage codeSigning, and the subject
 * alternative names ("DNS:name", "email:addr" or "URI:uri").  Unsigned; *ret_tbs is what is
 * signed (the DER CertificationRequestInfo, malloc'd). */
int oci_csr_build(EVP_PKEY *pk, X509_NAME *subject, const char *const *sans, size_t n_sans,
                  X509_REQ **ret, unsigned char **ret_tbs, size_t *ret_tbs_len, p11g_err *err);

/* Puts the signature over the request's tbs in place (DER ECDSA over SHA-256, RSA PKCS#1 v1.5
 * over SHA-256 or Ed25519, as oci_key_sign returns them), checks it with pk, and writes the
 * request as PEM (malloc'd). */
int oci_csr_finish(X509_REQ *req, EVP_PKEY *pk, const unsigned char *sig, size_t slen,
                   char **ret_pem, p11g_err *err);

/* The certificates of a PEM text (anything between them is ignored, as OpenSSL and Go do):
 * at least one and at most OCI_CERTS_MAX, else an error naming what. */
STACK_OF(X509) * oci_certs_from_pem(const void *p, size_t n, const char *what, p11g_err *err);
STACK_OF(X509) * oci_certs_load(const char *path, const char *what, p11g_err *err);
void oci_certs_free(STACK_OF(X509) * s);

/* The certificate as PEM, as Go's pem.Encode writes it (and so cosign's annotation):
 * 64-column base64 and a final newline.  malloc'd. */
char *oci_cert_to_pem(X509 *x, p11g_err *err);

/* Its subject as "/CN=../O=.." for messages (non-ASCII escaped). */
void oci_cert_subject(const X509 *x, char *out, size_t len);

/* Refusals with the reason, each naming what the certificate is (e.g. "cert.pem"). */
int oci_cert_check_key(X509 *x, EVP_PKEY *pk, const char *what, p11g_err *err);
int oci_cert_check_time(const X509 *x, const char *what, p11g_err *err);
bool oci_cert_valid_now(const X509 *x);
int oci_cert_check_codesign(X509 *x, const char *what, p11g_err *err);
/* identity equals one of the certificate's subject alternative names (email, URI, DNS) or
 * its subject, written "/CN=../O=.." or as RFC 2253 "CN=..,O=..". */
int oci_cert_check_identity(X509 *x, const char *identity, p11g_err *err);

/* Verifies leaf up to a self-signed certificate of roots at the current time, with
 * untrusted (may be NULL) as intermediates, requiring the code-signing extended key usage
 * of the leaf. */
int oci_cert_verify_chain(X509 *leaf, STACK_OF(X509) * untrusted, STACK_OF(X509) * roots,
                          const char *what, p11g_err *err);

/* cosign's check of a --certificate-chain file: its last certificate is the root, the ones
 * before it intermediates (chain itself is left as it is). */
int oci_cert_verify_chain_file(X509 *leaf, STACK_OF(X509) * chain, const char *what, p11g_err *err);

#endif
