/* libFuzzer target: ocisign's cosign payload parser; what it accepts must rebuild and parse alike.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "payload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char digest[OCI_DIGEST_LEN + 1], ref[512], digest2[OCI_DIGEST_LEN + 1], ref2[512];
	p11g_err err = {0};
	char *built = NULL;
	size_t blen = 0;

	if (oci_payload_parse(data, size, digest, ref, sizeof(ref), &err) != 0)
		return 0;
	if (oci_payload_build(ref, digest, NULL, 0, &built, &blen, &err) != 0)
		return 0; /* a reference the builder refuses (too long, say) */
	if (oci_payload_parse((const unsigned char *)built, blen, digest2, ref2, sizeof(ref2),
	                      &err) != 0 ||
	    strcmp(digest, digest2) || strcmp(ref, ref2))
		__builtin_trap();
	free(built);
	return 0;
}
