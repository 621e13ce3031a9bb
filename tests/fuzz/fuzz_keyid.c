/* libFuzzer target: key URIs as patterns and as key identities, matching, and the text back. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "p11gate/keyid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char uri[2048];
	struct p11g_keyid k;
	p11g_err err = {0};
	if (size >= sizeof(uri))
		return 0;
	memcpy(uri, data, size);
	uri[size] = '\0';
	/* Any URI as a pattern: its text form parses to the same pattern (formatted alike),
	 * never holds a query, and overlaps itself. */
	P11KitUri *pat = NULL, *pat2 = NULL;
	if (p11g_keyuri_parse(uri, &pat, &err) == 0) {
		char *text = p11g_keyuri_format(pat);
		if (text) {
			if (strchr(text, '?') || p11g_keyuri_parse(text, &pat2, &err) < 0)
				__builtin_trap();
			char *text2 = p11g_keyuri_format(pat2);
			if (text2 && strcmp(text, text2))
				__builtin_trap();
			if (!p11g_keyuri_overlap(pat, pat2))
				__builtin_trap();
			free(text2);
			p11_kit_uri_free(pat2);
			free(text);
		}
		p11_kit_uri_free(pat);
	}
	if (p11g_keyid_from_uri(uri, &k, &err) < 0)
		return 0;
	/* A key named by a URI matches that URI, and its canonical URI names it again. */
	char *canon = p11g_keyid_to_uri(&k);
	if (!canon)
		return 0;
	struct p11g_keyid k2;
	if (p11g_keyid_from_uri(canon, &k2, &err) < 0)
		__builtin_trap();
	P11KitUri *u = p11_kit_uri_new();
	if (p11_kit_uri_parse(canon, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, u) == P11_KIT_URI_OK &&
	    !p11g_keyid_matches(&k, u))
		__builtin_trap();
	p11_kit_uri_free(u);
	json_t *j = p11g_keyid_to_json(&k);
	if (j && p11g_keyid_from_json(j, &k2, &err) < 0)
		__builtin_trap();
	json_decref(j);
	free(canon);
	return 0;
}
