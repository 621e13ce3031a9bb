/* ocisign's parsed command line, shared by option parsing and the verbs. */
#ifndef OCISIGN_TOOL_CFG_H
#define OCISIGN_TOOL_CFG_H

#include "ocisign.h"
#include "payload.h"

#define OCI_DEFAULT_WAIT 3600 /* seconds sign --request waits for approval */

enum oci_verb {
	OCI_GENERATE,
	OCI_SIGN,
	OCI_ATTACH,
	OCI_VERIFY,
	OCI_PUBKEY,
	OCI_CSR,
	OCI_IMPORT_CERT,
};

#define OCI_SANS_MAX 32

/* --format: what sign writes and verify reads, what pubkey prints */
enum oci_format {
	OCI_FMT_COSIGN,         /* sign, verify: cosign's .sig manifests (the default) */
	OCI_FMT_SIMPLE_SIGNING, /* sign, verify: OpenPGP signed claims in a lookaside store */
	OCI_FMT_PEM,            /* pubkey: SubjectPublicKeyInfo (the default) */
	OCI_FMT_OPENPGP,        /* pubkey: an OpenPGP public key with a user ID */
};

struct oci_config {
	enum oci_verb verb;
	const char *verb_name;
	const char *image;
	const char *key;      /* sign, pubkey: PKCS#11 URI; verify: PEM file */
	const char *module;   /* --module */
	const char *pin_file; /* --pin-file */
	bool request, recursive;
	struct oci_annotation *ann;
	size_t n_ann;
	const char *payload_file, *signature_file;
	const char *socket;
	const char *id_token;        /* --id-token FILE|-, else $APPROVALD_ID_TOKEN_FILE */
	const char *id_token_env;    /* --id-token-env NAME */
	const char *id_token_github; /* --id-token-github AUDIENCE */
	long wait_s;
	bool wait_set; /* --wait given */
	/* certificates */
	const char *subject;            /* csr --subject */
	const char *sans[OCI_SANS_MAX]; /* csr --san, n_sans of them */
	size_t n_sans;
	const char *output;     /* csr -o */
	const char *cert_file;  /* import-cert --cert, sign --certificate */
	const char *chain_file; /* import-cert --chain, sign --certificate-chain */
	bool cert_from_token;   /* sign --certificate-from-token */
	const char *roots_file; /* verify --certificate-chain */
	const char *identity;   /* verify --certificate-identity */
	/* OpenPGP and simple signing */
	enum oci_format format;
	const char *uid;         /* pubkey --uid */
	uint32_t created;        /* --created, as seconds since the epoch */
	bool created_set;        /* --created given */
	const char *sigstore;    /* sign --sigstore-staging, verify --sigstore */
	const char *keyring;     /* verify --keyring */
	const char *openpgp_key; /* sign --openpgp-key: the exported key, for its creation time */
	/* registry */
	const char *creds;
	const char *ca_file;
	bool insecure;
};

#define OCI_PARAM_RUN (-1)

/* Parses argv after the program name.  Returns OCI_PARAM_RUN to run the
 * verb, or an exit status (0 after printing help or the version,
 * OCI_EXIT_USAGE after printing one error line). */
int oci_getparam(int argc, char **argv, struct oci_config *cfg);
void oci_config_free(struct oci_config *cfg);

/* The verbs; each returns the exit status. */
int oci_operate(struct oci_config *cfg);

#endif
