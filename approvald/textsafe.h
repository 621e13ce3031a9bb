/*
 * Text a requester, a token or a store supplies, before a person reads it: which characters
 * it may not hold (refused at request time) and how they are shown when a store or a token
 * holds them anyway (escaped on output).
 *
 * Refused: C0 controls but tab (so LF and CR too), DEL, C1 controls (U+0080..U+009F), the
 * bidirectional embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069), the
 * bidirectional marks (U+061C, U+200E, U+200F: invisible, and they reorder neutral
 * characters such as digits and punctuation around them where text is laid out
 * bidirectionally), the Unicode line and paragraph separators (U+2028, U+2029: line
 * breaks where LF and CR are refused) and characters that show nothing (textsafe.c's
 * invisible(): two texts that differ must not look the same).  Escapes beyond U+FFFF are
 * \UHHHHHHHH, and JSON's surrogate pairs in p11g_text_json_safe.
 */
#ifndef P11GATE_TEXTSAFE_H
#define P11GATE_TEXTSAFE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What p11g_text_find reports for a byte that does not start valid UTF-8 (the byte in the
 * low eight bits). */
#define P11G_TEXT_NOT_UTF8 0x80000000u

/* One UTF-8 sequence at s[0..len) (len > 0): its length (1 to 4) with the code point in
 * *ret, or 0 when s[0] does not start a valid one (overlong, a surrogate, above U+10FFFF,
 * cut short). */
size_t p11g_utf8_decode(const unsigned char *s, size_t len, uint32_t *ret);

/* Whether a person's text may not hold code point cp (tab is allowed). */
bool p11g_text_refused(uint32_t cp);

/* What cp is, for a message: "a control character", "a bidirectional formatting
 * character", "a line or paragraph separator", "a byte that is not UTF-8". */
const char *p11g_text_kind(uint32_t cp);

/* The byte offset of the first refused character of s[0..len) or of its first byte that does
 * not start valid UTF-8, with the character (or P11G_TEXT_NOT_UTF8 | byte) in *ret_cp; -1 when
 * the text holds neither.  ret_cp may be NULL. */
ptrdiff_t p11g_text_find(const char *s, size_t len, uint32_t *ret_cp);

/*
 * Writes s[0..len) into buf (n bytes, NUL-terminated when n > 0) with every refused
 * character, tab, backslash and byte that is not UTF-8 shown as a visible escape: \\, \t,
 * \n, \r, \xHH for the other C0 controls, DEL and bytes that are not UTF-8, \uHHHH for
 * refused characters from U+0080 up.  Everything else, other scripts included, is copied
 * as it is.  Returns the length of the whole escaped text, like snprintf; a text cut short
 * is cut between escapes, never inside one or inside a UTF-8 sequence.
 */
size_t p11g_text_escape(char *buf, size_t n, const char *s, size_t len);

/* The same in a new string (malloc); NULL when out of memory. */
char *p11g_text_escaped(const char *s, size_t len);

/* A deep copy of j in which every string and every member name is escaped as above, for
 * printing to a person; NULL when out of memory. */
json_t *p11g_text_escape_json(const json_t *j);

/* JSON text as json_dumps writes it, with the refused characters jansson leaves raw (DEL and
 * those from U+0080 up) rewritten as \uHHHH escapes: the same JSON value, and nothing a
 * terminal obeys (jansson already escapes the C0 controls).  malloc; NULL when out of
 * memory. */
char *p11g_text_json_safe(const char *json);

#endif
