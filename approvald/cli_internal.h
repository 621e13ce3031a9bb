/* What the approvald command line's files share (cli.c, cli_audit.c). */
#ifndef P11GATE_CLI_INTERNAL_H
#define P11GATE_CLI_INTERNAL_H

#include <jansson.h>

#include "p11gate/common.h"

#define CALL_TIMEOUT_MS 30000

#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))

/* --socket PATH, when given */
extern const char *cli_socket_opt;

/* "approvald: MESSAGE" and the --help hint; returns EXIT_USAGE. */
int cli_usage_error(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The one error line, "approvald: WHAT MESSAGE (CODE)", escaped. */
void cli_print_error(const char *what, const p11g_err *err);
/* cli_print_error and the exit status err calls for. */
int cli_report(const p11g_err *err);
/* One call; on failure prints the one-line error and returns the exit code. */
int cli_call(const char *verb, json_t *args, json_t **ret, int timeout_ms);
/* JSON on a line, with what a terminal would obey escaped. */
void cli_print_json(const json_t *j, size_t flags);
/* A text from the daemon, escaped for a terminal (a new reference). */
json_t *cli_shown(const json_t *j);
/* Members: "" and 0 when absent. */
const char *cli_str(const json_t *obj, const char *name);
int64_t cli_num(const json_t *obj, const char *name);
void cli_fmt_time(int64_t t, char *buf, size_t n);
void cli_fmt_who(const json_t *who, char *buf, size_t n);

/* cli_show.c: an operation in full (-1, nothing printed, when out of memory), a table of them,
 * and a pager for long tables when a person reads them. */
int cli_print_op(FILE *f, const json_t *raw);
void cli_print_op_table(FILE *f, const json_t *raw);
FILE *cli_pager_open(size_t lines);
void cli_pager_close(FILE *f);

/* approvald audit's options. */
struct p11g_cli_audit {
	bool json, verify, full, checkpoints, export_pubkey;
	const char *pubkey, *dir, *config;
	uint64_t since;
};
int p11g_cli_audit(const struct p11g_cli_audit *a);

#endif
