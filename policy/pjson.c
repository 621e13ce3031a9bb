/* Strict JSON parsing with a line and column on every value, for policy files and snapshots. */
#include "policy/pjson.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

struct parser {
	const unsigned char *p, *end;
	unsigned line, column;
	unsigned depth;
	struct pjson_error *err;
};

__attribute__((format(printf, 4, 5))) static void *fail_at(struct parser *ps, unsigned line,
                                                           unsigned column, const char *fmt, ...)
{
	va_list ap;
	ps->err->line = line;
	ps->err->column = column;
	va_start(ap, fmt);
	vsnprintf(ps->err->msg, sizeof(ps->err->msg), fmt, ap);
	va_end(ap);
	return NULL;
}

static void *fail_oom(struct parser *ps)
{
	return fail_at(ps, 0, 0, "out of memory");
}

/* The column counts characters: continuation bytes of a UTF-8 sequence do not move it. */
static void advance(struct parser *ps)
{
	unsigned char c = *ps->p++;
	if (c == '\n') {
		ps->line++;
		ps->column = 1;
	} else if ((c & 0xc0) != 0x80) {
		ps->column++;
	}
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end &&
	       (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		advance(ps);
}

static void *fail_unexpected(struct parser *ps)
{
	if (ps->p >= ps->end)
		return fail_at(ps, ps->line, ps->column, "unexpected end of input");
	unsigned char c = *ps->p;
	if (c >= 0x21 && c < 0x7f)
		return fail_at(ps, ps->line, ps->column, "unexpected '%c'", c);
	if (c >= 0x80)
		return fail_at(ps, ps->line, ps->column, "unexpected non-ASCII character");
	return fail_at(ps, ps->line, ps->column, "unexpected control character 0x%02x", c);
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
	size_t avail = (size_t)(end - p);
	unsigned char c = p[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xbf;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (avail < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

struct buf {
	char *s;
	size_t len, cap;
};

static int buf_put(struct buf *b, const void *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 32;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *s = realloc(b->s, cap);
		if (!s)
			return -1;
		b->s = s;
		b->cap = cap;
	}
	memcpy(b->s + b->len, data, n);
	b->len += n;
	b->s[b->len] = '\0';
	return 0;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *ret)
{
	unsigned v = 0;
	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int d;
		if (p[i] >= '0' && p[i] <= '9')
			d = p[i] - '0';
		else if (p[i] >= 'a' && p[i] <= 'f')
			d = p[i] - 'a' + 10;
		else if (p[i] >= 'A' && p[i] <= 'F')
			d = p[i] - 'A' + 10;
		else
			return -1;
		v = v << 4 | (unsigned)d;
	}
	*ret = v;
	return 0;
}

static size_t utf8_encode(unsigned cp, unsigned char out[4])
{
	if (cp < 0x80) {
		out[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (unsigned char)(0xc0 | cp >> 6);
		out[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (unsigned char)(0xe0 | cp >> 12);
		out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (unsigned char)(0xf0 | cp >> 18);
	out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

/* At a '"'; on success ret holds the decoded text and the parser is past the closing quote. */
static int parse_string(struct parser *ps, struct buf *ret)
{
	unsigned line = ps->line, column = ps->column;
	struct buf b = {0};

	advance(ps);
	for (;;) {
		if (ps->p >= ps->end) {
			fail_at(ps, line, column, "unterminated string");
			goto fail;
		}
		unsigned char c = *ps->p;
		if (c == '"') {
			advance(ps);
			break;
		}
		if (c == '\n') {
			fail_at(ps, line, column, "unterminated string (a line ends inside it)");
			goto fail;
		}
		if (c < 0x20) {
			fail_at(ps, ps->line, ps->column, "control character 0x%02x in string", c);
			goto fail;
		}
		if (c == '\\') {
			unsigned eline = ps->line, ecolumn = ps->column;
			unsigned char out[4];
			size_t n = 1;
			if (ps->end - ps->p < 2) {
				fail_at(ps, line, column, "unterminated string");
				goto fail;
			}
			switch (ps->p[1]) {
			case '"':
			case '\\':
			case '/':
				out[0] = ps->p[1];
				break;
			case 'b':
				out[0] = '\b';
				break;
			case 'f':
				out[0] = '\f';
				break;
			case 'n':
				out[0] = '\n';
				break;
			case 'r':
				out[0] = '\r';
				break;
			case 't':
				out[0] = '\t';
				break;
			case 'u': {
				unsigned cp, lo;
				if (hex4(ps->p + 2, ps->end, &cp) < 0) {
					fail_at(ps, eline, ecolumn,
					        "bad \\u escape: expected 4 hex digits");
					goto fail;
				}
				if (cp == 0) {
					fail_at(ps, eline, ecolumn,
					        "\\u0000 is not allowed in strings");
					goto fail;
				}
				if (cp >= 0xdc00 && cp <= 0xdfff) {
					fail_at(ps, eline, ecolumn, "unpaired surrogate \\u%04x",
					        cp);
					goto fail;
				}
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if (ps->end - ps->p < 12 || ps->p[6] != '\\' ||
					    ps->p[7] != 'u' || hex4(ps->p + 8, ps->end, &lo) < 0 ||
					    lo < 0xdc00 || lo > 0xdfff) {
						fail_at(ps, eline, ecolumn,
						        "unpaired surrogate \\u%04x", cp);
						goto fail;
					}
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					for (int i = 0; i < 6; i++)
						advance(ps);
				}
				n = utf8_encode(cp, out);
				for (int i = 0; i < 4; i++)
					advance(ps);
				break;
			}
			default:
				if (ps->p[1] >= 0x20 && ps->p[1] < 0x7f)
					fail_at(ps, eline, ecolumn, "bad escape '\\%c'", ps->p[1]);
				else
					fail_at(ps, eline, ecolumn, "bad escape");
				goto fail;
			}
			advance(ps);
			advance(ps);
			if (buf_put(&b, out, n) < 0) {
				fail_oom(ps);
				goto fail;
			}
			continue;
		}
		size_t n = utf8_len(ps->p, ps->end);
		if (n == 0) {
			fail_at(ps, ps->line, ps->column, "invalid UTF-8 in string");
			goto fail;
		}
		if (buf_put(&b, ps->p, n) < 0) {
			fail_oom(ps);
			goto fail;
		}
		for (size_t i = 0; i < n; i++)
			advance(ps);
	}
	if (!b.s && buf_put(&b, "", 0) < 0) {
		fail_oom(ps);
		goto fail;
	}
	*ret = b;
	return 0;
fail:
	free(b.s);
	return -1;
}

static bool is_digit(const struct parser *ps, const unsigned char *p)
{
	return p < ps->end && *p >= '0' && *p <= '9';
}

static struct pjson_value *parse_number(struct parser *ps, struct pjson_value *v)
{
	const unsigned char *p = ps->p;
	bool neg = false, integer = true;

	if (*p == '-') {
		neg = true;
		p++;
	}
	if (!is_digit(ps, p))
		return fail_at(ps, ps->line, ps->column, "bad number");
	if (*p == '0' && is_digit(ps, p + 1))
		return fail_at(ps, ps->line, ps->column, "bad number: leading zero");
	/* Accumulate as a negative number so INT64_MIN fits. */
	int64_t acc = 0;
	bool overflow = false;
	while (is_digit(ps, p)) {
		int d = *p - '0';
		if (acc < (INT64_MIN + d) / 10)
			overflow = true;
		else
			acc = acc * 10 - d;
		p++;
	}
	if (p < ps->end && *p == '.') {
		integer = false;
		p++;
		if (!is_digit(ps, p))
			return fail_at(ps, ps->line, ps->column,
			               "bad number: digits expected after '.'");
		while (is_digit(ps, p))
			p++;
	}
	if (p < ps->end && (*p == 'e' || *p == 'E')) {
		integer = false;
		p++;
		if (p < ps->end && (*p == '+' || *p == '-'))
			p++;
		if (!is_digit(ps, p))
			return fail_at(ps, ps->line, ps->column,
			               "bad number: digits expected in the exponent");
		while (is_digit(ps, p))
			p++;
	}
	if (integer) {
		if (overflow || (!neg && acc == INT64_MIN))
			return fail_at(ps, ps->line, ps->column, "integer out of range");
		v->type = PJSON_INT;
		v->u.i = neg ? acc : -acc;
	} else {
		v->type = PJSON_REAL;
	}
	while (ps->p < p)
		advance(ps);
	return v;
}

static struct pjson_value *parse_value(struct parser *ps);

static int array_push(struct pjson_value *a, struct pjson_value *item, size_t *cap)
{
	if (a->u.arr.n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 4;
		struct pjson_value **v = realloc(a->u.arr.v, ncap * sizeof(*v));
		if (!v)
			return -1;
		a->u.arr.v = v;
		*cap = ncap;
	}
	a->u.arr.v[a->u.arr.n++] = item;
	return 0;
}

static struct pjson_value *parse_array(struct parser *ps, struct pjson_value *a)
{
	size_t cap = 0;

	a->type = PJSON_ARRAY;
	advance(ps);
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == ']') {
		advance(ps);
		return a;
	}
	for (;;) {
		struct pjson_value *item = parse_value(ps);
		if (!item)
			return NULL;
		if (array_push(a, item, &cap) < 0) {
			pjson_free(item);
			return fail_oom(ps);
		}
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ']') {
			advance(ps);
			return a;
		}
		if (ps->p >= ps->end)
			return fail_unexpected(ps);
		if (*ps->p != ',')
			return fail_at(ps, ps->line, ps->column, "expected ',' or ']'");
		unsigned cline = ps->line, ccolumn = ps->column;
		advance(ps);
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ']')
			return fail_at(ps, cline, ccolumn, "trailing comma");
	}
}

/* Duplicate detection stays linear in the member count: an open-addressing
 * table of member indices, grown as the object grows. */
struct name_set {
	size_t *slot; /* member index + 1; 0 is empty */
	size_t cap;
};

static uint64_t name_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static int name_set_grow(struct name_set *set, const struct pjson_value *o)
{
	size_t cap = set->cap ? set->cap * 2 : 16;
	size_t *slot = calloc(cap, sizeof(*slot));
	if (!slot)
		return -1;
	for (size_t i = 0; i < o->u.obj.n; i++) {
		const struct pjson_member *m = &o->u.obj.v[i];
		size_t j = name_hash(m->name, m->name_len) & (cap - 1);
		while (slot[j])
			j = (j + 1) & (cap - 1);
		slot[j] = i + 1;
	}
	free(set->slot);
	set->slot = slot;
	set->cap = cap;
	return 0;
}

/* The index of an earlier member with this name, or -1 after adding the
 * member at index idx; -2 on allocation failure. */
static ssize_t name_set_add(struct name_set *set, const struct pjson_value *o, size_t idx)
{
	const struct pjson_member *m = &o->u.obj.v[idx];
	if ((idx + 1) * 2 > set->cap) {
		/* Rebuild from the members before idx; idx is inserted below. */
		struct pjson_value tmp = *o;
		tmp.u.obj.n = idx;
		if (name_set_grow(set, &tmp) < 0)
			return -2;
	}
	size_t j = name_hash(m->name, m->name_len) & (set->cap - 1);
	while (set->slot[j]) {
		const struct pjson_member *other = &o->u.obj.v[set->slot[j] - 1];
		if (other->name_len == m->name_len &&
		    memcmp(other->name, m->name, m->name_len) == 0)
			return (ssize_t)(set->slot[j] - 1);
		j = (j + 1) & (set->cap - 1);
	}
	set->slot[j] = idx + 1;
	return -1;
}

static struct pjson_value *parse_object(struct parser *ps, struct pjson_value *o)
{
	size_t cap = 0;
	struct name_set set = {0};
	struct pjson_value *result = NULL;

	o->type = PJSON_OBJECT;
	advance(ps);
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '}') {
		advance(ps);
		return o;
	}
	for (;;) {
		if (ps->p >= ps->end || *ps->p != '"') {
			if (ps->p < ps->end && *ps->p != '}' && *ps->p != ']' && *ps->p != ',')
				fail_at(ps, ps->line, ps->column,
				        "expected a member name in double quotes");
			else
				fail_unexpected(ps);
			goto out;
		}
		if (o->u.obj.n == cap) {
			size_t ncap = cap ? cap * 2 : 4;
			struct pjson_member *v = realloc(o->u.obj.v, ncap * sizeof(*v));
			if (!v) {
				fail_oom(ps);
				goto out;
			}
			o->u.obj.v = v;
			cap = ncap;
		}
		struct pjson_member *m = &o->u.obj.v[o->u.obj.n];
		struct buf name;
		memset(m, 0, sizeof(*m));
		m->line = ps->line;
		m->column = ps->column;
		if (parse_string(ps, &name) < 0)
			goto out;
		m->name = name.s;
		m->name_len = name.len;
		o->u.obj.n++;
		ssize_t dup = name_set_add(&set, o, o->u.obj.n - 1);
		if (dup == -2) {
			fail_oom(ps);
			goto out;
		}
		if (dup >= 0) {
			const struct pjson_member *first = &o->u.obj.v[dup];
			fail_at(ps, m->line, m->column, "duplicate member \"%s\" (first at %u:%u)",
			        m->name, first->line, first->column);
			goto out;
		}
		skip_ws(ps);
		if (ps->p >= ps->end || *ps->p != ':') {
			if (ps->p < ps->end)
				fail_at(ps, ps->line, ps->column, "expected ':' after member name");
			else
				fail_unexpected(ps);
			goto out;
		}
		advance(ps);
		m->value = parse_value(ps);
		if (!m->value)
			goto out;
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == '}') {
			advance(ps);
			result = o;
			goto out;
		}
		if (ps->p >= ps->end || *ps->p != ',') {
			if (ps->p < ps->end)
				fail_at(ps, ps->line, ps->column, "expected ',' or '}'");
			else
				fail_unexpected(ps);
			goto out;
		}
		unsigned cline = ps->line, ccolumn = ps->column;
		advance(ps);
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == '}') {
			fail_at(ps, cline, ccolumn, "trailing comma");
			goto out;
		}
	}
out:
	free(set.slot);
	return result;
}

static struct pjson_value *parse_literal(struct parser *ps, struct pjson_value *v)
{
	static const struct {
		const char *text;
		enum pjson_type type;
		bool b;
	} lits[] = {
	    {"true", PJSON_BOOL, true},
	    {"false", PJSON_BOOL, false},
	    {"null", PJSON_NULL, false},
	};
	for (size_t i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
		size_t n = strlen(lits[i].text);
		if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, lits[i].text, n) == 0) {
			v->type = lits[i].type;
			v->u.b = lits[i].b;
			for (size_t k = 0; k < n; k++)
				advance(ps);
			return v;
		}
	}
	return fail_at(ps, ps->line, ps->column, "invalid literal (expected true, false or null)");
}

static struct pjson_value *parse_value(struct parser *ps)
{
	struct pjson_value *v, *r;

	skip_ws(ps);
	if (ps->p >= ps->end)
		return fail_unexpected(ps);
	v = calloc(1, sizeof(*v));
	if (!v)
		return fail_oom(ps);
	v->line = ps->line;
	v->column = ps->column;
	switch (*ps->p) {
	case '{':
	case '[':
		if (ps->depth >= PJSON_MAX_DEPTH) {
			r = fail_at(ps, ps->line, ps->column, "nesting deeper than %d",
			            PJSON_MAX_DEPTH);
			break;
		}
		ps->depth++;
		r = *ps->p == '{' ? parse_object(ps, v) : parse_array(ps, v);
		ps->depth--;
		break;
	case '"': {
		struct buf b;
		v->type = PJSON_STRING;
		r = NULL;
		if (parse_string(ps, &b) == 0) {
			v->u.str.s = b.s;
			v->u.str.len = b.len;
			r = v;
		}
		break;
	}
	case 't':
	case 'f':
	case 'n':
		r = parse_literal(ps, v);
		break;
	default:
		if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
			r = parse_number(ps, v);
		else
			r = fail_unexpected(ps);
		break;
	}
	if (!r)
		pjson_free(v);
	return r;
}

int pjson_parse(const char *text, size_t len, struct pjson_value **ret, struct pjson_error *err)
{
	struct parser ps = {
	    .p = (const unsigned char *)text,
	    .end = (const unsigned char *)text + len,
	    .line = 1,
	    .column = 1,
	    .err = err,
	};
	struct pjson_value *v;

	if (len > PJSON_MAX_INPUT) {
		fail_at(&ps, 0, 0, "larger than %u bytes", PJSON_MAX_INPUT);
		return -1;
	}
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
		fail_at(&ps, 1, 1, "byte order mark is not allowed");
		return -1;
	}
	v = parse_value(&ps);
	if (!v)
		return -1;
	skip_ws(&ps);
	if (ps.p < ps.end) {
		fail_at(&ps, ps.line, ps.column, "unexpected data after the JSON value");
		pjson_free(v);
		return -1;
	}
	*ret = v;
	return 0;
}

void pjson_free(struct pjson_value *v)
{
	if (!v)
		return;
	switch (v->type) {
	case PJSON_STRING:
		free(v->u.str.s);
		break;
	case PJSON_ARRAY:
		for (size_t i = 0; i < v->u.arr.n; i++)
			pjson_free(v->u.arr.v[i]);
		free(v->u.arr.v);
		break;
	case PJSON_OBJECT:
		for (size_t i = 0; i < v->u.obj.n; i++) {
			free(v->u.obj.v[i].name);
			pjson_free(v->u.obj.v[i].value);
		}
		free(v->u.obj.v);
		break;
	default:
		break;
	}
	free(v);
}

const struct pjson_member *pjson_get(const struct pjson_value *obj, const char *name)
{
	if (!obj || obj->type != PJSON_OBJECT)
		return NULL;
	for (size_t i = 0; i < obj->u.obj.n; i++)
		if (strcmp(obj->u.obj.v[i].name, name) == 0)
			return &obj->u.obj.v[i];
	return NULL;
}

const char *pjson_type_name(enum pjson_type t)
{
	switch (t) {
	case PJSON_NULL:
		return "null";
	case PJSON_BOOL:
		return "a boolean";
	case PJSON_INT:
		return "an integer";
	case PJSON_REAL:
		return "a number";
	case PJSON_STRING:
		return "a string";
	case PJSON_ARRAY:
		return "an array";
	case PJSON_OBJECT:
		return "an object";
	}
	return "a value";
}
