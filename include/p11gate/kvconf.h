/* `key = value` configuration text: the module's p11gate.conf and approvald's --config file. */
#ifndef P11GATE_KVCONF_H
#define P11GATE_KVCONF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "p11gate/common.h"

/*
 * A line is blank, a comment, or `key = value`: blanks (space, tab, CR, VT,
 * FF) around key and value are dropped, the key is not empty, the value may
 * be, and the first '=' ends the key.  The tokenizer only splits: what keys
 * exist and what their values mean is each configuration's own, and so are
 * its messages, which name a position as the tokenizer reports it; the
 * tokenizer's own refusals (a line that is no setting) come with their
 * message.
 */

/* Where a '#' starts a comment. */
enum p11g_kv_comments {
	/* At a line's start or after a blank, so that a value may hold one
	 * ("/opt/a#b/x.so"): the module's p11gate.conf. */
	P11G_KV_COMMENT_AFTER_BLANK,
	/* Anywhere: approvald's configuration. */
	P11G_KV_COMMENT_ANYWHERE,
};

/* A setting: key and value point into the line (not NUL-terminated, and
 * holding no NUL byte). */
struct p11g_kv {
	const char *key, *value;
	size_t key_len, value_len;
	unsigned line;         /* 1-based; set by p11g_kv_next */
	unsigned column;       /* 1-based byte column of the key, or of the error */
	unsigned value_column; /* of the value (just after the blanks when it is empty) */
	const char *error;     /* a refused line: what is wrong at column; else NULL */
};

/* One line, without its '\n'.  1 with *ret a setting, 0 for a blank or
 * comment line, -1 for anything else, with ret->error and ret->column:
 * a NUL byte outside a comment (at it), no '=' (at the first byte after
 * the first word that is not '=', or just past the line when there is
 * none), or nothing before the '=' (at the '='). */
int p11g_kv_parse_line(const char *line, size_t len, enum p11g_kv_comments comments,
                       struct p11g_kv *ret);

/* Walks a whole text; zero-initialise, then set text, len and comments. */
struct p11g_kv_reader {
	const char *text;
	size_t len;
	enum p11g_kv_comments comments;
	size_t pos;    /* the reader's own */
	unsigned line; /* the reader's own: the last line read */
};

/* The next setting: 1 with *ret filled (line included), 0 at the end of the
 * text, -1 for a line p11g_kv_parse_line refuses (ret->line and ret->column
 * say where, ret->error what). */
int p11g_kv_next(struct p11g_kv_reader *r, struct p11g_kv *ret);

/*
 * The one form of a message about a place in a text, policy files' and both
 * configurations' alike: err gets code and "FILE:LINE:COLUMN: message", or
 * "FILE: message" when line is 0 (no place, or not a text: an environment
 * variable).  A FILE too long for half of err->msg loses its start ("..."),
 * never the position or the start of the message.  -1.
 */
__attribute__((format(printf, 6, 7))) int p11g_err_set_at(p11g_err *err, const char *code,
                                                          const char *file, unsigned line,
                                                          unsigned column, const char *fmt, ...);
__attribute__((format(printf, 6, 0))) int p11g_err_vset_at(p11g_err *err, const char *code,
                                                           const char *file, unsigned line,
                                                           unsigned column, const char *fmt,
                                                           va_list ap);

#endif
