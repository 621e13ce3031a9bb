/* `key = value` configuration text: the module's p11gate.conf and approvald's --config file. */
#ifndef P11GATE_KVCONF_H
#define P11GATE_KVCONF_H

#include <stdbool.h>
#include <stddef.h>

/*
 * A line is blank, a comment, or `key = value`: blanks (space, tab, CR, VT,
 * FF) around key and value are dropped, the key is not empty, the value may
 * be, and the first '=' ends the key.  The tokenizer only splits: what keys
 * exist and what their values mean is each configuration's own, and so are
 * its messages, which name a position as the tokenizer reports it.
 */

/* Where a '#' starts a comment. */
enum p11g_kv_comments {
	/* At a line's start or after a blank, so that a value may hold one
	 * ("/opt/a#b/x.so"): the module's p11gate.conf. */
	P11G_KV_COMMENT_AFTER_BLANK,
	/* Anywhere: approvald's configuration. */
	P11G_KV_COMMENT_ANYWHERE,
};

/* A setting: key and value point into the line (not NUL-terminated; a NUL
 * byte of the text is kept, for the setting to refuse). */
struct p11g_kv {
	const char *key, *value;
	size_t key_len, value_len;
	unsigned line;         /* 1-based; set by p11g_kv_next */
	unsigned column;       /* 1-based byte column of the key, or of the error */
	unsigned value_column; /* of the value (just after the blanks when it is empty) */
};

/* One line, without its '\n'.  1 with *ret a setting, 0 for a blank or
 * comment line, -1 for anything else (no '=', or nothing before it), with
 * ret->column at the line's first non-blank byte. */
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
 * say where). */
int p11g_kv_next(struct p11g_kv_reader *r, struct p11g_kv *ret);

#endif
