/* ocisign's entry point: global setup, command-line parsing, then the verb. */
#include <curl/curl.h>

#include "tool_cfg.h"

int main(int argc, char **argv)
{
	struct oci_config cfg;
	int rc = oci_getparam(argc - 1, argv + 1, &cfg);

	if (rc != OCI_PARAM_RUN) {
		oci_config_free(&cfg);
		return rc;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fputs("ocisign: cannot initialise libcurl\n", stderr);
		oci_config_free(&cfg);
		return OCI_EXIT_FAIL;
	}
	rc = oci_operate(&cfg);
	oci_config_free(&cfg);
	curl_global_cleanup();
	return rc;
}
