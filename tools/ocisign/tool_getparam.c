/* ocisign's command line: the verbs' options, their help texts, and usage errors. */
#include <getopt.h>

#include <time.h>

#include "tool_cfg.h"

#include "approvald/textsafe.h"

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
    "           --format simple-signing --sigstore-staging DIR --openpgp-key FILE\n"
    "           [--request] --key URI IMAGE\n"
    "                                       an OpenPGP signature for skopeo and podman\n"
    "  attach   --payload FILE --signature FILE IMAGE\n"
    "                                       attach a payload and its base64 signature\n"
    "  verify   --key PUBLIC.pem IMAGE      check the attached signatures\n"
    "           --certificate-chain ROOTS.pem [--certificate-identity ID] IMAGE\n"
    "                                       check them against a CA instead\n"
    "           --format simple-signing --keyring FILE --sigstore DIR|URL IMAGE\n"
    "                                       check OpenPGP (simple-signing) signatures\n"
    "  pubkey   --key URI [--module SO]     print the key's public key (PEM)\n"
    "           --format openpgp --uid \"NAME <EMAIL>\" [--created DATE] [--request]\n"
    "                                       as a certified OpenPGP key (a signature)\n"
    "  csr      --key URI --subject DN [--san NAME]... [--request] [-o FILE]\n"
    "                                       a PKCS#10 request signed by the key, for a CA\n"
    "  import-cert --key URI --cert FILE [--chain FILE]\n"
    "                                       store the key's certificate on the token\n"
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
    "                         the decision.  The request is named after the image,\n"
    "                         each payload after the manifest it signs\n"
    "  --socket PATH          approvald's socket (default $APPROVALD_SOCKET, else\n"
    "                         /run/approvald/approvald.sock); also given to p11gate.so\n"
    "                         as P11GATE_SOCKET unless that is set\n"
    "  --wait SECONDS         how long --request waits for approval (default 3600)\n"
    "  --id-token FILE|-      the pipeline's OIDC ID token for --request, for a key\n"
    "                         whose rule asks for one (default $APPROVALD_ID_TOKEN_FILE)\n"
    "  --id-token-env NAME    the token in that variable (GitLab CI's id_tokens)\n"
    "  --id-token-github AUDIENCE  the GitHub Actions job's token for AUDIENCE\n"
    "  --certificate FILE     attach this PEM certificate of the key with each signature\n"
    "                         (cosign's dev.sigstore.cosign/certificate annotation); it\n"
    "                         must certify the key, be valid now and allow code signing\n"
    "  --certificate-from-token  the key's certificate stored on the token (import-cert)\n"
    "  --certificate-chain FILE  its issuers, PEM, from the one that issued it to the root\n"
    "                         (dev.sigstore.cosign/chain, the file as it is); the\n"
    "                         certificate must chain to the file's last certificate\n"
    "\nSimple signing (containers/image's OpenPGP signatures, which skopeo and podman\n"
    "verify with a signedBy policy):\n"
    "  --format simple-signing  sign containers/image's atomic container signature\n"
    "                         claim (identity REGISTRY/REPOSITORY:TAG, or @sha256:HEX for\n"
    "                         an image named by digest; the manifest digest; creator and\n"
    "                         timestamp) as an OpenPGP signed message, as skopeo does\n"
    "                         when it signs; --request pins the digest of the OpenPGP\n"
    "                         hashed data and gives it to approvald, which shows the image\n"
    "  --sigstore-staging DIR|file:///DIR\n"
    "                         write it to the lookaside store there, as\n"
    "                         REPOSITORY@sha256=HEX/signature-N (the next free N); print\n"
    "                         the file's path\n"
    "  --openpgp-key FILE     the key as pubkey --format openpgp exported it: its\n"
    "                         creation time is taken from it (refused when FILE holds no\n"
    "                         OpenPGP form of the token key)\n"
    "  --created DATE         the OpenPGP key's creation time, as given to pubkey\n"
    "                         --format openpgp (default: the CKA_START_DATE of the key's\n"
    "                         public key object, else of the key)\n" COMMON_HELP;

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
    "       ocisign verify --certificate-chain ROOTS.pem [OPTIONS] IMAGE\n"
    "Checks the signatures attached to IMAGE with a PEM public key (EC, RSA or\n"
    "Ed25519, as cosign verify --key), or with the certificate attached to each\n"
    "signature: each payload's signature, and that the payload names IMAGE's\n"
    "manifest digest.  Prints each verified payload on its own line; exits 1 when\n"
    "none verifies.\n"
    "\n"
    "  --key FILE             PEM public key (ocisign pubkey writes one)\n"
    "  --certificate-chain ROOTS.pem\n"
    "                         trusted CA certificates (PEM): a signature verifies when\n"
    "                         its certificate chains to a self-signed one of them\n"
    "                         (through the chain attached with it and any intermediate\n"
    "                         in the file), every certificate of the chain allows code\n"
    "                         signing, and the certificate's key verifies it.  Chains\n"
    "                         are checked at the current time: without a timestamp,\n"
    "                         the time of signing is not known\n"
    "  --certificate-identity ID\n"
    "                         the certificate must be for ID: one of its subject\n"
    "                         alternative names (email, URI, DNS), or its subject as\n"
    "                         /CN=../O=.. or CN=..,O=..\n"
    "  --format simple-signing  check containers/image OpenPGP signatures instead:\n"
    "  --keyring FILE         the OpenPGP public keys (armored or binary) a signature\n"
    "                         must be made by (read by GnuPG, through GPGME)\n"
    "  --sigstore DIR|URL     the lookaside store: a directory, file:///DIR, http:// or\n"
    "                         https:// URL; signature-1, -2, ... are read until one is\n"
    "                         missing.  A claim verifies when its signature is good, by a\n"
    "                         key of the keyring, its type is an atomic container\n"
    "                         signature, it names IMAGE's manifest digest and IMAGE\n"
    "                         itself (the same tag; for an image named by digest, the\n"
    "                         same repository), as skopeo's signedBy checks\n" COMMON_HELP;

static const char help_pubkey[] =
    "Usage: ocisign pubkey --key URI [OPTIONS]\n"
    "       ocisign pubkey --key URI --format openpgp --uid \"NAME <EMAIL>\" [OPTIONS]\n"
    "Prints the key's public key as a PEM SubjectPublicKeyInfo (CKA_EC_PARAMS and\n"
    "CKA_EC_POINT, or the RSA modulus and exponent): from the public key object the\n"
    "URI names, else from the private key's own attributes (RSA) or its public half\n"
    "(the public key object with its CKA_ID; with its label for a key without one).\n"
    "With --format openpgp, prints it as an ASCII-armored OpenPGP v4 public key (RSA,\n"
    "ECDSA P-256/P-384, Ed25519) with the user ID and its self-certification: a\n"
    "signature by the key, so behind p11gate.so it needs an approved operation.\n"
    "\n" KEY_HELP "  --format pem|openpgp   what to print (default pem)\n"
    "  --uid \"NAME <EMAIL>\"   the OpenPGP user ID (printable UTF-8, 256 bytes at most)\n"
    "  --created DATE         the OpenPGP key's creation time: YYYY-MM-DD (midnight UTC),\n"
    "                         YYYY-MM-DDTHH:MM:SSZ or seconds since 1970 (default: the\n"
    "                         CKA_START_DATE of the key's public key object, else of the\n"
    "                         key; one of them is required).  It is part of the\n"
    "                         fingerprint: give the same one every time, and to sign\n"
    "                         --format simple-signing\n"
    "  -o, --output FILE      write the key there instead of stdout\n"
    "  --request              first file an approvald request for the certification,\n"
    "                         one use, named \"OpenPGP certification for NAME <EMAIL>\";\n"
    "                         approvald reads the key and user ID and shows them\n"
    "  --socket PATH, --wait SECONDS, --id-token FILE|-, --id-token-env NAME,\n"
    "  --id-token-github AUDIENCE  as for sign --request\n";

static const char help_csr[] =
    "Usage: ocisign csr --key URI --subject DN [OPTIONS]\n"
    "Writes a PKCS#10 certificate signing request for the key, signed by the key\n"
    "through PKCS#11 (ECDSA with SHA-256, RSA PKCS#1 v1.5 with SHA-256, Ed25519),\n"
    "asking for a code-signing certificate: key usage digitalSignature (critical),\n"
    "extended key usage codeSigning, and the --san names.  It is a signature by the\n"
    "key, so behind p11gate.so it needs an approved operation like any other.\n"
    "\n" KEY_HELP
    "  --subject DN           /CN=NAME[/O=ORG][/OU=..][/C=CC]... (openssl req -subj's\n"
    "                         form; \\/ for a slash in a value)\n"
    "  --san NAME             DNS:HOST, email:ADDRESS or URI:URI (repeatable, 32 at most)\n"
    "  -o, --output FILE      write the request there (PEM) instead of stdout\n"
    "  --request              first file an approvald request for one use, pinned to\n"
    "                         the SHA-256 of the request's to-be-signed bytes (given\n"
    "                         to approvald, which shows approvers the subject, key and\n"
    "                         names it reads in them), named \"CSR for DN\"; print its\n"
    "                         id on stderr and wait for the decision\n"
    "  --socket PATH, --wait SECONDS, --id-token FILE|-, --id-token-env NAME,\n"
    "  --id-token-github AUDIENCE  as for sign --request\n";

static const char help_import_cert[] =
    "Usage: ocisign import-cert --key URI --cert FILE [--chain FILE] [OPTIONS]\n"
    "Stores the key's certificate (PEM, as the CA issued it) on the token: a\n"
    "CKO_CERTIFICATE with the key's CKA_ID and CKA_LABEL, replacing the\n"
    "certificates with that id stored before (a renewal).  Refused when the\n"
    "certificate is not for this key.  sign --certificate-from-token uses it.\n"
    "\n" KEY_HELP "  --cert FILE            the certificate (its first PEM certificate)\n"
    "  --chain FILE           its issuers up to the root: the certificate must chain to\n"
    "                         the file's last certificate and allow code signing.  The\n"
    "                         chain stays in that file (give it to sign\n"
    "                         --certificate-chain), as with cosign.\n";

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
	OPT_SUBJECT,
	OPT_SAN,
	OPT_CERT,
	OPT_CHAIN,
	OPT_CERTIFICATE,
	OPT_CERT_FROM_TOKEN,
	OPT_CERT_CHAIN,
	OPT_CERT_IDENTITY,
	OPT_FORMAT,
	OPT_UID,
	OPT_CREATED,
	OPT_SIGSTORE_STAGING,
	OPT_SIGSTORE,
	OPT_KEYRING,
	OPT_OPENPGP_KEY,
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
    {"subject", required_argument, 0, OPT_SUBJECT},
    {"san", required_argument, 0, OPT_SAN},
    {"output", required_argument, 0, 'o'},
    {"cert", required_argument, 0, OPT_CERT},
    {"chain", required_argument, 0, OPT_CHAIN},
    {"certificate", required_argument, 0, OPT_CERTIFICATE},
    {"certificate-from-token", no_argument, 0, OPT_CERT_FROM_TOKEN},
    {"certificate-chain", required_argument, 0, OPT_CERT_CHAIN},
    {"certificate-identity", required_argument, 0, OPT_CERT_IDENTITY},
    {"format", required_argument, 0, OPT_FORMAT},
    {"uid", required_argument, 0, OPT_UID},
    {"created", required_argument, 0, OPT_CREATED},
    {"sigstore-staging", required_argument, 0, OPT_SIGSTORE_STAGING},
    {"sigstore", required_argument, 0, OPT_SIGSTORE},
    {"keyring", required_argument, 0, OPT_KEYRING},
    {"openpgp-key", required_argument, 0, OPT_OPENPGP_KEY},
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
                                   OPT_CERTIFICATE,
                                   OPT_CERT_FROM_TOKEN,
                                   OPT_CERT_CHAIN,
                                   OPT_FORMAT,
                                   OPT_CREATED,
                                   OPT_OPENPGP_KEY,
                                   OPT_SIGSTORE_STAGING,
                                   OPT_CREDS,
                                   OPT_CA_FILE,
                                   OPT_INSECURE,
                                   0};
static const int attach_allowed[] = {OPT_PAYLOAD, OPT_SIGNATURE, OPT_CREDS,
                                     OPT_CA_FILE, OPT_INSECURE,  0};
static const int verify_allowed[] = {
    OPT_KEY,      OPT_CERT_CHAIN, OPT_CERT_IDENTITY, OPT_FORMAT,   OPT_KEYRING,
    OPT_SIGSTORE, OPT_CREDS,      OPT_CA_FILE,       OPT_INSECURE, 0};
static const int pubkey_allowed[] = {
    OPT_KEY,     OPT_MODULE, OPT_PIN_FILE, OPT_FORMAT,   OPT_UID,          OPT_CREATED,         'o',
    OPT_REQUEST, OPT_SOCKET, OPT_WAIT,     OPT_ID_TOKEN, OPT_ID_TOKEN_ENV, OPT_ID_TOKEN_GITHUB, 0};
static const int csr_allowed[] = {OPT_KEY,  OPT_MODULE,   OPT_PIN_FILE,     OPT_SUBJECT,
                                  OPT_SAN,  'o',          OPT_REQUEST,      OPT_SOCKET,
                                  OPT_WAIT, OPT_ID_TOKEN, OPT_ID_TOKEN_ENV, OPT_ID_TOKEN_GITHUB,
                                  0};
static const int import_allowed[] = {OPT_KEY, OPT_MODULE, OPT_PIN_FILE, OPT_CERT, OPT_CHAIN, 0};

static const struct verb_desc verbs[] = {
    {"generate", OCI_GENERATE, help_generate, gen_allowed, true},
    {"sign", OCI_SIGN, help_sign, sign_allowed, true},
    {"attach", OCI_ATTACH, help_attach, attach_allowed, true},
    {"verify", OCI_VERIFY, help_verify, verify_allowed, true},
    {"pubkey", OCI_PUBKEY, help_pubkey, pubkey_allowed, false},
    {"csr", OCI_CSR, help_csr, csr_allowed, false},
    {"import-cert", OCI_IMPORT_CERT, help_import_cert, import_allowed, false},
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

/* --created: YYYY-MM-DD (midnight UTC), YYYY-MM-DDTHH:MM:SSZ or seconds since 1970; not in
 * the future (GnuPG refuses signatures older than their key). */
static int parse_created(const char *s, uint32_t *ret)
{
	struct tm tm = {0};
	char *end;
	long long v;

	if (s[0] >= '0' && s[0] <= '9' && strlen(s) == strspn(s, "0123456789") && strlen(s) < 12) {
		v = strtoll(s, &end, 10);
	} else {
		end = strptime(s, strchr(s, 'T') ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d", &tm);
		if (!end || *end || tm.tm_year < 70)
			return -1;
		v = (long long)timegm(&tm);
	}
	if (v <= 0 || v > (long long)UINT32_MAX || v > (long long)time(NULL))
		return -1;
	*ret = (uint32_t)v;
	return 0;
}

/* A user ID is shown by GnuPG and to approvers: "NAME <EMAIL>", printable UTF-8. */
static const char *uid_problem(const char *uid)
{
	uint32_t cp;
	if (!uid)
		return "--format openpgp needs --uid \"NAME <EMAIL>\"";
	if (!uid[0] || strlen(uid) > 256)
		return "--uid is 1 to 256 bytes";
	if (p11g_text_find(uid, strlen(uid), &cp) >= 0)
		return "--uid is printable UTF-8 (no control characters, no invalid sequences)";
	return NULL;
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
		return usage(NULL,
		             "unknown verb '%s': generate, sign, attach, verify, pubkey, csr or "
		             "import-cert",
		             argv[0]);
	cfg->verb = v->verb;
	cfg->verb_name = v->name;

	/* getopt stays quiet (opterr = 0) so the one error line is ours. */
	opterr = 0;
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, ":a:o:", all_opts, NULL)) != -1) {
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
		case OPT_SUBJECT:
			cfg->subject = optarg;
			break;
		case OPT_SAN:
			if (cfg->n_sans >= OCI_SANS_MAX)
				return usage(v->name, "at most %d --san", OCI_SANS_MAX);
			cfg->sans[cfg->n_sans++] = optarg;
			break;
		case 'o':
			cfg->output = optarg;
			break;
		case OPT_CERT:
		case OPT_CERTIFICATE:
			cfg->cert_file = optarg;
			break;
		case OPT_CHAIN:
			cfg->chain_file = optarg;
			break;
		case OPT_CERT_CHAIN:
			*(v->verb == OCI_VERIFY ? &cfg->roots_file : &cfg->chain_file) = optarg;
			break;
		case OPT_CERT_FROM_TOKEN:
			cfg->cert_from_token = true;
			break;
		case OPT_CERT_IDENTITY:
			cfg->identity = optarg;
			break;
		case OPT_SIGNATURE:
			cfg->signature_file = optarg;
			break;
		case OPT_FORMAT:
			if (v->verb == OCI_PUBKEY && !strcmp(optarg, "pem"))
				cfg->format = OCI_FMT_PEM;
			else if (v->verb == OCI_PUBKEY && !strcmp(optarg, "openpgp"))
				cfg->format = OCI_FMT_OPENPGP;
			else if (v->verb != OCI_PUBKEY && !strcmp(optarg, "cosign"))
				cfg->format = OCI_FMT_COSIGN;
			else if (v->verb != OCI_PUBKEY && !strcmp(optarg, "simple-signing"))
				cfg->format = OCI_FMT_SIMPLE_SIGNING;
			else
				return usage(v->name, "--format is %s, not '%s'",
				             v->verb == OCI_PUBKEY ? "pem or openpgp"
				                                   : "cosign or simple-signing",
				             optarg);
			break;
		case OPT_UID:
			cfg->uid = optarg;
			break;
		case OPT_CREATED:
			if (parse_created(optarg, &cfg->created) < 0)
				return usage(v->name,
				             "--created takes YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or "
				             "seconds since 1970, not in the future");
			cfg->created_set = true;
			break;
		case OPT_SIGSTORE_STAGING:
		case OPT_SIGSTORE:
			cfg->sigstore = optarg;
			break;
		case OPT_KEYRING:
			cfg->keyring = optarg;
			break;
		case OPT_OPENPGP_KEY:
			cfg->openpgp_key = optarg;
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
			cfg->wait_set = true;
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
	if (v->verb == OCI_PUBKEY && cfg->format != OCI_FMT_OPENPGP &&
	    (cfg->uid || cfg->created_set || cfg->output || cfg->request))
		return usage(v->name, "--uid, --created, --output and --request go with --format "
		                      "openpgp");
	if (v->verb == OCI_PUBKEY && cfg->format == OCI_FMT_OPENPGP) {
		const char *why = uid_problem(cfg->uid);
		if (why)
			return usage(v->name, "%s", why);
	}
	if (cfg->format == OCI_FMT_SIMPLE_SIGNING) {
		if (v->verb == OCI_SIGN && (cfg->recursive || cfg->n_ann || cfg->cert_file ||
		                            cfg->cert_from_token || cfg->chain_file))
			return usage(v->name, "--recursive, --annotation and certificates are "
			                      "cosign's: not with --format simple-signing");
		if (v->verb == OCI_VERIFY && (cfg->key || cfg->roots_file || cfg->identity))
			return usage(v->name,
			             "--format simple-signing verifies with --keyring FILE, "
			             "not --key, --certificate-chain or --certificate-identity");
		if (!cfg->sigstore)
			return usage(v->name, "--format simple-signing needs %s",
			             v->verb == OCI_SIGN ? "--sigstore-staging DIR|file:///DIR"
			                                 : "--sigstore DIR|URL");
		if (v->verb == OCI_VERIFY && !cfg->keyring)
			return usage(v->name, "--format simple-signing needs --keyring FILE");
		if (cfg->openpgp_key && cfg->created_set)
			return usage(v->name, "--openpgp-key FILE or --created DATE, not both");
	} else if (cfg->sigstore || cfg->keyring || cfg->openpgp_key ||
	           (v->verb == OCI_SIGN && cfg->created_set)) {
		return usage(
		    v->name,
		    "--sigstore%s, --keyring, --openpgp-key and --created go with --format "
		    "simple-signing",
		    v->verb == OCI_SIGN ? "-staging" : "");
	}
	if (v->verb == OCI_VERIFY && cfg->format == OCI_FMT_SIMPLE_SIGNING) {
		/* checked above */
	} else if (v->verb == OCI_VERIFY) {
		if (!!cfg->key == !!cfg->roots_file)
			return usage(v->name,
			             "--key PUBLIC.pem or --certificate-chain ROOTS.pem, one "
			             "of them");
		if (cfg->identity && !cfg->roots_file)
			return usage(v->name,
			             "--certificate-identity goes with --certificate-chain");
		if (cfg->identity && !cfg->identity[0])
			return usage(v->name,
			             "--certificate-identity is empty (an unset variable?)");
	}
	if (v->verb != OCI_GENERATE && v->verb != OCI_ATTACH && v->verb != OCI_VERIFY &&
	    !cfg->key) {
		return usage(v->name, "--key is required");
	}
	if (v->verb == OCI_CSR && !cfg->subject)
		return usage(v->name, "--subject DN is required");
	if (v->verb == OCI_IMPORT_CERT && !cfg->cert_file)
		return usage(v->name, "--cert FILE is required");
	if (v->verb == OCI_SIGN) {
		if (cfg->cert_file && cfg->cert_from_token)
			return usage(v->name,
			             "--certificate FILE or --certificate-from-token, not both");
		if (cfg->chain_file && !cfg->cert_file && !cfg->cert_from_token)
			return usage(v->name, "--certificate-chain goes with --certificate or "
			                      "--certificate-from-token");
	}
	if (v->verb == OCI_ATTACH && (!cfg->payload_file || !cfg->signature_file))
		return usage(v->name, "--payload FILE and --signature FILE are required");
	if ((cfg->socket || cfg->wait_set || cfg->id_token || cfg->id_token_env ||
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
