/* libFuzzer target: ocisign's image reference parser (go-containerregistry's rules). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct oci_ref r, again;
	p11g_err err = {0};
	char name[OCI_REGISTRY_MAX + OCI_REPOSITORY_MAX + 2], text[sizeof(name) + 160];
	char *s = malloc(size + 1);

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (oci_ref_parse(s, &r, &err) == 0) {
		/* What parses names itself: name plus tag or digest parses to the same. */
		oci_ref_name(&r, name, sizeof(name));
		const char *ref = oci_ref_reference(&r);
		(void)oci_ref_api_host(&r);
		snprintf(text, sizeof(text), "%s%s%s", name, r.digest[0] ? "@" : ":", ref);
		if (oci_ref_parse(text, &again, &err) != 0 || strcmp(again.registry, r.registry) ||
		    strcmp(again.repository, r.repository) ||
		    strcmp(oci_ref_reference(&again), ref))
			__builtin_trap();
	}
	free(s);
	return 0;
}
