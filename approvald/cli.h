/* The approvald command line (every verb but serve, policy check and audit --state-dir is a
 * client of the socket; those three are local.h's). */
#ifndef P11GATE_CLI_H
#define P11GATE_CLI_H

/* Exit statuses of every verb. */
#define EXIT_REFUSED     1
#define EXIT_USAGE       2
#define EXIT_UNREACHABLE 3

/* Runs argv[1] as a verb; returns the exit status. */
int p11g_cli_main(int argc, char **argv);

#endif
