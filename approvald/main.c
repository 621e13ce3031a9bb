/* approvald: the approval daemon and its command line, one binary. */
#include <locale.h>
#include <signal.h>

#include "approvald/cli.h"

int main(int argc, char **argv)
{
	/* A reader that goes away (a pager, head) must not kill us mid-write. */
	signal(SIGPIPE, SIG_IGN);
	setlocale(LC_CTYPE, "");
	return p11g_cli_main(argc, argv);
}
