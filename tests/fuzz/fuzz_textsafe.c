/* libFuzzer target: what a person is shown of text from a requester, a token or a store. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "approvald/textsafe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	char small[17];

	/* Escaped text holds nothing refused, is valid UTF-8, and its length is what the
	 * sized call reports; a cut copy is a prefix of it, cut between escapes. */
	char *e = p11g_text_escaped(s, size);
	if (!e)
		return 0;
	size_t elen = strlen(e);
	if (p11g_text_find(e, elen, NULL) >= 0)
		__builtin_trap();
	if (p11g_text_escape(NULL, 0, s, size) != elen)
		__builtin_trap();
	size_t cut = p11g_text_escape(small, sizeof(small), s, size);
	if (cut != elen || strncmp(small, e, strlen(small)) ||
	    p11g_text_find(small, strlen(small), NULL) >= 0)
		__builtin_trap();
	/* Text with nothing refused and no backslash is shown as it is. */
	if (p11g_text_find(s, size, NULL) < 0 && !memchr(s, '\\', size) && !memchr(s, '\t', size) &&
	    !memchr(s, '\0', size) && (elen != size || memcmp(e, s, size)))
		__builtin_trap();
	free(e);

	/* As JSON: the escaped copy's strings hold nothing refused; json_safe keeps the value. */
	json_t *j = json_loadb(s, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	if (!j)
		return 0;
	json_t *ej = p11g_text_escape_json(j);
	char *dumped = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
	if (dumped) {
		char *safe = p11g_text_json_safe(dumped);
		if (safe) {
			json_t *back = json_loads(safe, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
			if (!back || !json_equal(back, j))
				__builtin_trap();
			for (const char *c = safe; *c; c++)
				if ((unsigned char)*c == 0x7f || ((unsigned char)*c < 0x20))
					__builtin_trap();
			json_decref(back);
			free(safe);
		}
		free(dumped);
	}
	json_decref(ej);
	json_decref(j);
	return 0;
}
