/* A small strict JSON parser that records the line and column of every value and name. */
#ifndef P11GATE_PJSON_H
#define P11GATE_PJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PJSON_MAX_INPUT (1024u * 1024u) /* bytes */
#define PJSON_MAX_DEPTH 64              /* nested arrays and objects */

enum pjson_type {
	PJSON_NULL,
	PJSON_BOOL,
	PJSON_INT,  /* integer syntax that fits int64 */
	PJSON_REAL, /* a fraction or an exponent: no value kept, nothing in a policy takes one;
	               the type lets the caller say "expected an integer" */
	PJSON_STRING,
	PJSON_ARRAY,
	PJSON_OBJECT,
};

struct pjson_value;

struct pjson_member {
	char *name; /* NUL-terminated; "\u0000" is refused, so no NUL inside */
	size_t name_len;
	unsigned line, column;
	struct pjson_value *value;
};

struct pjson_value {
	enum pjson_type type;
	unsigned line, column; /* 1-based; column counts characters, not bytes */
	union {
		bool b;
		int64_t i;
		struct {
			char *s; /* NUL-terminated, valid UTF-8, no NUL inside */
			size_t len;
		} str;
		struct {
			struct pjson_value **v;
			size_t n;
		} arr;
		struct {
			struct pjson_member *v; /* in document order */
			size_t n;
		} obj;
	} u;
};

/* Where and why parsing failed.  line 0 means the input as a whole. */
struct pjson_error {
	unsigned line, column;
	char msg[200];
};

/*
 * Parses exactly one JSON value from text[0..len), with nothing but
 * whitespace after it.  Refuses duplicate member names (at the second),
 * control characters and bad escapes in strings, "\u0000", lone surrogates,
 * invalid UTF-8 anywhere, nesting deeper than PJSON_MAX_DEPTH, integers
 * outside int64 and input over PJSON_MAX_INPUT.  0, or -1 with *err filled
 * (-1 with line 0 and "out of memory" when allocation fails).
 */
int pjson_parse(const char *text, size_t len, struct pjson_value **ret, struct pjson_error *err);
void pjson_free(struct pjson_value *v);

/* The member called name, or NULL. */
const struct pjson_member *pjson_get(const struct pjson_value *obj, const char *name);

/* "null", "a boolean", "an integer", "a number", "a string", "an array", "an object". */
const char *pjson_type_name(enum pjson_type t);

#endif
