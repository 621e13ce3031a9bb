/* libFuzzer target: adding a signature layer to an existing .sig manifest from a registry. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attach.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char digest[] =
	    "sha256:3f1f2e0c5e0b7a1d0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778";
	p11g_err err = {0};
	char *m = NULL, *c = NULL, *m2 = NULL, *c2 = NULL;
	size_t mlen = 0, clen = 0, mlen2 = 0, clen2 = 0;

	int r = oci_sig_manifest_add(data, size, digest, 250, "MEUCIQ==", NULL, NULL, &m, &mlen, &c,
	                             &clen, &err);
	if (r != 0)
		return 0;
	/* The manifest it wrote is one it reads back, with the layer already there. */
	if (oci_sig_manifest_add((const unsigned char *)m, mlen, digest, 250, "MEUCIQ==", NULL,
	                         NULL, &m2, &mlen2, &c2, &clen2, &err) != 1)
		__builtin_trap();
	free(m);
	free(c);
	free(m2);
	free(c2);
	return 0;
}
