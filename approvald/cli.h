/* The approvald command line (every verb but serve is a client of the socket). */
#ifndef P11GATE_CLI_H
#define P11GATE_CLI_H

/* Runs argv[1] as a verb; returns the exit status. */
int p11g_cli_main(int argc, char **argv);

#endif
