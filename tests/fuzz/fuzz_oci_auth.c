/* libFuzzer target: what a registry sends back - WWW-Authenticate, token replies, error bodies. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct oci_challenge ch;
	p11g_err err = {0};
	char *token = NULL, text[256];
	long expires = 0;

	if (size == 0)
		return 0;
	/* The first byte picks the parser; the rest is what the registry sent. */
	const char *p = (const char *)data + 1;
	size_t n = size - 1;
	switch (data[0] % 3) {
	case 0:
		(void)oci_challenge_parse(p, n, &ch);
		break;
	case 1:
		if (oci_token_parse(p, n, &token, &expires, &err) == 0 && (!token || !*token))
			__builtin_trap();
		free(token);
		break;
	default:
		oci_registry_error_text(data + 1, n, text, sizeof(text));
		if (strlen(text) >= sizeof(text))
			__builtin_trap();
		break;
	}
	return 0;
}
