/* What approvald reads of a certificate request it is asked to have signed: the DER
 * CertificationRequestInfo (PKCS#10) a request's payload carries, described for approvers. */
#ifndef APPROVALD_CSR_PAYLOAD_H
#define APPROVALD_CSR_PAYLOAD_H

#include <jansson.h>

#include "p11gate/common.h"

/* Whether the bytes could be one (a DER SEQUENCE): else they are read as a cosign payload. */
bool p11g_csr_payload_looks(const unsigned char *p, size_t n);

/* Reads der as a CertificationRequestInfo in DER (nothing after it, encoded as DER re-encodes
 * it: what is shown is what is signed) and describes it: {"subject": "/CN=../O=..", "key":
 * "EC P-256" | "RSA 2048" | "Ed25519" | ..., "names": ["email:..", "URI:..", "DNS:..", ...],
 * "extended_key_usage": ["codeSigning", ...], "other_extensions": ["X509v3 Key Usage (critical):
 * Digital Signature", ...]} (each only when requested; every byte a requester chose escaped
 * \xHH unless printable ASCII).  Refused (NULL, the reason in why): attributes other than one
 * extension request, an extension OpenSSL cannot print, a subject of more than 1000
 * characters. */
json_t *p11g_csr_payload_describe(const unsigned char *der, size_t n, char *why, size_t why_len);

#endif
