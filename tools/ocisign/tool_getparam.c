/* ocisign's command line: the verbs' options, their help texts, and usage errors. */
#include <getopt.h>

#include "tool_cfg.h"

#define COMMON_HELP                                                                                \
	"\nRegistry options:\n"                                                                    \
	"  --creds USER:PASSWORD  Basic credentials, or an ECR authorization token (base64 of\n"   \
	"                         AWS:PASSWORD, used as it is) (default: $REGISTRY_AUTH_FILE, "    \
	"else\n"                                                                                   \
	"                         $DOCKER_CONFIG/config.json or ~/.docker/config.json "            \
	"\"auths\";\n"                                                                             \
	"                         an ECR token there is used as it is); bearer tokens are\n"       \
	"                         fetched as the registry's WWW-Authenticate asks\n"               \
	"  --ca-file FILE         trust these CA certificates for TLS (default: $SSL_CERT_FILE,\n" \
	"                         else the system's)\n"                                            \
	"  --insecure-registry    plain http instead of https (TLS is always verified)\n"

#define KEY_HELP                                                                                   \
	"  --key URI              "                                                                \
	"pkcs11:token=..;object=..[;id=..][?pin-value=..&module-path=..]\n"                        \
	"  --module SO            PKCS#11 module (default: the URI's module-path, else\n"          \
	"                         $OCISIGN_MODULE, else the installed p11gate.so)\n"               \
	"  --pin-file FILE        PIN on its first line, when the URI has no pin-value\n"          \
	"                         (else $PKCS11_PIN)\n"

static const char help_main[] =
    "Usage: ocisign VERB [OPTIONS] IMAGE\n"
    "cosign-compatible image signatures with keys in a PKCS#11 token, optionally\n"
    "behind human approval (approvald).\n"
    "\n"
    "Verbs:\n"
    "  generate IMAGE [-a KEY=VALUE]...     print the simple-signing payload (as cosign generate)\n"
    "  sign     --key URI [--module SO] [--request] [--recursive] [-a KEY=VALUE]... IMAGE\n"
    "                                       resolve, sign through PKCS#11, attach\n"
    "  attach   --payload FILE --signature FILE IMAGE\n"
    "                                       attach a payload and its base64 signature\n"
    "  verify   --key PUBLIC.pem IMAGE      check the attached signatures\n"
    "  pubkey   --key URI [--module SO]     print the key's public key (PEM)\n"
    "\n"
    "IMAGE is [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], read as cosign reads it\n"
    "(no registry, or docker.io: index.docker.io).  Signatures go to the\n"
    "sha256-<hex>.sig tag of the image's repository, as cosign stores them.\n"
    "'ocisign VERB --help' describes a verb.  Exit status: 0 done, 1 failed,\n"
    "2 usage error.\n";

static const char help_generate[] =
    "Usage: ocisign generate [OPTIONS] IMAGE\n"
    "Prints the cosign simple-signing payload for IMAGE on stdout, byte for byte\n"
    "what 'cosign generate' prints (no trailing newline).  A tag is resolved to\n"
    "its manifest digest at the registry; an image given by digest needs no\n"
    "registry.\n"
    "\n"
    "  -a, --annotation KEY=VALUE  add to the payload's \"optional\" (repeatable)\n" COMMON_HELP;

static const char help_sign[] =
    "Usage: ocisign sign --key URI [OPTIONS] IMAGE\n"
    "Resolves IMAGE to its manifest digest, builds the payload, signs it with the\n"
    "PKCS#11 key and attaches the signature (cosign's .sig tag).  ECDSA keys sign\n"
    "SHA-256 of the payload (CKM_ECDSA, DER result), RSA keys CKM_SHA256_RSA_PKCS,\n"
    "Ed25519 keys CKM_EDDSA.  Prints the signature tag of each signed manifest.\n"
    "\n" KEY_HELP "  -a, --annotation KEY=VALUE  add to the payload's \"optional\" (repeatable)\n"
    "  --recursive            for an index, also sign every manifest it lists\n"
    "  --request              first file an approvald request for this key, one use\n"
    "                         per payload, pinned to the SHA-256 of each payload and\n"
    "                         naming the image; print its id on stderr and wait for\n"
    "                         the decision\n"
    "  --socket PATH          approvald's socket (default $APPROVALD_SOCKET, else\n"
    "                         /run/approvald/approvald.sock); also given to p11gate.so\n"
    "                         as P11GATE_SOCKET unless that is set\n"
    "  --wait SECONDS         how long --request waits for approval (default 3600)\n"
    "  --id-token FILE|-      the pipeline's OIDC ID token for --request, for a key\n"
    "                         whose rule asks for one (default $APPROVALD_ID_TOKEN_FILE);\n"
    "  --id-token-env NAME    the token in that variable (GitLab CI's id_tokens)\n"
    "  --id-token-github AUDIENCE  the GitHub Actions job's token for AUDIENCE\n"
    "                         the request is named after the image, each payload after\n"
    "                         the manifest it signs\n" COMMON_HELP;

static const char help_attach[] =
    "Usage: ocisign attach --payload FILE --signature FILE [OPTIONS] IMAGE\n"
    "Attaches a payload and its signature (base64, as cosign attach signature takes\n"
    "it) to IMAGE: a layer of the sha256-<hex>.sig manifest, appended to the\n"
    "signatures already there; an identical one is not added twice.  The payload\n"
    "must name IMAGE's manifest digest.\n"
    "\n"
    "  --payload FILE         the payload that was signed\n"
    "  --signature FILE       its signature, base64\n" COMMON_HELP;

static const char help_verify[] =
    "Usage: ocisign verify --key PUBLIC.pem [OPTIONS] IMAGE\n"
    "Checks the signatures attached to IMAGE with a PEM public key (EC, RSA or\n"
    "Ed25519, as cosign verify --key): each payload's signature, and that the\n"
    "payload names IMAGE's manifest digest.  Prints each verified payload on its\n"
    "own line; exits 1 when none verifies.\n"
    "\n"
    "  --key FILE             PEM public key (ocisign pubkey writes one)\n" COMMON_HELP;

static const char help_pubkey[] =
    "Usage: ocisign pubkey --key URI [OPTIONS]\n"
    "Prints the key's public key as a PEM SubjectPublicKeyInfo: from the public key\n"
    "object with the URI's id or label (CKA_EC_PARAMS/CKA_EC_POINT, or the RSA\n"
    "modulus and exponent), else from the private key's attributes.\n"
    "\n" KEY_HELP;

enum {
	OPT_CREDS = 256,
	OPT_CA_FILE,
	OPT_INSECURE,
	OPT_KEY,
	OPT_MODULE,
	OPT_PIN_FILE,
	OPT_REQUEST,
	OPT_RECURSIVE,
	OPT_PAYLOAD,
	OPT_SIGNATURE,
	OPT_SOCKET,
	OPT_WAIT,
	OPT_ID_TOKEN,
	OPT_ID_TOKEN_ENV,
	OPT_ID_TOKEN_GITHUB,
	OPT_HELP,
};

static const struct option all_opts[] = {
    {"creds", required_argument, 0, OPT_CREDS},
    {"ca-file", required_argument, 0, OPT_CA_FILE},
    {"insecure-registry", no_argument, 0, OPT_INSECURE},
    {"key", required_argument, 0, OPT_KEY},
    {"module", required_argument, 0, OPT_MODULE},
    {"pin-file", required_argument, 0, OPT_PIN_FILE},
    {"request", no_argument, 0, OPT_REQUEST},
    {"recursive", no_argument, 0, OPT_RECURSIVE},
    {"annotation", required_argument, 0, 'a'},
    {"payload", required_argument, 0, OPT_PAYLOAD},
    {"signature", required_argument, 0, OPT_SIGNATURE},
    {"socket", required_argument, 0, OPT_SOCKET},
    {"wait", required_argument, 0, OPT_WAIT},
    {"id-token", required_argument, 0, OPT_ID_TOKEN},
    {"id-token-env", required_argument, 0, OPT_ID_TOKEN_ENV},
    {"id-token-github", required_argument, 0, OPT_ID_TOKEN_GITHUB},
    {"help", no_argument, 0, OPT_HELP},
    {0, 0, 0, 0},
};

struct verb_desc {
	const char *name;
	enum oci_verb verb;
	const char *help;
	const int *allowed; /* terminated by 0 */
	bool image;         /* takes IMAGE */
};

static const int gen_allowed[] = {'a', OPT_CREDS, OPT_CA_FILE, OPT_INSECURE, 0};
static const int sign_allowed[] = {OPT_KEY,
                                   OPT_MODULE,
                                   OPT_PIN_FILE,
                                   OPT_REQUEST,
                                   OPT_RECURSIVE,
                                   'a',
                                   OPT_SOCKET,
                                   OPT_WAIT,
                                   OPT_ID_TOKEN,
                                   OPT_ID_TOKEN_ENV,
                                   OPT_ID_TOKEN_GITHUB,
                                   OPT_CREDS,
                                   OPT_CA_FILE,
                                   OPT_INSECURE,
                                   0};
static const int attach_allowed[] = {OPT_PAYLOAD, OPT_SIGNATURE, OPT_CREDS,
                                     OPT_CA_FILE, OPT_INSECURE,  0};
static const int verify_allowed[] = {OPT_KEY, OPT_CREDS, OPT_CA_FILE, OPT_INSECURE, 0};
static const int pubkey_allowed[] = {OPT_KEY, OPT_MODULE, OPT_PIN_FILE, 0};

static const struct verb_desc verbs[] = {
    {"generate", OCI_GENERATE, help_generate, gen_allowed, true},
    {"sign", OCI_SIGN, help_sign, sign_allowed, true},
    {"attach", OCI_ATTACH, help_attach, attach_allowed, true},
    {"verify", OCI_VERIFY, help_verify, verify_allowed, true},
    {"pubkey", OCI_PUBKEY, help_pubkey, pubkey_allowed, false},
};

__attribute__((format(printf, 2, 3))) static int usage(const char *verb, const char *fmt, ...)
{
	va_list ap;
	fputs("ocisign: ", stderr);
	if (verb)
		fprintf(stderr, "%s: ", verb);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see 'ocisign %s%s--help')\n", verb ? verb : "", verb ? " " : "");
	return OCI_EXIT_USAGE;
}

static bool allowed(const struct verb_desc *v, int opt)
{
	for (const int *p = v->allowed; *p; p++)
		if (*p == opt)
			return true;
	return false;
}

static const char *opt_name(int c)
{
	for (const struct option *o = all_opts; o->name; o++)
		if (o->val == c)
			return o->name;
	return "?";
}

int oci_getparam(int argc, char **argv, struct oci_config *cfg)
{
	const struct verb_desc *v = NULL;

	memset(cfg, 0, sizeof(*cfg));
	cfg->wait_s = OCI_DEFAULT_WAIT;
	if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h") ||
	    !strcmp(argv[0], "help")) {
		fputs(help_main, argc < 1 ? stderr : stdout);
		return argc < 1 ? OCI_EXIT_USAGE : 0;
	}
	if (!strcmp(argv[0], "--version")) {
		printf("ocisign %s\n", P11GATE_VERSION);
		return 0;
	}
	for (size_t i = 0; i < P11G_ARRAY_SIZE(verbs); i++)
		if (!strcmp(argv[0], verbs[i].name))
			v = &verbs[i];
	if (!v)
		return usage(NULL, "unknown verb '%s': generate, sign, attach, verify or pubkey",
		             argv[0]);
	cfg->verb = v->verb;
	cfg->verb_name = v->name;

	/* getopt stays quiet (opterr = 0) so the one error line is ours. */
	opterr = 0;
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, ":a:", all_opts, NULL)) != -1) {
		const char *bad = argv[optind - 1];
		if (c == OPT_HELP) {
			fputs(v->help, stdout);
			return 0;
		}
		if (c == '?')
			return usage(v->name, "unknown option '%s'", bad);
		if (c == ':')
			return usage(v->name, "option '%s' needs a value", bad);
		if (!allowed(v, c))
			return usage(v->name, "--%s does not apply to %s", opt_name(c), v->name);
		switch (c) {
		case OPT_CREDS:
			cfg->creds = optarg;
			break;
		case OPT_CA_FILE:
			cfg->ca_file = optarg;
			break;
		case OPT_INSECURE:
			cfg->insecure = true;
			break;
		case OPT_KEY:
			cfg->key = optarg;
			break;
		case OPT_MODULE:
			cfg->module = optarg;
			break;
		case OPT_PIN_FILE:
			cfg->pin_file = optarg;
			break;
		case OPT_REQUEST:
			cfg->request = true;
			break;
		case OPT_RECURSIVE:
			cfg->recursive = true;
			break;
		case OPT_PAYLOAD:
			cfg->payload_file = optarg;
			break;
		case OPT_SIGNATURE:
			cfg->signature_file = optarg;
			break;
		case OPT_ID_TOKEN:
		case OPT_ID_TOKEN_ENV:
		case OPT_ID_TOKEN_GITHUB:
			if (cfg->id_token || cfg->id_token_env || cfg->id_token_github)
				return usage(v->name, "one ID token: --id-token, --id-token-env or "
				                      "--id-token-github, once");
			*(c == OPT_ID_TOKEN       ? &cfg->id_token
			  : c == OPT_ID_TOKEN_ENV ? &cfg->id_token_env
			                          : &cfg->id_token_github) = optarg;
			break;
		case OPT_SOCKET:
			cfg->socket = optarg;
			break;
		case OPT_WAIT: {
			char *end;
			errno = 0;
			long w = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || w < 1 || w > 86400)
				return usage(v->name, "--wait takes seconds from 1 to 86400");
			cfg->wait_s = w;
			break;
		}
		case 'a': {
			struct oci_annotation a, *n;
			p11g_err err;
			if (oci_annotation_parse(optarg, &a, &err) < 0)
				return usage(v->name, "%s", err.msg);
			if (cfg->n_ann >= 256)
				return usage(v->name, "at most 256 annotations");
			n = realloc(cfg->ann, (cfg->n_ann + 1) * sizeof(*n));
			if (!n) {
				free(a.key);
				fputs("ocisign: out of memory\n", stderr);
				return OCI_EXIT_FAIL;
			}
			cfg->ann = n;
			cfg->ann[cfg->n_ann++] = a;
			break;
		}
		}
	}
	int rest = argc - optind;
	if (v->image) {
		if (rest < 1)
			return usage(v->name, "IMAGE is missing");
		if (rest > 1)
			return usage(v->name, "one IMAGE only (got '%s' after it)",
			             argv[optind + 1]);
		cfg->image = argv[optind];
	} else if (rest > 0) {
		return usage(v->name, "unexpected argument '%s'", argv[optind]);
	}
	if ((v->verb == OCI_SIGN || v->verb == OCI_VERIFY || v->verb == OCI_PUBKEY) && !cfg->key)
		return usage(v->name, "--key is required");
	if (v->verb == OCI_ATTACH && (!cfg->payload_file || !cfg->signature_file))
		return usage(v->name, "--payload FILE and --signature FILE are required");
	if ((cfg->socket || cfg->wait_s != OCI_DEFAULT_WAIT || cfg->id_token || cfg->id_token_env ||
	     cfg->id_token_github) &&
	    !cfg->request)
		return usage(v->name, "--socket, --wait and --id-token go with --request");
	return OCI_PARAM_RUN;
}

void oci_config_free(struct oci_config *cfg)
{
	for (size_t i = 0; i < cfg->n_ann; i++)
		free(cfg->ann[i].key);
	free(cfg->ann);
	cfg->ann = NULL;
}
