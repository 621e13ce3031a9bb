/* Text for people: the characters a request may not hold and their visible escapes (textsafe.h). */
#include "approvald/textsafe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t p11g_utf8_decode(const unsigned char *s, size_t len, uint32_t *ret)
{
	unsigned char c = s[0];
	uint32_t cp, min;
	size_t n;

	if (c < 0x80) {
		*ret = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07, min = 0x10000;
	else
		return 0;
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*ret = cp;
	return n;
}

/* Characters that show nothing, so that two texts that differ look the same: the soft
 * hyphen, the combining grapheme joiner, the Khmer inherent vowels, the Mongolian vowel
 * separator, the zero width space, the word joiner and invisible operators, the byte order
 * mark, the Hangul fillers, the interlinear annotation marks and the tag characters.  The
 * zero width (non-)joiners and the variation selectors stay: Persian and Indic text and
 * emoji need them. */
static bool invisible(uint32_t cp)
{
	return cp == 0x00ad || cp == 0x034f || cp == 0x115f || cp == 0x1160 || cp == 0x17b4 ||
	       cp == 0x17b5 || cp == 0x180e || cp == 0x200b || (cp >= 0x2060 && cp <= 0x2064) ||
	       cp == 0x3164 || cp == 0xfeff || cp == 0xffa0 || (cp >= 0xfff9 && cp <= 0xfffb) ||
	       (cp >= 0xe0000 && cp <= 0xe007f);
}

bool p11g_text_refused(uint32_t cp)
{
	return (cp < 0x20 && cp != '\t') || (cp >= 0x7f && cp <= 0x9f) || cp == 0x061c ||
	       cp == 0x200e || cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) ||
	       (cp >= 0x2066 && cp <= 0x2069) || invisible(cp);
}

const char *p11g_text_kind(uint32_t cp)
{
	if (cp & P11G_TEXT_NOT_UTF8)
		return "a byte that is not UTF-8";
	if (cp == 0x2028 || cp == 0x2029)
		return "a line or paragraph separator";
	if (invisible(cp))
		return "an invisible character";
	if (cp >= 0x200 && p11g_text_refused(cp))
		return "a bidirectional formatting character";
	return "a control character";
}

ptrdiff_t p11g_text_find(const char *s, size_t len, uint32_t *ret_cp)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t k = p11g_utf8_decode(p + i, len - i, &cp);
		if (!k || p11g_text_refused(cp)) {
			if (ret_cp)
				*ret_cp = k ? cp : P11G_TEXT_NOT_UTF8 | p[i];
			return (ptrdiff_t)i;
		}
		i += k;
	}
	return -1;
}

/* The escape of one character (or, byte true, of a byte that is not UTF-8) in out; its
 * length, or 0 when the character is shown as it is. */
static size_t escape_one(uint32_t cp, bool byte, char out[12])
{
	const char *named = NULL;
	if (byte)
		return (size_t)snprintf(out, 12, "\\x%02x", (unsigned)cp);
	switch (cp) {
	case '\\':
		named = "\\\\";
		break;
	case '\t':
		named = "\\t";
		break;
	case '\n':
		named = "\\n";
		break;
	case '\r':
		named = "\\r";
		break;
	default:
		if (!p11g_text_refused(cp))
			return 0;
		return (size_t)snprintf(out, 12,
		                        cp < 0x80      ? "\\x%02x"
		                        : cp < 0x10000 ? "\\u%04x"
		                                       : "\\U%08x",
		                        (unsigned)cp);
	}
	memcpy(out, named, 3);
	return 2;
}

size_t p11g_text_escape(char *buf, size_t n, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t need = 0, done = 0;
	bool full = false;

	for (size_t i = 0; i < len;) {
		char esc[12];
		uint32_t cp = 0;
		size_t k = p11g_utf8_decode(p + i, len - i, &cp);
		size_t e = k ? escape_one(cp, false, esc) : escape_one(p[i], true, esc);
		const char *piece = e ? esc : s + i;
		size_t plen = e ? e : k;
		if (!k)
			k = 1;
		if (!full && done + plen < n) {
			memcpy(buf + done, piece, plen);
			done += plen;
		} else {
			full = true;
		}
		need += plen;
		i += k;
	}
	if (n)
		buf[done] = '\0';
	return need;
}

char *p11g_text_escaped(const char *s, size_t len)
{
	size_t need = p11g_text_escape(NULL, 0, s, len);
	char *out = malloc(need + 1);
	if (out)
		p11g_text_escape(out, need + 1, s, len);
	return out;
}

json_t *p11g_text_escape_json(const json_t *j)
{
	json_t *out = NULL, *v;
	const char *key;
	size_t key_len, i;

	switch (json_typeof(j)) {
	case JSON_STRING: {
		char *e = p11g_text_escaped(json_string_value(j), json_string_length(j));
		out = e ? json_string(e) : NULL;
		free(e);
		return out;
	}
	case JSON_OBJECT:
		out = json_object();
		json_object_keylen_foreach((json_t *)j, key, key_len, v)
		{
			char *e = p11g_text_escaped(key, key_len);
			json_t *c = p11g_text_escape_json(v);
			if (!out || !e || !c || json_object_set_new(out, e, c) < 0) {
				free(e);
				json_decref(out);
				return NULL;
			}
			free(e);
		}
		return out;
	case JSON_ARRAY:
		out = json_array();
		json_array_foreach(j, i, v)
		{
			if (!out || json_array_append_new(out, p11g_text_escape_json(v)) < 0) {
				json_decref(out);
				return NULL;
			}
		}
		return out;
	default:
		return json_copy((json_t *)j);
	}
}

char *p11g_text_json_safe(const char *json)
{
	const unsigned char *p = (const unsigned char *)json;
	size_t len = strlen(json), done = 0;
	/* The longest rewrite is one byte (DEL) as six. */
	char *out = malloc(6 * len + 1);

	if (!out)
		return NULL;
	for (size_t i = 0; i < len;) {
		uint32_t cp = 0;
		size_t k = p11g_utf8_decode(p + i, len - i, &cp);
		/* C0 controls never stand raw in json_dumps' text (escaped in strings, and
		 * outside them only its own newlines and spaces): everything else refused is
		 * inside a string, where \uHHHH means the same character. */
		if (k && cp >= 0x7f && p11g_text_refused(cp) && cp < 0x10000) {
			done += (size_t)snprintf(out + done, 7, "\\u%04X", (unsigned)cp);
		} else if (k && cp >= 0x10000 && p11g_text_refused(cp)) {
			/* beyond the BMP: JSON's surrogate pair (12 bytes for 4) */
			uint32_t v = cp - 0x10000;
			done += (size_t)snprintf(out + done, 13, "\\u%04X\\u%04X",
			                         (unsigned)(0xd800 + (v >> 10)),
			                         (unsigned)(0xdc00 + (v & 0x3ff)));
		} else {
			if (!k)
				k = 1;
			memcpy(out + done, json + i, k);
			done += k;
		}
		i += k;
	}
	out[done] = '\0';
	return out;
}
