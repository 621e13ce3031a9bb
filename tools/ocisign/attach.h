/* cosign's signature layout in a registry: the sha256-<hex>.sig tag, its manifest, config and
 * layers. */
#ifndef OCISIGN_ATTACH_H
#define OCISIGN_ATTACH_H

#include "ocisign.h"
#include "registry.h"

#define OCI_MT_SIMPLESIGNING "application/vnd.dev.cosign.simplesigning.v1+json"
#define OCI_ANN_SIGNATURE    "dev.cosignproject.cosign/signature"
#define OCI_ANN_CERTIFICATE  "dev.sigstore.cosign/certificate"
#define OCI_ANN_CHAIN        "dev.sigstore.cosign/chain"

/* "sha256-<hex>.sig" for an image digest; out holds 80 bytes. */
void oci_sig_tag(const char *digest, char out[80]);

/* Builds the .sig manifest after adding one signature layer (payload blob
 * digest and size, base64 signature; with cert_pem, the certificate and chain_pem (NULL:
 * "") annotations as cosign's static.WithCertChain writes them) to an existing manifest
 * (NULL: none):
 * earlier layers are kept as they are, the config is rebuilt to list every
 * layer.  Returns 0 with both documents (malloc'd, compact JSON), 1 when an
 * identical layer (same payload, signature, certificate and chain) is already there
 * (the same payload and signature with another certificate is replaced), -1 for
 * an existing manifest that is not an OCI image manifest or has too many
 * layers. */
int oci_sig_manifest_add(const unsigned char *existing, size_t elen, const char *payload_digest,
                         size_t payload_size, const char *sig_b64, const char *cert_pem,
                         const char *chain_pem, char **ret_manifest, size_t *ret_mlen,
                         char **ret_config, size_t *ret_clen, p11g_err *err);

/* Attaches payload + signature to the image digest in r's repository.
 * *ret_skipped says the identical signature was already there. */
int oci_attach(struct oci_reg *r, const char *image_digest, const void *payload, size_t plen,
               const char *sig_b64, const char *cert_pem, const char *chain_pem, bool *ret_skipped,
               p11g_err *err);

#endif
