/* libFuzzer target: X.509 as p11gate reads it: ocisign's --subject, a PEM file or a signature's
 * certificate and chain annotations checked against an identity and roots, and the certificate
 * request a request's payload gives approvald (csr_payload.c). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "approvald/csr_payload.h"
#include "cert.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	p11g_err err = {0};
	if (size < 1)
		return 0;
	char *s = malloc(size);
	if (!s)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	if ((data[0] & 3) == 2) {
		char why[160] = "";
		json_t *d = p11g_csr_payload_describe(data + 1, size - 1, why, sizeof(why));
		if (!d && !why[0])
			abort(); /* a refusal always says why */
		json_decref(d);
	} else if (data[0] & 1) {
		X509_NAME *n = oci_subject_parse(s, &err);
		X509_NAME_free(n);
	} else {
		/* certificates, the first checked as a signature's against the rest as roots */
		STACK_OF(X509) *certs = oci_certs_from_pem(data + 1, size - 1, "fuzz", &err);
		if (certs) {
			X509 *leaf = sk_X509_value(certs, 0);
			char subj[256];
			oci_cert_subject(leaf, subj, sizeof(subj));
			(void)oci_cert_check_identity(leaf, "release@acme.example", &err);
			(void)oci_cert_check_codesign(leaf, "fuzz", &err);
			(void)oci_cert_check_time(leaf, "fuzz", &err);
			(void)oci_cert_verify_chain(leaf, certs, certs, "fuzz", &err);
			char *pem = oci_cert_to_pem(leaf, &err);
			free(pem);
			oci_certs_free(certs);
		}
	}
	free(s);
	return 0;
}
