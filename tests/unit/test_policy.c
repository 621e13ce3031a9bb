/* Unit tests for the policy language over bytes: exact error messages, matching, snapshots,
 * principals.  No files and no users: approvald's loader and name lookups have their own tests
 * (test_policy_load, test_names). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "policy/policy.h"
#include "policy/pjson.h"
#include "p11gate/errors.h"

/* One text of a bad policy: name (as the loader would pass a file's path) and bytes. */
struct text {
	const char *name, *text;
	size_t len;
};
/* clang-format off */
#define TEXT(n, t) {n, t, sizeof(t) - 1}
/* clang-format on */

/*
 * The frame of most texts below: RULES(x) is a policy of the rules x, which start on its
 * line 3; RULE(x) is one of a rule "r" for pkcs11:token=t whose further members x start on
 * line 6.
 */
/* clang-format off */
#define RULES(x) "{\n  \"rules\": [\n" x "  ]\n}\n"
#define RULE(x) \
	RULES("    {\n      \"name\": \"r\",\n      \"keys\": [\"pkcs11:token=t\"],\n" x "    }\n")
/* NOTIFIER(x): a policy of one notifier "n" whose further members x are on its line 4;
 * HOOK is a good "url" member, EVENTS a good "events" one. */
#define NOTIFIER(x) "{\n  \"notifiers\": [{\n    \"name\": \"n\",\n" x "\n  }]\n}\n"
#define HOOK "\"url\": \"https://hooks.example.com/h\""
#define EVENTS "\"events\": [\"created\"]"
/* clang-format on */

/*
 * One bad policy per entry (one text, or several built as one policy for the
 * cases that need two files) and the exact message.
 */
static const struct {
	const char *what, *msg;
	struct text texts[3];
} bad_cases[] = {
    /* JSON syntax */
    {"malformed.json",
     "malformed.json:3:18: expected ',' or '}'",
     {TEXT("malformed.json", RULES("    {\"name\": \"r\" \"keys\": []}\n"))}},
    {"trailing-comma.json",
     "trailing-comma.json:3:14: trailing comma",
     {TEXT("trailing-comma.json", "{\n"
                                  "  \"default\": \"deny\",\n"
                                  "  \"rules\": [],\n"
                                  "}\n")}},
    {"duplicate-key.json",
     "duplicate-key.json:4:3: duplicate member \"rules\" (first at 2:3)",
     {TEXT("duplicate-key.json", "{\n"
                                 "  \"rules\": [],\n"
                                 "  \"default\": \"deny\",\n"
                                 "  \"rules\": []\n"
                                 "}\n")}},
    {"trailing-garbage.json",
     "trailing-garbage.json:2:1: unexpected data after the JSON value",
     {TEXT("trailing-garbage.json", "{\"rules\": []}\n"
                                    "{}\n")}},
    {"empty.json", "empty.json:1:1: unexpected end of input", {TEXT("empty.json", "")}},
    {"unterminated.json",
     "unterminated.json:2:14: unterminated string (a line ends inside it)",
     {TEXT("unterminated.json", "{\n"
                                "  \"default\": \"deny\n"
                                "}\n")}},
    {"control-char.json",
     "control-char.json:2:17: control character 0x09 in string",
     {TEXT("control-char.json", "{\n"
                                "  \"default\": \"de\tny\"\n"
                                "}\n")}},
    {"bad-escape.json",
     "bad-escape.json:2:16: bad escape '\\e'",
     {TEXT("bad-escape.json", "{\n"
                              "  \"default\": \"d\\eny\"\n"
                              "}\n")}},
    {"lone-surrogate.json",
     "lone-surrogate.json:2:15: unpaired surrogate \\ud800",
     {TEXT("lone-surrogate.json", "{\n"
                                  "  \"default\": \"\\ud800\"\n"
                                  "}\n")}},
    {"bad-utf8.json",
     "bad-utf8.json:3:20: invalid UTF-8 in string",
     {TEXT("bad-utf8.json", "{\n"
                            "  \"rules\": [],\n"
                            "  \"default\": \"d\303\251ny \377\"\n"
                            "}\n")}},
    {"utf8-overlong.json",
     "utf8-overlong.json:2:15: invalid UTF-8 in string",
     {TEXT("utf8-overlong.json", "{\n"
                                 "  \"default\": \"\300\257deny\"\n"
                                 "}\n")}},
    {"too-deep.json",
     "too-deep.json:1:74: nesting deeper than 64",
     {TEXT("too-deep.json",
           "{\"rules\": "
           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]"
           "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}\n")}},
    {"big-integer.json",
     "big-integer.json:7:20: integer out of range",
     {TEXT("big-integer.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                    "      \"approvals\": 99999999999999999999\n"))}},
    /* top level */
    {"not-object.json",
     "not-object.json:1:1: a policy file must hold an object, not an array",
     {TEXT("not-object.json", "[\n"
                              "  {\"default\": \"deny\"}\n"
                              "]\n")}},
    {"unknown-top.json",
     "unknown-top.json:3:3: unknown member \"rulez\" in the policy "
     "(expected \"default\", \"rules\", \"issuers\" or \"notifiers\")",
     {TEXT("unknown-top.json", "{\n"
                               "  \"default\": \"deny\",\n"
                               "  \"rulez\": []\n"
                               "}\n")}},
    {"rules-not-array.json",
     "rules-not-array.json:2:12: \"rules\" must be an array, not an object",
     {TEXT("rules-not-array.json", "{\n"
                                   "  \"rules\": {\"name\": \"r\"}\n"
                                   "}\n")}},
    {"bad-default.json",
     "bad-default.json:2:14: \"default\" must be \"deny\" or \"allow\", not \"permit\"",
     {TEXT("bad-default.json", "{\n"
                               "  \"default\": \"permit\"\n"
                               "}\n")}},
    {"default-conflict",
     "default-conflict/c.json:3:14: \"default\" is \"allow\" here but "
     "\"deny\" in default-conflict/a.json",
     {TEXT("default-conflict/a.json", "{\n"
                                      "  \"default\": \"deny\"\n"
                                      "}\n"),
      TEXT("default-conflict/b.json", "{\n"
                                      "  \"default\": \"deny\"\n"
                                      "}\n"),
      TEXT("default-conflict/c.json", "{\n"
                                      "  \"rules\": [],\n"
                                      "  \"default\": \"allow\"\n"
                                      "}\n")}},
    /* rule members */
    {"unknown-rule-member.json",
     "unknown-rule-member.json:7:7: unknown member \"approver\" in rule",
     {TEXT("unknown-rule-member.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                            "      \"approver\": [\"group:a\"],\n"
                                            "      \"approvals\": 1\n"))}},
    {"wrong-type.json",
     "wrong-type.json:7:20: \"approvals\" must be an integer, not a string",
     {TEXT("wrong-type.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                   "      \"approvals\": \"2\"\n"))}},
    {"fraction.json",
     "fraction.json:7:20: \"approvals\" must be an integer, not a number",
     {TEXT("fraction.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                 "      \"approvals\": 1.5\n"))}},
    {"missing-name.json",
     "missing-name.json:3:5: rule is missing \"name\"",
     {TEXT("missing-name.json", RULES("    {\n"
                                      "      \"keys\": [\"pkcs11:token=t\"],\n"
                                      "      \"orderers\": [],\n"
                                      "      \"approvals\": 0\n"
                                      "    }\n"))}},
    {"missing-keys.json",
     "missing-keys.json:3:5: rule \"r\" is missing \"keys\"",
     {TEXT("missing-keys.json",
           RULES("    {\"name\": \"r\", \"orderers\": [], \"approvals\": 0}\n"))}},
    {"empty-keys.json",
     "empty-keys.json:3:27: \"keys\" must not be empty",
     {TEXT("empty-keys.json",
           RULES("    {\"name\": \"r\", \"keys\": [], \"orderers\": [], \"approvals\": 0}\n"))}},
    {"bad-rule-name.json",
     "bad-rule-name.json:3:14: bad rule name \"prod firmware\": 1 to 64 of A-Z a-z 0-9 . _ -",
     {TEXT("bad-rule-name.json",
           RULES("    {\"name\": \"prod firmware\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": "
                 "[], \"approvals\": 0}\n"))}},
    {"duplicate-name.json",
     "duplicate-name.json:4:14: duplicate rule name \"r\" (first at duplicate-name.json:3:5)",
     {TEXT("duplicate-name.json", RULES("    {\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], "
                                        "\"orderers\": [], \"approvals\": 0},\n"
                                        "    {\"name\": \"r\", \"keys\": [\"pkcs11:token=b\"], "
                                        "\"orderers\": [], \"approvals\": 0}\n"))}},
    {"duplicate-name-files",
     "duplicate-name-files/20-b.json:4:14: duplicate rule name \"prod\" (first at "
     "duplicate-name-files/10-a.json:3:5)",
     {TEXT("duplicate-name-files/10-a.json",
           RULES("    {\"name\": \"prod\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [], "
                 "\"approvals\": 0}\n")),
      TEXT("duplicate-name-files/20-b.json",
           RULES("    {\"name\": \"dev\", \"keys\": [\"pkcs11:token=b\"], \"orderers\": [], "
                 "\"approvals\": 0},\n"
                 "    {\"name\": \"prod\", \"keys\": [\"pkcs11:token=c\"], \"orderers\": [], "
                 "\"approvals\": 0}\n"))}},
    {"bad-principal.json",
     "bad-principal.json:7:32: bad principal \"grp:release\": expected "
     "user:NAME, group:NAME or uid:N",
     {TEXT("bad-principal.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                      "      \"approvers\": [\"group:a\", \"grp:release\"],\n"
                                      "      \"approvals\": 1\n"))}},
    {"bad-uid.json",
     "bad-uid.json:7:18: bad principal \"uid:-1\": uid must be a decimal "
     "number below 4294967295",
     {TEXT("bad-uid.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                "      \"admins\": [\"uid:-1\"],\n"
                                "      \"approvals\": 0\n"))}},
    {"bad-uri.json",
     "bad-uri.json:3:46: bad key URI \"token=b\": not a pkcs11: URI",
     {TEXT("bad-uri.json", RULES("    {\"name\": \"r\", \"keys\": [\"pkcs11:token=a\", "
                                 "\"token=b\"], \"orderers\": [], \"approvals\": 0}\n"))}},
    {"uri-unrecognised.json",
     "uri-unrecognised.json:3:28: bad key URI \"pkcs11:slot-id=1;object=a\": an attribute is "
     "unknown, too long, or does not name a key on a token",
     {TEXT("uri-unrecognised.json",
           RULES("    {\"name\": \"r\", \"keys\": [\"pkcs11:slot-id=1;object=a\"], \"orderers\": "
                 "[], \"approvals\": 0}\n"))}},
    {"uri-type.json",
     "uri-type.json:3:28: bad key URI \"pkcs11:object=a;type=cert\": type "
     "must be \"private\" (a private key)",
     {TEXT("uri-type.json",
           RULES("    {\"name\": \"r\", \"keys\": [\"pkcs11:object=a;type=cert\"], \"orderers\": "
                 "[], \"approvals\": 0}\n"))}},
    {"uri-query.json",
     "uri-query.json:3:28: bad key URI \"pkcs11:object=a?pin-value=1234\": query attributes "
     "(after '?') have no meaning in a policy",
     {TEXT("uri-query.json",
           RULES("    {\"name\": \"r\", \"keys\": [\"pkcs11:object=a?pin-value=1234\"], "
                 "\"orderers\": [], \"approvals\": 0}\n"))}},
    {"uri-repeated.json",
     "uri-repeated.json:3:28: bad key URI "
     "\"pkcs11:object=a;token=t;object=b\": \"object\" given twice",
     {TEXT("uri-repeated.json",
           RULES("    {\"name\": \"r\", \"keys\": [\"pkcs11:object=a;token=t;object=b\"], "
                 "\"orderers\": [], \"approvals\": 0}\n"))}},
    {"uri-space.json",
     "uri-space.json:3:28: bad key URI \"pkcs11:object=fw signing\": write spaces as %20",
     {TEXT("uri-space.json", RULES("    {\"name\": \"r\", \"keys\": [\"pkcs11:object=fw "
                                   "signing\"], \"orderers\": [], \"approvals\": 0}\n"))}},
    {"unknown-mechanism.json",
     "unknown-mechanism.json:8:35: unknown mechanism \"CKM_ECDSA_SHA257\"",
     {TEXT("unknown-mechanism.json",
           RULE("      \"orderers\": [\"group:ci\"],\n"
                "      \"approvals\": 0,\n"
                "      \"mechanisms\": [\"CKM_ECDSA\", \"CKM_ECDSA_SHA257\"]\n"))}},
    {"raw-without-allow.json",
     "raw-without-allow.json:8:38: CKM_RSA_X_509 is a raw mechanism "
     "and needs \"allow_raw\": true",
     {TEXT("raw-without-allow.json",
           RULE("      \"orderers\": [\"group:ci\"],\n"
                "      \"approvals\": 0,\n"
                "      \"mechanisms\": [\"CKM_RSA_PKCS\", \"CKM_RSA_X_509\"]\n"))}},
    {"bad-duration.json",
     "bad-duration.json:8:23: bad duration \"1y\": expected a positive "
     "number and one of s, m, h, d (at most 10 years)",
     {TEXT("bad-duration.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                     "      \"approvals\": 0,\n"
                                     "      \"max_validity\": \"1y\"\n"))}},
    {"long-duration.json",
     "long-duration.json:8:23: bad duration \"3651d\": expected a "
     "positive number and one of s, m, h, d (at most 10 years)",
     {TEXT("long-duration.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                      "      \"approvals\": 0,\n"
                                      "      \"max_validity\": \"3651d\"\n"))}},
    {"max-uses-zero.json",
     "max-uses-zero.json:8:19: \"max_uses\" must be between 1 and 1000000",
     {TEXT("max-uses-zero.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                      "      \"approvals\": 0,\n"
                                      "      \"max_uses\": 0\n"))}},
    {"bad-registry.json",
     "bad-registry.json:8:33: bad registry "
     "\"https://registry.example.com\": expected host or host:port",
     {TEXT("bad-registry.json",
           RULE("      \"orderers\": [\"group:ci\"],\n"
                "      \"approvals\": 0,\n"
                "      \"registries\": [\"ghcr.io\", \"https://registry.example.com\"]\n"))}},
    /* approvals and quorum */
    {"approvers-without-approvals.json",
     "approvers-without-approvals.json:7:7: \"approvers\" needs \"approvals\" (how many of "
     "them must approve)",
     {TEXT("approvers-without-approvals.json",
           RULE("      \"orderers\": [\"group:ci\"],\n"
                "      \"approvers\": [\"group:release-approvers\"]\n"))}},
    {"approvals-without-approvers.json",
     "approvals-without-approvers.json:7:7: \"approvals\" above 0 needs \"approvers\"",
     {TEXT("approvals-without-approvers.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                                    "      \"approvals\": 2\n"))}},
    {"no-approvals.json",
     "no-approvals.json:3:5: rule \"r\" needs \"approvals\" or \"quorum\"",
     {TEXT("no-approvals.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                     "      \"max_uses\": 1\n"))}},
    {"quorum-plus-approvals.json",
     "quorum-plus-approvals.json:8:7: \"quorum\" cannot be combined with \"approvals\"",
     {TEXT("quorum-plus-approvals.json",
           RULE("      \"orderers\": [\"group:ci\"],\n"
                "      \"quorum\": [{\"from\": [\"group:a\"], \"count\": 1}],\n"
                "      \"approvals\": 1,\n"
                "      \"approvers\": [\"group:b\"]\n"))}},
    {"quorum-count-zero.json",
     "quorum-count-zero.json:9:40: \"count\" must be between 1 and 1000",
     {TEXT("quorum-count-zero.json", RULE("      \"orderers\": [\"group:ci\"],\n"
                                          "      \"quorum\": [\n"
                                          "        {\"from\": [\"group:a\"], \"count\": 1},\n"
                                          "        {\"from\": [\"group:b\"], \"count\": 0}\n"
                                          "      ]\n"))}},
    {"quorum-unknown.json",
     "quorum-unknown.json:7:52: unknown member \"min\" in quorum clause",
     {TEXT("quorum-unknown.json",
           RULE("      \"orderers\": [\"group:ci\"],\n"
                "      \"quorum\": [{\"from\": [\"group:a\"], \"count\": 1, \"min\": 1}]\n"))}},
    /* keys two rules could both match */
    {"overlap",
     "overlap/b.json:7:9: key \"pkcs11:object=fw-signing\" could match the same key "
     "as \"pkcs11:token=prod;object=fw-signing\" of rule \"prod\" "
     "(overlap/a.json:4:5)",
     {TEXT("overlap/a.json", "{\n"
                             "  \"default\": \"deny\",\n"
                             "  \"rules\": [\n"
                             "    {\n"
                             "      \"name\": \"prod\",\n"
                             "      \"keys\": [\"pkcs11:token=prod;object=fw-signing\"],\n"
                             "      \"orderers\": [\"group:ci\"],\n"
                             "      \"approvals\": 0\n"
                             "    }\n"
                             "  ]\n"
                             "}\n"),
      TEXT("overlap/b.json", RULES("    {\n"
                                   "      \"name\": \"all-fw\",\n"
                                   "      \"keys\": [\n"
                                   "        \"pkcs11:token=dev\",\n"
                                   "        \"pkcs11:object=fw-signing\"\n"
                                   "      ],\n"
                                   "      \"orderers\": [\"group:ci\"],\n"
                                   "      \"approvals\": 0\n"
                                   "    }\n"))}},
    {"overlap-same-file.json",
     "overlap-same-file.json:4:48: key \"pkcs11:object=fw;id=%01\" could match the same key "
     "as \"pkcs11:token=prod;object=fw\" of rule \"a\" (overlap-same-file.json:3:5)",
     {TEXT("overlap-same-file.json",
           RULES("    {\"name\": \"a\", \"keys\": [\"pkcs11:token=prod;object=fw\"], \"orderers\": "
                 "[], \"approvals\": 0},\n"
                 "    {\"name\": \"b\", \"keys\": [\"pkcs11:token=dev\", "
                 "\"pkcs11:object=fw;id=%01\"], \"orderers\": [], \"approvals\": 0}\n"))}},
    /* no object= is any label, the empty one included */
    {"overlap-absent-empty.json",
     "overlap-absent-empty.json:4:31: key \"pkcs11:token=prod\" could match the same key as "
     "\"pkcs11:token=prod;object=\" of rule \"unlabelled\" (overlap-absent-empty.json:3:5)",
     {TEXT("overlap-absent-empty.json",
           RULES("    {\"name\": \"unlabelled\", \"keys\": [\"pkcs11:token=prod;object=\"], "
                 "\"orderers\": [], \"approvals\": 0},\n"
                 "    {\"name\": \"prod\", \"keys\": [\"pkcs11:token=prod\"], \"orderers\": [], "
                 "\"approvals\": 0}\n"))}},
    /* pipeline identity: issuers, and the claims a rule asks for */
    {"issuer-hmac.json",
     "issuer-hmac.json:1:161: algorithm \"HS256\" is never accepted (RS256, RS384, RS512, PS256, "
     "PS384, PS512, ES256, ES384, ES512; never none or an HMAC)",
     {TEXT("issuer-hmac.json",
           "{\"issuers\": [{\"name\": \"gh\", \"issuer\": "
           "\"https://token.actions.githubusercontent.com\", \"audience\": \"p11gate\", "
           "\"jwks_file\": \"/etc/p11gate/gh.jwks\", \"algorithms\": [\"HS256\"]}]}\n")}},
    {"issuer-both.json",
     "issuer-both.json:1:158: an issuer needs one of \"jwks_file\" and \"jwks_url\", not both",
     {TEXT("issuer-both.json",
           "{\"issuers\": [{\"name\": \"gh\", \"issuer\": "
           "\"https://token.actions.githubusercontent.com\", \"audience\": \"p11gate\", "
           "\"jwks_file\": \"/etc/p11gate/gh.jwks\", \"jwks_url\": \"https://x/k\"}]}\n")}},
    {"issuer-http.json",
     "issuer-http.json:1:39: \"issuer\" must be a URL starting with https:// (1 to 256 bytes)",
     {TEXT("issuer-http.json",
           "{\"issuers\": [{\"name\": \"gh\", \"issuer\": \"http://gitlab.example\", \"audience\": "
           "\"a\", \"jwks_url\": \"https://x\"}]}\n")}},
    {"issuer-no-aud.json",
     "issuer-no-aud.json:1:14: an issuer needs \"audience\"",
     {TEXT("issuer-no-aud.json", "{\"issuers\": [{\"name\": \"gh\", \"issuer\": \"https://a\", "
                                 "\"jwks_url\": \"https://x\"}]}\n")}},
    {"issuer-show.json",
     "issuer-show.json:1:155: bad claim name \"repo sitory\": 1 to 64 of A-Z a-z 0-9 _ . : -",
     {TEXT("issuer-show.json",
           "{\"issuers\": [{\"name\": \"gh\", \"issuer\": "
           "\"https://token.actions.githubusercontent.com\", \"audience\": \"p11gate\", "
           "\"jwks_file\": \"/etc/p11gate/gh.jwks\", \"show\": [\"repo sitory\"]}]}\n")}},
    {"issuer-unknown.json",
     "issuer-unknown.json:1:146: unknown member \"keys\" in an issuer (expected \"name\", "
     "\"issuer\", \"audience\", \"jwks_file\" or \"jwks_url\", \"jwks_ca_file\", "
     "\"algorithms\", \"show\")",
     {TEXT("issuer-unknown.json",
           "{\"issuers\": [{\"name\": \"gh\", \"issuer\": "
           "\"https://token.actions.githubusercontent.com\", \"audience\": \"p11gate\", "
           "\"jwks_file\": \"/etc/p11gate/gh.jwks\", \"keys\": []}]}\n")}},
    {"issuer-ca-file.json",
     "issuer-ca-file.json:1:162: \"jwks_ca_file\" is for \"jwks_url\" (the CA certificates its "
     "TLS server is verified with)",
     {TEXT("issuer-ca-file.json",
           "{\"issuers\": [{\"name\": \"gh\", \"issuer\": "
           "\"https://token.actions.githubusercontent.com\", \"audience\": \"p11gate\", "
           "\"jwks_file\": \"/etc/p11gate/gh.jwks\", \"jwks_ca_file\": \"/etc/ca.pem\"}]}\n")}},
    {"issuer-ca-relative.json",
     "issuer-ca-relative.json:1:152: \"jwks_ca_file\" must be an absolute path (1 to 2048 "
     "bytes)",
     {TEXT("issuer-ca-relative.json",
           "{\"issuers\": [{\"name\": \"gh\", \"issuer\": "
           "\"https://token.actions.githubusercontent.com\", \"audience\": \"p11gate\", "
           "\"jwks_url\": \"https://a/k\", \"jwks_ca_file\": \"ca.pem\"}]}\n")}},
    {"issuer-twice.json",
     "issuer-twice.json:1:147: issuer \"gh\" is defined twice (first at issuer-twice.json:1:14)",
     {TEXT("issuer-twice.json",
           "{\"issuers\": [{\"name\": \"gh\", \"issuer\": "
           "\"https://token.actions.githubusercontent.com\", \"audience\": \"p11gate\", "
           "\"jwks_file\": \"/etc/p11gate/gh.jwks\"}, {\"name\": \"gh\", \"issuer\": "
           "\"https://token.actions.githubusercontent.com\", \"audience\": \"p11gate\", "
           "\"jwks_file\": \"/etc/p11gate/gh.jwks\"}]}\n")}},
    {"claims-no-issuer.json",
     "claims-no-issuer.json:1:107: rule \"r\" names no issuer the policy defines (\"gl\"; see "
     "\"issuers\")",
     {TEXT("claims-no-issuer.json",
           "{\"rules\": [{\"name\": \"r\", \"keys\": [\"pkcs11:token=t\"], \"orderers\": [], "
           "\"approvals\": 0, \"claims\": {\"issuer\": \"gl\", \"match\": {\"ref\": "
           "\"refs/heads/main\"}}}]}\n")}},
    {"claims-no-match.json",
     "claims-no-match.json:1:96: \"claims\" needs \"match\" with at least one claim pattern "
     "other than \"*\" (which pipelines are trusted: any project can get a token of a public "
     "CI issuer)",
     {TEXT("claims-no-match.json",
           "{\"rules\": [{\"name\": \"r\", \"keys\": [\"pkcs11:token=t\"], \"orderers\": [], "
           "\"approvals\": 0, \"claims\": {\"issuer\": \"gl\"}}]}\n")}},
    {"claims-star.json",
     "claims-star.json:1:122: \"claims\" needs \"match\" with at least one claim pattern other "
     "than \"*\" (which pipelines are trusted: any project can get a token of a public CI "
     "issuer)",
     {TEXT("claims-star.json",
           "{\"rules\": [{\"name\": \"r\", \"keys\": [\"pkcs11:token=t\"], \"orderers\": [], "
           "\"approvals\": 0, \"claims\": {\"issuer\": \"gl\", \"match\": {\"project_path\": "
           "\"*\", \"ref\": \"**\"}}}]}\n")}},
    {"actor-no-claims.json",
     "actor-no-claims.json:1:86: \"actor_claim\" needs \"claims\" (whose token names the actor)",
     {TEXT("actor-no-claims.json",
           "{\"rules\": [{\"name\": \"r\", \"keys\": [\"pkcs11:token=t\"], \"orderers\": [], "
           "\"approvals\": 0, \"actor_claim\": \"actor\"}]}\n")}},
    {"claims-bad-name.json",
     "claims-bad-name.json:1:123: bad claim name \"re f\": 1 to 64 of A-Z a-z 0-9 _ . : -",
     {TEXT(
         "claims-bad-name.json",
         "{\"rules\": [{\"name\": \"r\", \"keys\": [\"pkcs11:token=t\"], \"orderers\": [], "
         "\"approvals\": 0, \"claims\": {\"issuer\": \"gh\", \"match\": {\"re f\": \"x\"}}}]}\n")}},
    {"claims-missing-issuer.json",
     "claims-missing-issuer.json:1:96: \"claims\" needs \"issuer\" (one of the policy's "
     "\"issuers\")",
     {TEXT("claims-missing-issuer.json",
           "{\"rules\": [{\"name\": \"r\", \"keys\": [\"pkcs11:token=t\"], \"orderers\": [], "
           "\"approvals\": 0, \"claims\": {\"match\": {\"ref\": \"x\"}}}]}\n")}},
    {"claims-empty-pattern.json",
     "claims-empty-pattern.json:1:130: a claim's pattern is 1 to 256 bytes, no control characters",
     {TEXT("claims-empty-pattern.json",
           "{\"rules\": [{\"name\": \"r\", \"keys\": [\"pkcs11:token=t\"], \"orderers\": [], "
           "\"approvals\": 0, \"claims\": {\"issuer\": \"gh\", \"match\": {\"ref\": \"\"}}}]}\n")}},
    {"claims-unknown.json",
     "claims-unknown.json:1:113: unknown member \"require\" in \"claims\" (expected \"issuer\" and "
     "\"match\")",
     {TEXT("claims-unknown.json",
           "{\"rules\": [{\"name\": \"r\", \"keys\": [\"pkcs11:token=t\"], \"orderers\": [], "
           "\"approvals\": 0, \"claims\": {\"issuer\": \"gh\", \"require\": {}}}]}\n")}},
    /* notifications: notifiers and a rule's notify */
    {"notifier-scheme.json",
     "notifier-scheme.json:4:12: \"url\" must start with https:// (or http:// to 127.0.0.1, "
     "[::1] or localhost)",
     {TEXT("notifier-scheme.json",
           NOTIFIER("    \"url\": \"ftp://hooks.example.com/h\", " EVENTS))}},
    {"notifier-http.json",
     "notifier-http.json:4:12: \"url\" is plain http:// to \"hooks.example.com\": http:// is "
     "only for 127.0.0.1, [::1] or localhost (use https://)",
     {TEXT("notifier-http.json",
           NOTIFIER("    \"url\": \"http://hooks.example.com:8080/h\", " EVENTS))}},
    {"notifier-http-lookalike.json",
     "notifier-http-lookalike.json:4:12: \"url\" is plain http:// to \"127.0.0.1.example.com\": "
     "http:// is only for 127.0.0.1, [::1] or localhost (use https://)",
     {TEXT("notifier-http-lookalike.json",
           NOTIFIER("    \"url\": \"http://127.0.0.1.example.com/h\", " EVENTS))}},
    {"notifier-userinfo.json",
     "notifier-userinfo.json:4:12: \"url\" must not carry a user name or password (\"...@\" "
     "before the host)",
     {TEXT("notifier-userinfo.json",
           NOTIFIER("    \"url\": \"https://u:secret@hooks.example.com/h\", " EVENTS))}},
    {"notifier-space.json",
     "notifier-space.json:4:12: \"url\" must be printable ASCII: no spaces or control "
     "characters (percent-encode others)",
     {TEXT("notifier-space.json",
           NOTIFIER("    \"url\": \"https://hooks.example.com/a b\", " EVENTS))}},
    {"notifier-no-host.json",
     "notifier-no-host.json:4:12: \"url\" needs a host (a name, an IPv4 address or an [IPv6] "
     "address) and optionally :PORT after the scheme",
     {TEXT("notifier-no-host.json", NOTIFIER("    \"url\": \"https://:443/h\", " EVENTS))}},
    {"notifier-both.json",
     "notifier-both.json:5:5: notifier \"n\" needs one of \"url\" and \"command\", not both",
     {TEXT("notifier-both.json", NOTIFIER("    " HOOK ",\n"
                                          "    \"command\": [\"/usr/sbin/sendmail\"], " EVENTS))}},
    {"notifier-neither.json",
     "notifier-neither.json:2:17: notifier \"n\" needs one of \"url\" and \"command\"",
     {TEXT("notifier-neither.json", NOTIFIER("    " EVENTS))}},
    {"notifier-format-command.json",
     "notifier-format-command.json:4:36: \"format\" is for \"url\" (a command reads the event "
     "as JSON on its standard input)",
     {TEXT("notifier-format-command.json",
           NOTIFIER("    \"command\": [\"/usr/bin/mailx\"], \"format\": \"json\", " EVENTS))}},
    {"notifier-bad-format.json",
     "notifier-bad-format.json:4:53: \"format\" must be \"json\", \"slack\" or \"teams\", not "
     "\"discord\"",
     {TEXT("notifier-bad-format.json",
           NOTIFIER("    " HOOK ", \"format\": \"discord\", " EVENTS))}},
    {"notifier-command-relative.json",
     "notifier-command-relative.json:4:17: \"command\" must start with the program's absolute "
     "path (it runs without a shell or a PATH search), not \"sendmail\"",
     {TEXT("notifier-command-relative.json",
           NOTIFIER("    \"command\": [\"sendmail\", \"-t\"], " EVENTS))}},
    {"notifier-command-control.json",
     "notifier-command-control.json:4:30: entries of \"command\" must not hold control "
     "characters",
     {TEXT("notifier-command-control.json",
           NOTIFIER("    \"command\": [\"/bin/echo\", \"a\\nb\"], " EVENTS))}},
    {"notifier-secret-relative.json",
     "notifier-secret-relative.json:4:58: \"secret_file\" must be an absolute path (2 to 4096 "
     "bytes, no control characters)",
     {TEXT("notifier-secret-relative.json",
           NOTIFIER("    " HOOK ", \"secret_file\": \"hmac.key\", " EVENTS))}},
    {"notifier-ca-http.json",
     "notifier-ca-http.json:4:35: \"ca_file\" is for an https:// \"url\" (the CA certificates "
     "its TLS server is verified with)",
     {TEXT(
         "notifier-ca-http.json",
         NOTIFIER("    \"url\": \"http://[::1]:8443/h\", \"ca_file\": \"/etc/ca.pem\", " EVENTS))}},
    {"notifier-unknown-event.json",
     "notifier-unknown-event.json:4:65: unknown event \"approve\" (created, approval, approved, "
     "rejected, withdrawn, revoked, expired, expiring, exhausted, use_refused)",
     {TEXT("notifier-unknown-event.json",
           NOTIFIER("    " HOOK ", \"events\": [\"created\", \"approve\"]"))}},
    {"notifier-test-event.json",
     "notifier-test-event.json:4:54: \"test\" is not an event a policy lists (every notifier "
     "hears \"approvald notify test\")",
     {TEXT("notifier-test-event.json", NOTIFIER("    " HOOK ", \"events\": [\"test\"]"))}},
    {"notifier-event-twice.json",
     "notifier-event-twice.json:4:77: event \"rejected\" is listed twice",
     {TEXT("notifier-event-twice.json",
           NOTIFIER("    " HOOK ", \"events\": [\"rejected\", \"expired\", \"rejected\"]"))}},
    {"notifier-empty-events.json",
     "notifier-empty-events.json:4:53: \"events\" must not be empty",
     {TEXT("notifier-empty-events.json", NOTIFIER("    " HOOK ", \"events\": []"))}},
    {"notifier-no-events.json",
     "notifier-no-events.json:2:17: notifier \"n\" needs \"events\"",
     {TEXT("notifier-no-events.json", NOTIFIER("    " HOOK))}},
    {"notifier-no-name.json",
     "notifier-no-name.json:1:16: a notifier needs \"name\"",
     {TEXT("notifier-no-name.json", "{\"notifiers\": [{" HOOK ", " EVENTS "}]}\n")}},
    {"notifier-bad-name.json",
     "notifier-bad-name.json:1:25: bad notifier name \"on call\": 1 to 64 of A-Z a-z 0-9 . _ -",
     {TEXT("notifier-bad-name.json",
           "{\"notifiers\": [{\"name\": \"on call\", " HOOK ", " EVENTS "}]}\n")}},
    {"notifier-timeout.json",
     "notifier-timeout.json:4:54: \"timeout\" must be 1s to 60s, not \"2m\"",
     {TEXT("notifier-timeout.json", NOTIFIER("    " HOOK ", \"timeout\": \"2m\", " EVENTS))}},
    {"notifier-timeout-int.json",
     "notifier-timeout-int.json:4:54: \"timeout\" must be a string, not an integer",
     {TEXT("notifier-timeout-int.json", NOTIFIER("    " HOOK ", \"timeout\": 5, " EVENTS))}},
    {"notifier-unknown.json",
     "notifier-unknown.json:4:43: unknown member \"headers\" in a notifier (expected \"name\", "
     "\"url\" or \"command\", \"format\", \"secret_file\", \"ca_file\", \"events\", "
     "\"timeout\")",
     {TEXT("notifier-unknown.json", NOTIFIER("    " HOOK ", \"headers\": {}, " EVENTS))}},
    {"notifiers-not-array.json",
     "notifiers-not-array.json:1:15: \"notifiers\" must be an array, not an object",
     {TEXT("notifiers-not-array.json", "{\"notifiers\": {}}\n")}},
    {"notifier-twice",
     "notifier-twice/b.json:3:14: notifier \"n\" is defined twice (first at "
     "notifier-twice/a.json:2:17)",
     {TEXT("notifier-twice/a.json", NOTIFIER("    " HOOK ", " EVENTS)),
      TEXT("notifier-twice/b.json",
           "{\n"
           "  \"notifiers\": [{\"name\": \"m\", " HOOK ", " EVENTS "},\n"
           "    {\"name\": \"n\", \"command\": [\"/bin/true\"], " EVENTS "}]\n"
           "}\n")}},
    {"notify-unknown",
     "notify-unknown/a.json:7:23: rule \"r\" names no notifier the policy defines (\"ops\"; "
     "see \"notifiers\")",
     {TEXT("notify-unknown/a.json", RULE("      \"orderers\": [], \"approvals\": 0,\n"
                                         "      \"notify\": [\"n\", \"ops\"]\n")),
      TEXT("notify-unknown/b.json", NOTIFIER("    " HOOK ", " EVENTS))}},
    {"notify-twice.json",
     "notify-twice.json:7:23: notifier \"n\" is listed twice",
     {TEXT("notify-twice.json", RULE("      \"orderers\": [], \"approvals\": 0,\n"
                                     "      \"notify\": [\"n\", \"n\"]\n"))}},
    {"notify-empty.json",
     "notify-empty.json:7:17: \"notify\" must not be empty",
     {TEXT("notify-empty.json", RULE("      \"orderers\": [], \"approvals\": 0,\n"
                                     "      \"notify\": []\n"))}},
    {"notify-bad-name.json",
     "notify-bad-name.json:7:18: bad notifier name \"a/b\": 1 to 64 of A-Z a-z 0-9 . _ -",
     {TEXT("notify-bad-name.json", RULE("      \"orderers\": [], \"approvals\": 0,\n"
                                        "      \"notify\": [\"a/b\"]\n"))}},
};

/* The three policies of policy/examples, as bytes (test_policy_load loads the files). */
static const struct text examples[] = {
    TEXT("dev.json", "{\n"
                     "  \"default\": \"deny\",\n"
                     "  \"rules\": [\n"
                     "    {\n"
                     "      \"name\": \"dev-signing\",\n"
                     "      \"keys\": [\"pkcs11:token=dev\"],\n"
                     "      \"orderers\": [\"group:developers\"],\n"
                     "      \"approvals\": 0,\n"
                     "      \"admins\": [\"group:developers\"],\n"
                     "      \"max_validity\": \"7d\"\n"
                     "    }\n"
                     "  ]\n"
                     "}\n"),
    TEXT("prod.json",
         "{\n"
         "  \"default\": \"deny\",\n"
         "  \"rules\": [\n"
         "    {\n"
         "      \"name\": \"prod-firmware\",\n"
         "      \"keys\": [\"pkcs11:token=prod;object=fw-signing\"],\n"
         "      \"orderers\": [\"group:ci\", \"user:release\"],\n"
         "      \"approvers\": [\"group:release-approvers\"],\n"
         "      \"approvals\": 2,\n"
         "      \"admins\": [\"group:security\"],\n"
         "      \"max_uses\": 10,\n"
         "      \"max_validity\": \"24h\",\n"
         "      \"mechanisms\": [\"CKM_ECDSA\", \"CKM_ECDSA_SHA256\", \"CKM_SHA256_RSA_PKCS\"],\n"
         "      \"bind_digest\": false\n"
         "    }\n"
         "  ]\n"
         "}\n"),
    TEXT("quorum.json",
         "{\n"
         "  \"rules\": [\n"
         "    {\n"
         "      \"name\": \"prod-images\",\n"
         "      \"keys\": [\"pkcs11:token=prod;object=image-signing\"],\n"
         "      \"orderers\": [\"group:ci\"],\n"
         "      \"quorum\": [\n"
         "        {\"from\": [\"group:security\"], \"count\": 1},\n"
         "        {\"from\": [\"group:release-approvers\"], \"count\": 1}\n"
         "      ],\n"
         "      \"admins\": [\"group:security\"],\n"
         "      \"max_uses\": 50,\n"
         "      \"max_validity\": \"2h\",\n"
         "      \"mechanisms\": [\"CKM_ECDSA\", \"CKM_ECDSA_SHA256\"],\n"
         "      \"bind_digest\": true,\n"
         "      \"registries\": [\"registry.example.com\", \"ghcr.io\", \"localhost:5000\"]\n"
         "    }\n"
         "  ]\n"
         "}\n"),
};

/* A policy of n texts built as one, or a failed test. */
static struct p11g_policy *build_ok(const struct text *texts, size_t n)
{
	struct p11g_policy_builder *b = p11g_policy_builder_new();
	struct p11g_policy *p = NULL;
	p11g_err err = {0};

	assert_non_null(b);
	for (size_t i = 0; i < n; i++)
		if (p11g_policy_builder_add(b, texts[i].name, texts[i].text, texts[i].len, &err) <
		    0)
			fail_msg("%s: %s", texts[i].name, err.msg);
	if (p11g_policy_builder_finish(b, &p, &err) < 0)
		fail_msg("%s", err.msg);
	return p;
}

static struct p11g_policy *examples_ok(void)
{
	return build_ok(examples, P11G_ARRAY_SIZE(examples));
}

static void test_bad_policies(void **state)
{
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad_cases); i++) {
		struct p11g_policy *sentinel = (struct p11g_policy *)&sentinel, *p = sentinel;
		struct p11g_policy_builder *b = p11g_policy_builder_new();
		p11g_err err = {0};
		int r = 0;

		assert_non_null(b);
		for (size_t t = 0; r == 0 && t < P11G_ARRAY_SIZE(bad_cases[i].texts) &&
		                   bad_cases[i].texts[t].name;
		     t++) {
			const struct text *x = &bad_cases[i].texts[t];
			r = p11g_policy_builder_add(b, x->name, x->text, x->len, &err);
		}
		if (r == 0)
			r = p11g_policy_builder_finish(b, &p, &err);
		else
			p11g_policy_builder_free(b);
		if (r != -1)
			fail_msg("%s: built", bad_cases[i].what);
		assert_true(p == sentinel);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
		if (strcmp(err.msg, bad_cases[i].msg) != 0)
			fail_msg("%s:\n   got: %s\nwanted: %s", bad_cases[i].what, err.msg,
			         bad_cases[i].msg);
	}
}

static void test_parse_buffer_errors(void **state)
{
	struct p11g_policy *p = NULL;
	p11g_err err = {0};
	const char text[] = "{\"rules\": [{\"name\": \"x\", \"keys\": [\"pkcs11:token=a\"], "
	                    "\"orderers\": [], \"approvals\": 0, \"bind_digest\": 1}]}";

	assert_int_equal(p11g_policy_parse("inline", text, strlen(text), &p, &err), -1);
	assert_string_equal(err.msg,
	                    "inline:1:101: \"bind_digest\" must be a boolean, not an integer");

	/* A NUL byte is not JSON whitespace: the length, not the NUL, ends the text. */
	assert_int_equal(p11g_policy_parse("nul", "{}\0{}", 5, &p, &err), -1);
	assert_string_equal(err.msg, "nul:1:3: unexpected data after the JSON value");
}

/* However large p11g_err's message is: a name too long for it keeps its end ("..." for the
 * start), a message too long is cut at its end, and the position always stays whole. */
static void test_long_messages(void **state)
{
	struct p11g_policy *p = NULL;
	p11g_err err = {0};
	char name[4096], uri[1800], *text = NULL;
	const char *want = "/bad.json:1:13: \"default\" must be a string, not an integer";

	memset(name, 'd', sizeof(name));
	name[0] = '/';
	snprintf(name + sizeof(name) - 10, 10, "/bad.json");
	assert_int_equal(p11g_policy_parse(name, "{\"default\": 1}", 14, &p, &err), -1);
	assert_string_equal(err.code, P11G_E_BAD_REQUEST);
	size_t ml = strlen(err.msg), wl = strlen(want);
	if (ml <= wl || strcmp(err.msg + ml - wl, want) || strncmp(err.msg, "...ddd", 6))
		fail_msg("got %s", err.msg);

	/* a bad key URI, quoted in a message over 1800 bytes */
	memset(uri, 'u', sizeof(uri) - 1);
	uri[sizeof(uri) - 1] = '\0';
	assert_true(
	    asprintf(&text,
	             "{\"rules\": [\n"
	             "{\"name\": \"r\", \"keys\": [\"pkcs11:token=%s\"], \"approvals\": 0}]}",
	             uri) > 0);
	assert_int_equal(p11g_policy_parse("long.json", text, strlen(text), &p, &err), -1);
	free(text);
	assert_string_equal(err.code, P11G_E_BAD_REQUEST);
	assert_int_equal(strlen(err.msg), sizeof(err.msg) - 1);
	want = "long.json:2:24: bad key URI \"pkcs11:token=uuu";
	if (strncmp(err.msg, want, strlen(want)))
		fail_msg("got %.100s", err.msg);
}

/* No texts: an empty deny-all policy (an empty policy directory). */
static void test_no_texts(void **state)
{
	struct p11g_policy *p = build_ok(NULL, 0);
	assert_int_equal(p->n_rules, 0);
	assert_int_equal(p->n_files, 0);
	assert_false(p->default_allow);
	assert_int_equal(strlen(p->digest), 64);
	p11g_policy_free(p);
}

static void test_examples(void **state)
{
	for (size_t i = 0; i < P11G_ARRAY_SIZE(examples); i++) {
		struct p11g_policy *p = build_ok(&examples[i], 1);
		assert_int_equal(p->n_rules, 1);
		assert_int_equal(p->n_files, 1);
		p11g_policy_free(p);
	}

	struct p11g_policy *p = examples_ok();
	assert_int_equal(p->n_files, 3);
	assert_int_equal(p->n_rules, 3);
	assert_false(p->default_allow);
	/* In the order given: dev, prod, quorum. */
	assert_string_equal(p->rules[0].name, "dev-signing");
	assert_string_equal(p->rules[1].name, "prod-firmware");
	assert_string_equal(p->rules[2].name, "prod-images");

	const struct p11g_rule *r = p11g_policy_rule(p, "prod-firmware");
	assert_non_null(r);
	assert_string_equal(r->file, "prod.json");
	assert_int_equal(r->line, 4);
	assert_int_equal(r->column, 5);
	assert_int_equal(r->n_quorum, 1);
	assert_int_equal(r->quorum[0].count, 2);
	assert_int_equal(r->quorum[0].from.n, 1);
	assert_int_equal(r->quorum[0].from.v[0].kind, P11G_PRINCIPAL_GROUP);
	assert_string_equal(r->quorum[0].from.v[0].name, "release-approvers");
	assert_int_equal(r->max_uses, 10);
	assert_int_equal(r->max_validity, 86400);
	assert_int_equal(r->n_mechanisms, 3);
	assert_false(r->bind_digest);
	assert_false(r->allow_raw);
	assert_int_equal(r->orderers.n, 2);

	r = p11g_policy_rule(p, "prod-images");
	assert_non_null(r);
	assert_int_equal(r->n_quorum, 2);
	assert_int_equal(r->n_registries, 3);
	assert_string_equal(r->registries[2], "localhost:5000");
	assert_true(r->bind_digest);
	assert_int_equal(r->max_validity, 7200);

	r = p11g_policy_rule(p, "dev-signing");
	assert_non_null(r);
	assert_int_equal(r->n_quorum, 0);
	assert_int_equal(r->max_uses, 0);
	assert_int_equal(r->max_validity, 7 * 86400);

	assert_null(p11g_policy_rule(p, "nope"));
	p11g_policy_free(p);
}

static struct p11g_keyid mkkey(const char *token, const char *label, const char *id, size_t id_len)
{
	struct p11g_keyid k = {.key_type = CK_UNAVAILABLE_INFORMATION};
	snprintf(k.token_label, sizeof(k.token_label), "%s", token);
	snprintf(k.label, sizeof(k.label), "%s", label);
	memcpy(k.id, id, id_len);
	k.id_len = id_len;
	return k;
}

static void test_match(void **state)
{
	struct p11g_policy *p = examples_ok();
	static const struct {
		const char *token, *label, *rule;
	} cases[] = {
	    {"prod", "fw-signing", "prod-firmware"},
	    {"prod", "image-signing", "prod-images"},
	    {"prod", "other", NULL},
	    {"prod", "", NULL}, /* object=fw-signing does not match an unlabelled key */
	    {"dev", "anything", "dev-signing"},
	    {"dev", "", "dev-signing"},
	    {"Prod", "fw-signing", NULL},
	    {"", "fw-signing", NULL},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		struct p11g_keyid k = mkkey(cases[i].token, cases[i].label, "\x01", 1);
		const struct p11g_rule *r = p11g_policy_match(p, &k);
		if (!cases[i].rule && r)
			fail_msg("%s/%s matched %s", cases[i].token, cases[i].label, r->name);
		if (cases[i].rule && (!r || strcmp(r->name, cases[i].rule) != 0))
			fail_msg("%s/%s: wanted %s", cases[i].token, cases[i].label, cases[i].rule);
	}
	p11g_policy_free(p);
}

/* The policy of finding 2 in issue 16: keys without a label under one rule, a named key under
 * another.  object= is the empty label and nothing else. */
static const char empty_label_policy[] =
    "{\"rules\": ["
    "{\"name\": \"unlabelled\", \"keys\": [\"pkcs11:token=prod;object=\"], \"orderers\": [], "
    "\"approvals\": 0},"
    "{\"name\": \"fw\", \"keys\": [\"pkcs11:token=prod;object=fw-rsa\"], \"orderers\": [], "
    "\"approvals\": 0},"
    "{\"name\": \"dev\", \"keys\": [\"pkcs11:token=dev\"], \"orderers\": [], \"approvals\": 0}"
    "]}";

static void test_empty_label_rule(void **state)
{
	struct p11g_policy *p = NULL;
	p11g_err err = {0};

	if (p11g_policy_parse("p.json", empty_label_policy, strlen(empty_label_policy), &p, &err))
		fail_msg("%s", err.msg);
	static const struct {
		const char *token, *label, *rule;
	} cases[] = {
	    {"prod", "", "unlabelled"}, {"prod", "fw-rsa", "fw"}, {"prod", "other", NULL},
	    {"dev", "", "dev"},         {"dev", "fw-rsa", "dev"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		struct p11g_keyid k = mkkey(cases[i].token, cases[i].label, "\x01", 1);
		const struct p11g_rule *r = p11g_policy_match(p, &k);
		if (cases[i].rule ? !r || strcmp(r->name, cases[i].rule) : r != NULL)
			fail_msg("%s/%s: got %s", cases[i].token, cases[i].label,
			         r ? r->name : "none");
	}

	/* Request patterns and the rules that could govern a key they name. */
	static const struct {
		const char *uri;
		size_t n;
		const char *first, *second;
	} req[] = {
	    {"pkcs11:token=prod", 2, "unlabelled", "fw"},
	    {"pkcs11:", 3, "unlabelled", "fw"},
	    {"pkcs11:object=", 2, "unlabelled", "dev"},
	    {"pkcs11:token=prod;object=", 1, "unlabelled", NULL},
	    {"pkcs11:token=prod;object=fw-rsa;id=%01", 1, "fw", NULL},
	    {"pkcs11:token=prod;id=%01", 2, "unlabelled", "fw"},
	    {"pkcs11:token=prod;object=other", 0, NULL, NULL},
	    {"pkcs11:token=dev", 1, "dev", NULL},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(req); i++) {
		P11KitUri *u = NULL;
		const struct p11g_rule *r[1] = {NULL};
		p11g_err e;
		assert_int_equal(p11g_keyuri_parse(req[i].uri, &u, &e), 0);
		/* at most max filled, all counted */
		size_t n = p11g_policy_overlapping(p, u, r, 1);
		if (n != req[i].n)
			fail_msg("%s: %zu rules, wanted %zu", req[i].uri, n, req[i].n);
		if (req[i].first && strcmp(r[0]->name, req[i].first))
			fail_msg("%s: first %s, wanted %s", req[i].uri, r[0]->name, req[i].first);
		const struct p11g_rule *two[2];
		if (req[i].second && (p11g_policy_overlapping(p, u, two, 2) < 2 ||
		                      strcmp(two[1]->name, req[i].second)))
			fail_msg("%s: second rule, wanted %s", req[i].uri, req[i].second);
		p11_kit_uri_free(u);
	}
	p11g_policy_free(p);
}

/*
 * What a request is judged under and what a use finds agree: when a pattern
 * could name keys of one rule only, every key it matches has that rule or none.
 * Over every pattern and key built from a few attribute values.
 */
static void test_request_judging_agrees_with_match(void **state)
{
	static const char *const tokens[] = {NULL, "prod", "dev"};
	static const char *const labels[] = {NULL, "", "fw-rsa", "other"};
	static const char *const ids[] = {NULL, "", "%01"};
	struct p11g_policy *p = NULL;
	p11g_err err = {0};
	size_t judged = 0;

	if (p11g_policy_parse("p.json", empty_label_policy, strlen(empty_label_policy), &p, &err))
		fail_msg("%s", err.msg);
	for (size_t t = 0; t < P11G_ARRAY_SIZE(tokens); t++)
		for (size_t l = 0; l < P11G_ARRAY_SIZE(labels); l++)
			for (size_t d = 0; d < P11G_ARRAY_SIZE(ids); d++) {
				char uri[128] = "pkcs11:";
				size_t len = strlen(uri);
				if (tokens[t])
					len += (size_t)snprintf(uri + len, sizeof(uri) - len,
					                        "token=%s;", tokens[t]);
				if (labels[l])
					len += (size_t)snprintf(uri + len, sizeof(uri) - len,
					                        "object=%s;", labels[l]);
				if (ids[d])
					len += (size_t)snprintf(uri + len, sizeof(uri) - len,
					                        "id=%s;", ids[d]);
				if (uri[len - 1] == ';')
					uri[len - 1] = '\0';
				P11KitUri *u = NULL;
				const struct p11g_rule *one[1];
				p11g_err e;
				assert_int_equal(p11g_keyuri_parse(uri, &u, &e), 0);
				if (p11g_policy_overlapping(p, u, one, 1) != 1) {
					p11_kit_uri_free(u);
					continue;
				}
				judged++;
				for (size_t kt = 1; kt < P11G_ARRAY_SIZE(tokens); kt++)
					for (size_t kl = 1; kl < P11G_ARRAY_SIZE(labels); kl++)
						for (size_t kd = 1; kd < P11G_ARRAY_SIZE(ids);
						     kd++) {
							struct p11g_keyid k =
							    mkkey(tokens[kt], labels[kl],
							          kd == 2 ? "\x01" : "", kd == 2);
							const struct p11g_rule *r =
							    p11g_policy_match(p, &k);
							if (p11g_keyid_matches(&k, u) && r &&
							    r != one[0])
								fail_msg(
								    "%s judged under %s, but key "
								    "%s/%s is %s's",
								    uri, one[0]->name, tokens[kt],
								    labels[kl], r->name);
						}
				p11_kit_uri_free(u);
			}
	assert_true(judged > 5);
	p11g_policy_free(p);
}

static void test_default_allow(void **state)
{
	const char a[] = "{\"default\": \"allow\"}";
	struct p11g_policy *p = NULL;
	p11g_err err = {0};

	assert_int_equal(p11g_policy_parse("a.json", a, strlen(a), &p, &err), 0);
	assert_true(p->default_allow);
	assert_int_equal(p->n_rules, 0);
	p11g_policy_free(p);
	assert_int_equal(p11g_policy_parse("b.json", "{}", 2, &p, &err), 0);
	assert_false(p->default_allow);
	p11g_policy_free(p);
}

static void test_digest(void **state)
{
	struct p11g_policy *a, *b, *c, *d;
	p11g_err err = {0};

	assert_int_equal(p11g_policy_parse("x.json", "{}", 2, &a, &err), 0);
	assert_int_equal(p11g_policy_parse("x.json", "{}", 2, &b, &err), 0);
	assert_int_equal(p11g_policy_parse("y.json", "{}", 2, &c, &err), 0);
	assert_int_equal(p11g_policy_parse("x.json", "{ }", 3, &d, &err), 0);
	assert_string_equal(a->digest, b->digest);
	assert_string_not_equal(a->digest, c->digest);
	assert_string_not_equal(a->digest, d->digest);
	for (size_t i = 0; i < 64; i++)
		assert_true(strchr("0123456789abcdef", a->digest[i]) != NULL);
	p11g_policy_free(a);
	p11g_policy_free(b);
	p11g_policy_free(c);
	p11g_policy_free(d);

	/* A file's digest depends on its name, not on the directory it is read from. */
	assert_int_equal(p11g_policy_parse("x.json", "{}", 2, &a, &err), 0);
	assert_int_equal(p11g_policy_parse("/etc/approvald/policy.d/x.json", "{}", 2, &b, &err), 0);
	assert_string_equal(a->digest, b->digest);
	p11g_policy_free(a);
	p11g_policy_free(b);
}

static json_t *load_json(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	if (!j)
		fail_msg("test JSON: %s", je.text);
	return j;
}

/* Issuers and a rule's claims: parsed, found by name, and kept in the rule's snapshot. */
static void test_issuers_and_claims(void **state)
{
	static const char issuers[] =
	    "{\"issuers\": [{\"name\": \"gh\", \"issuer\": "
	    "\"https://token.actions.githubusercontent.com\", \"audience\": \"p11gate\", "
	    "\"jwks_url\": \"https://token.actions.githubusercontent.com/.well-known/jwks\", "
	    "\"show\": [\"repository\", \"ref\", \"actor\"]}]}\n";
	static const char rules[] =
	    "{\"rules\": [{\"name\": \"release\", \"keys\": [\"pkcs11:token=t\"], "
	    "\"orderers\": [\"uid:1000\"], \"approvers\": [\"uid:1001\"], \"approvals\": 1, "
	    "\"actor_claim\": \"actor\", \"claims\": {\"issuer\": \"gh\", \"match\": "
	    "{\"repository\": \"acme/*\", \"ref\": \"refs/tags/v*\"}}}]}\n";
	struct p11g_policy_builder *b = p11g_policy_builder_new();
	struct p11g_policy *p = NULL;
	p11g_err err = {0};
	(void)state;
	/* the rule's file before the issuer's: the reference is checked once all are read */
	assert_int_equal(
	    p11g_policy_builder_add(b, "10-rules.json", rules, sizeof(rules) - 1, &err), 0);
	assert_int_equal(
	    p11g_policy_builder_add(b, "20-issuers.json", issuers, sizeof(issuers) - 1, &err), 0);
	assert_int_equal(p11g_policy_builder_finish(b, &p, &err), 0);
	const struct p11g_issuer *is = p11g_policy_issuer(p, "gh");
	assert_non_null(is);
	assert_null(p11g_policy_issuer(p, "gl"));
	assert_string_equal(is->audience, "p11gate");
	assert_null(is->jwks_file);
	assert_int_equal(is->n_algorithms, 2); /* the default */
	assert_string_equal(is->algorithms[0], "RS256");
	assert_string_equal(is->algorithms[1], "ES256");
	assert_int_equal(is->n_show, 3);
	const struct p11g_rule *r = &p->rules[0];
	assert_non_null(r->claims);
	assert_string_equal(r->claims->issuer, "gh");
	assert_int_equal(r->claims->n, 2);
	assert_string_equal(r->claims->names[0], "repository");
	assert_string_equal(r->claims->patterns[1], "refs/tags/v*");
	assert_string_equal(r->claims->actor_claim, "actor");
	/* the snapshot an operation keeps: the same requirement, read back */
	json_t *snap = p11g_rule_to_json(r);
	struct p11g_rule *back = NULL;
	assert_non_null(snap);
	assert_int_equal(p11g_rule_from_json(snap, &back, &err), 0);
	assert_non_null(back->claims);
	assert_string_equal(back->claims->issuer, "gh");
	assert_int_equal(back->claims->n, 2);
	assert_string_equal(back->claims->patterns[0], "acme/*");
	assert_string_equal(back->claims->actor_claim, "actor");
	json_t *again = p11g_rule_to_json(back);
	assert_true(json_equal(snap, again));
	json_decref(again);
	json_decref(snap);
	p11g_rule_free(back);
	/* a rule without claims keeps the snapshot it had: no member is added */
	struct p11g_policy *q = NULL;
	assert_int_equal(
	    p11g_policy_parse("plain.json", RULE("      \"orderers\": [], \"approvals\": 0\n"),
	                      sizeof(RULE("      \"orderers\": [], \"approvals\": 0\n")) - 1, &q,
	                      &err),
	    0);
	snap = p11g_rule_to_json(&q->rules[0]);
	assert_null(json_object_get(snap, "claims"));
	assert_null(json_object_get(snap, "actor_claim"));
	json_decref(snap);
	p11g_policy_free(q);
	p11g_policy_free(p);
}

/* Notifiers and a rule's notify: parsed, found by name, and never in the rule's snapshot. */
static void test_notifiers(void **state)
{
	static const char rules[] =
	    "{\"rules\": [{\"name\": \"release\", \"keys\": [\"pkcs11:token=t\"], "
	    "\"orderers\": [\"uid:1000\"], \"approvers\": [\"uid:1001\"], \"approvals\": 1, "
	    "\"notify\": [\"mail\", \"slack\"]}]}\n";
	static const char notifiers[] =
	    "{\n"
	    "  \"notifiers\": [\n"
	    "    {\"name\": \"slack\", \"url\": \"https://hooks.slack.com/services/T0/B0/x\",\n"
	    "     \"format\": \"slack\", \"secret_file\": \"/etc/approvald/slack.key\",\n"
	    "     \"ca_file\": \"/etc/ssl/slack-ca.pem\", \"timeout\": \"30s\",\n"
	    "     \"events\": [\"created\", \"approved\", \"rejected\", \"use_refused\"]},\n"
	    "    {\"name\": \"mail\", \"command\": [\"/usr/sbin/sendmail\", \"-t\", \"\"],\n"
	    "     \"events\": [\"rejected\", \"expiring\"]},\n"
	    "    {\"name\": \"local\", \"url\": \"http://localhost:8080/hook?x=1\", "
	    "\"events\": [\"exhausted\"]},\n"
	    "    {\"name\": \"v6\", \"url\": \"http://[::1]/h\", \"events\": [\"expired\"], "
	    "\"timeout\": \"1m\"},\n"
	    "    {\"name\": \"teams\", \"url\": \"https://[2001:db8::1]:8443\", \"format\": "
	    "\"teams\", \"events\": [\"approval\", \"withdrawn\", \"revoked\"]}\n"
	    "  ]\n"
	    "}\n";
	struct p11g_policy_builder *b = p11g_policy_builder_new();
	struct p11g_policy *p = NULL;
	p11g_err err = {0};
	(void)state;

	/* the rule's file before the notifiers': names are checked once all are read */
	assert_int_equal(
	    p11g_policy_builder_add(b, "10-rules.json", rules, sizeof(rules) - 1, &err), 0);
	if (p11g_policy_builder_add(b, "20-notify.json", notifiers, sizeof(notifiers) - 1, &err) <
	    0)
		fail_msg("%s", err.msg);
	if (p11g_policy_builder_finish(b, &p, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(p->n_notifiers, 5);
	assert_null(p11g_policy_notifier(p, "pager"));
	assert_null(p11g_policy_notifier(p, NULL));

	const struct p11g_notifier *n = p11g_policy_notifier(p, "slack");
	assert_non_null(n);
	assert_string_equal(n->url, "https://hooks.slack.com/services/T0/B0/x");
	assert_null(n->command);
	assert_int_equal(n->format, P11G_NOTIFY_SLACK);
	assert_string_equal(n->secret_file, "/etc/approvald/slack.key");
	assert_string_equal(n->ca_file, "/etc/ssl/slack-ca.pem");
	assert_int_equal(n->timeout, 30);
	assert_int_equal(n->events, P11G_NOTIFY_CREATED | P11G_NOTIFY_APPROVED |
	                                P11G_NOTIFY_REJECTED | P11G_NOTIFY_USE_REFUSED);
	assert_string_equal(n->file, "20-notify.json");
	assert_int_equal(n->line, 3);
	assert_int_equal(n->column, 5);

	n = p11g_policy_notifier(p, "mail");
	assert_non_null(n);
	assert_null(n->url);
	assert_int_equal(n->n_command, 3);
	assert_string_equal(n->command[0], "/usr/sbin/sendmail");
	assert_string_equal(n->command[1], "-t");
	assert_string_equal(n->command[2], "");
	assert_null(n->command[3]);
	assert_int_equal(n->format, P11G_NOTIFY_JSON);
	assert_null(n->secret_file);
	assert_null(n->ca_file);
	assert_int_equal(n->timeout, 10); /* the default */
	assert_int_equal(n->events, P11G_NOTIFY_REJECTED | P11G_NOTIFY_EXPIRING);

	n = p11g_policy_notifier(p, "local");
	assert_string_equal(n->url, "http://localhost:8080/hook?x=1");
	assert_int_equal(n->format, P11G_NOTIFY_JSON);
	assert_int_equal(p11g_policy_notifier(p, "v6")->timeout, 60);
	assert_int_equal(p11g_policy_notifier(p, "teams")->format, P11G_NOTIFY_TEAMS);

	const struct p11g_rule *r = &p->rules[0];
	assert_int_equal(r->n_notify, 2);
	assert_string_equal(r->notify[0], "mail");
	assert_string_equal(r->notify[1], "slack");
	assert_null(r->notify[2]);

	/* the snapshot has no notify (events go to the policy in force), and reads back */
	json_t *snap = p11g_rule_to_json(r);
	struct p11g_rule *back = NULL;
	assert_non_null(snap);
	assert_null(json_object_get(snap, "notify"));
	if (p11g_rule_from_json(snap, &back, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(back->n_notify, 0);
	assert_null(back->notify);
	json_decref(snap);
	p11g_rule_free(back);
	p11g_policy_free(p);

	/* notifiers no rule names are no error */
	static const char alone[] = "{\"notifiers\": [{\"name\": \"n\", \"command\": "
	                            "[\"/bin/true\"], \"events\": [\"created\"]}]}";
	assert_int_equal(p11g_policy_parse("alone.json", alone, sizeof(alone) - 1, &p, &err), 0);
	assert_int_equal(p->n_notifiers, 1);
	assert_int_equal(p->n_rules, 0);
	p11g_policy_free(p);

	/* event names */
	static const char *const names[] = {"created",   "approval",    "approved", "rejected",
	                                    "withdrawn", "revoked",     "expired",  "expiring",
	                                    "exhausted", "use_refused", "test"};
	assert_int_equal(P11G_ARRAY_SIZE(names), P11G_NOTIFY_EVENTS_MAX);
	for (unsigned i = 0; i < P11G_NOTIFY_EVENTS_MAX; i++) {
		assert_string_equal(p11g_notify_event_name(1u << i), names[i]);
		assert_int_equal(p11g_notify_event_parse(names[i]), 1u << i);
	}
	assert_int_equal(p11g_notify_event_parse("test"), P11G_NOTIFY_TEST);
	assert_int_equal(p11g_notify_event_parse("use_refused"), P11G_NOTIFY_USE_REFUSED);
	assert_int_equal(p11g_notify_event_parse("Created"), 0);
	assert_int_equal(p11g_notify_event_parse(""), 0);
	assert_int_equal(p11g_notify_event_parse(NULL), 0);
	assert_null(p11g_notify_event_name(0));
	assert_null(p11g_notify_event_name(P11G_NOTIFY_CREATED | P11G_NOTIFY_APPROVED));
	assert_null(p11g_notify_event_name(1u << P11G_NOTIFY_EVENTS_MAX));
	assert_null(p11g_notify_event_name(1u << 31));
}

static void test_rule_round_trip(void **state)
{
	struct p11g_policy *p = examples_ok();
	p11g_err err;

	for (size_t i = 0; i < p->n_rules; i++) {
		const struct p11g_rule *r = &p->rules[i];
		struct p11g_rule *back = NULL;
		json_t *j1 = p11g_rule_to_json(r), *j2;

		assert_non_null(j1);
		if (p11g_rule_from_json(j1, &back, &err) != 0)
			fail_msg("%s: %s", r->name, err.msg);
		j2 = p11g_rule_to_json(back);
		if (!json_equal(j1, j2)) {
			char *s1 = json_dumps(j1, 0), *s2 = json_dumps(j2, 0);
			fail_msg("%s\n%s", s1, s2);
		}
		assert_string_equal(back->name, r->name);
		assert_string_equal(back->file, r->file);
		assert_int_equal(back->line, r->line);
		assert_int_equal(back->column, r->column);
		assert_int_equal(back->n_keys, r->n_keys);
		assert_int_equal(back->n_quorum, r->n_quorum);
		for (size_t k = 0; k < r->n_quorum; k++)
			assert_int_equal(back->quorum[k].count, r->quorum[k].count);
		assert_int_equal(back->max_uses, r->max_uses);
		assert_int_equal(back->max_validity, r->max_validity);
		assert_int_equal(back->n_mechanisms, r->n_mechanisms);
		assert_memory_equal(back->mechanisms, r->mechanisms,
		                    r->n_mechanisms * sizeof(*r->mechanisms));
		assert_int_equal(back->bind_digest, r->bind_digest);
		assert_int_equal(back->allow_raw, r->allow_raw);
		assert_int_equal(back->n_registries, r->n_registries);
		/* The snapshot still matches the same keys. */
		struct p11g_keyid k = mkkey("prod", "fw-signing", "", 0);
		for (size_t u = 0; u < r->n_keys; u++)
			assert_int_equal(p11g_keyid_matches(&k, back->key_uris[u]),
			                 p11g_keyid_matches(&k, r->key_uris[u]));
		json_decref(j1);
		json_decref(j2);
		p11g_rule_free(back);
	}

	const struct p11g_rule *r = p11g_policy_rule(p, "prod-firmware");
	json_t *j = p11g_rule_to_json(r);
	json_t *want = load_json(
	    "{\"name\": \"prod-firmware\", \"keys\": [\"pkcs11:token=prod;object=fw-signing\"],"
	    " \"orderers\": [\"group:ci\", \"user:release\"],"
	    " \"quorum\": [{\"from\": [\"group:release-approvers\"], \"count\": 2}],"
	    " \"auto_approve\": [], \"admins\": [\"group:security\"], \"max_uses\": 10,"
	    " \"max_validity\": \"1d\","
	    " \"mechanisms\": [\"CKM_ECDSA\", \"CKM_ECDSA_SHA256\", \"CKM_SHA256_RSA_PKCS\"],"
	    " \"allow_raw\": false, \"bind_digest\": false,"
	    " \"defined_at\": {\"file\": \"prod.json\", \"line\": 4,"
	    " \"column\": 5}}");
	assert_true(json_equal(j, want));
	json_decref(j);
	json_decref(want);
	p11g_policy_free(p);
}

static void test_rule_from_json_strict(void **state)
{
	static const struct {
		const char *json, *msg;
	} bad[] = {
	    {"{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [], \"approvals\": 0,"
	     " \"approver\": []}",
	     "unknown member \"approver\" in rule"},
	    {"{\"keys\": [\"pkcs11:token=a\"], \"orderers\": [], \"approvals\": 0}",
	     "rule is missing \"name\""},
	    {"{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [], \"approvals\": 0,"
	     " \"mechanisms\": [\"CKM_RSA_X_509\"]}",
	     "CKM_RSA_X_509 is a raw mechanism and needs \"allow_raw\": true"},
	    {"{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [\"x\"],"
	     " \"approvals\": 0}",
	     "bad principal \"x\": expected user:NAME, group:NAME or uid:N"},
	    {"{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [], \"approvals\": 0,"
	     " \"defined_at\": {\"file\": \"a\", \"line\": 0, \"column\": 1}}",
	     "\"line\" must be between 1 and 4294967295"},
	    {"{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [], \"approvals\": 0,"
	     " \"bind_digest\": \"yes\"}",
	     "\"bind_digest\" must be a boolean, not a string"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		json_t *j = load_json(bad[i].json);
		struct p11g_rule *r = NULL;
		p11g_err err = {0};
		if (p11g_rule_from_json(j, &r, &err) != -1)
			fail_msg("accepted %s", bad[i].json);
		assert_null(r);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
		const char *prefix = "<rule snapshot>:";
		assert_true(strncmp(err.msg, prefix, strlen(prefix)) == 0);
		size_t ml = strlen(err.msg), wl = strlen(bad[i].msg);
		if (ml < wl || strcmp(err.msg + ml - wl, bad[i].msg) != 0)
			fail_msg("got %s, wanted ...%s", err.msg, bad[i].msg);
		json_decref(j);
	}

	/* A position inside the snapshot text: JSON_INDENT(2) puts each member on a line. */
	json_t *j = load_json("{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [],"
	                      " \"approvals\": 0, \"approver\": []}");
	struct p11g_rule *r = NULL;
	p11g_err err;
	assert_int_equal(p11g_rule_from_json(j, &r, &err), -1);
	assert_string_equal(err.msg, "<rule snapshot>:8:3: unknown member \"approver\" in rule");
	json_decref(j);

	/* "defined_at" belongs to snapshots, not to policy files. */
	const char text[] = "{\"rules\": [{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], "
	                    "\"orderers\": [], \"approvals\": 0, \"defined_at\": {}}]}";
	struct p11g_policy *p = NULL;
	assert_int_equal(p11g_policy_parse("f.json", text, strlen(text), &p, &err), -1);
	assert_string_equal(err.msg, "f.json:1:86: unknown member \"defined_at\" in rule");

	/* Without "defined_at" the snapshot itself is where the rule was defined. */
	j = load_json("{\"name\": \"r\", \"keys\": [\"pkcs11:token=a\"], \"orderers\": [],"
	              " \"approvals\": 0}");
	assert_int_equal(p11g_rule_from_json(j, &r, &err), 0);
	assert_string_equal(r->file, "<rule snapshot>");
	assert_int_equal(r->line, 1);
	assert_int_equal(r->n_quorum, 0);
	p11g_rule_free(r);
	json_decref(j);
	assert_int_equal(p11g_rule_from_json(NULL, &r, &err), -1);
}

static void test_duration(void **state)
{
	static const struct {
		const char *s;
		int64_t v;
	} cases[] = {
	    {"90s", 90},
	    {"15m", 900},
	    {"24h", 86400},
	    {"7d", 604800},
	    {"1s", 1},
	    {"3650d", 3650LL * 86400},
	    {"315360000s", 315360000},
	    {"315360001s", -1},
	    {"3651d", -1},
	    {"99999999999999999999d", -1},
	    {"0s", -1},
	    {"0d", -1},
	    {"", -1},
	    {"s", -1},
	    {"10", -1},
	    {"10x", -1},
	    {"10ss", -1},
	    {"-5m", -1},
	    {"+5m", -1},
	    {" 5m", -1},
	    {"5m ", -1},
	    {"5 m", -1},
	    {"1.5h", -1},
	    {"1h30m", -1},
	    {"5M", -1},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++)
		if (p11g_duration_parse(cases[i].s) != cases[i].v)
			fail_msg("\"%s\": got %lld, wanted %lld", cases[i].s,
			         (long long)p11g_duration_parse(cases[i].s), (long long)cases[i].v);
	assert_int_equal(p11g_duration_parse(NULL), -1);
}

static void test_principal_parse(void **state)
{
	static const struct {
		const char *s;
		enum p11g_principal_kind kind;
		const char *name;
	} good[] = {
	    {"user:alice", P11G_PRINCIPAL_USER, "alice"},
	    {"group:release-approvers", P11G_PRINCIPAL_GROUP, "release-approvers"},
	    {"group:domain users", P11G_PRINCIPAL_GROUP, "domain users"},
	    {"uid:0", P11G_PRINCIPAL_UID, "0"},
	    {"uid:4294967294", P11G_PRINCIPAL_UID, "4294967294"},
	};
	static const char *const bad[] = {
	    "alice",  "user:",    "group:",   "uid:",       "uid:-1",    "uid:01", "uid:4294967295",
	    "uid:1x", "user:a:b", "group: x", "User:alice", "user:a\tb", "grp:x",  "",
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(good); i++) {
		struct p11g_principal p;
		p11g_err err;
		if (p11g_principal_parse(good[i].s, &p, &err) != 0)
			fail_msg("%s: %s", good[i].s, err.msg);
		assert_int_equal(p.kind, good[i].kind);
		assert_string_equal(p.name, good[i].name);
		char *s = p11g_principal_to_string(&p);
		assert_string_equal(s, good[i].s);
		free(s);
		p11g_principal_clear(&p);
	}
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		struct p11g_principal p;
		p11g_err err = {0};
		if (p11g_principal_parse(bad[i], &p, &err) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_string_equal(err.code, P11G_E_BAD_REQUEST);
	}
	/* A user name longer than struct p11g_ident can hold could never match. */
	char longname[80] = "user:";
	memset(longname + 5, 'a', 64);
	struct p11g_principal p;
	p11g_err err;
	assert_int_equal(p11g_principal_parse(longname, &p, &err), -1);
	longname[5 + 63] = '\0';
	assert_int_equal(p11g_principal_parse(longname, &p, &err), 0);
	p11g_principal_clear(&p);
}

static void test_principal_match(void **state)
{
	char *groups[] = {"staff", "release-approvers"};
	struct p11g_ident alice = {
	    .uid = 1001, .gid = 100, .user = "alice", .groups = groups, .n_groups = 2};
	struct p11g_ident nobody = {.uid = 1001, .user = ""};
	static const struct {
		const char *principal;
		bool alice, nobody;
	} cases[] = {
	    {"user:alice", true, false},     {"user:bob", false, false},
	    {"uid:1001", true, true},        {"uid:1002", false, false},
	    {"group:staff", true, false},    {"group:release-approvers", true, false},
	    {"group:release", false, false}, {"group:alice", false, false},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(cases); i++) {
		struct p11g_principal p;
		p11g_err err;
		assert_int_equal(p11g_principal_parse(cases[i].principal, &p, &err), 0);
		if (p11g_principal_matches(&p, &alice) != cases[i].alice ||
		    p11g_principal_matches(&p, &nobody) != cases[i].nobody)
			fail_msg("%s", cases[i].principal);
		p11g_principal_clear(&p);
	}

	struct p11g_principal v[2];
	p11g_err err;
	assert_int_equal(p11g_principal_parse("user:bob", &v[0], &err), 0);
	assert_int_equal(p11g_principal_parse("group:staff", &v[1], &err), 0);
	struct p11g_principals ps = {v, 2}, none = {NULL, 0};
	assert_true(p11g_principals_match(&ps, &alice));
	assert_false(p11g_principals_match(&ps, &nobody));
	assert_false(p11g_principals_match(&none, &alice));
	p11g_principal_clear(&v[0]);
	p11g_principal_clear(&v[1]);
}

static void test_ident_json(void **state)
{
	char *groups[] = {"a", "b c"};
	struct p11g_ident id = {.uid = 42, .user = "alice", .groups = groups, .n_groups = 2}, back;
	json_t *j = p11g_ident_to_json(&id);

	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "uid")), 42);
	assert_int_equal(p11g_ident_from_json(j, &back), 0);
	assert_int_equal(back.uid, 42);
	assert_string_equal(back.user, "alice");
	assert_int_equal(back.n_groups, 2);
	assert_string_equal(back.groups[1], "b c");
	p11g_ident_clear(&back);

	/* Stored approval records carry more members; they are ignored. */
	json_object_set_new(j, "time", json_integer(1));
	assert_int_equal(p11g_ident_from_json(j, &back), 0);
	p11g_ident_clear(&back);

	json_object_set_new(j, "uid", json_integer(-1));
	assert_int_equal(p11g_ident_from_json(j, &back), -EINVAL);
	json_object_set_new(j, "uid", json_integer(1));
	json_object_set_new(j, "groups", json_pack("[i]", 1));
	assert_int_equal(p11g_ident_from_json(j, &back), -EINVAL);
	json_object_del(j, "groups");
	assert_int_equal(p11g_ident_from_json(j, &back), -EINVAL);
	json_decref(j);
}

static void test_pjson_positions(void **state)
{
	const char text[] = "{\n  \"a\": [1, -2, 3.5e1],\n\t\"é\": \"x\\u00e9\\ud83d\\ude00\",\n"
	                    "  \"b\": {\"c\": null, \"d\": true}\n}";
	struct pjson_value *v;
	struct pjson_error err;

	assert_int_equal(pjson_parse(text, strlen(text), &v, &err), 0);
	assert_int_equal(v->type, PJSON_OBJECT);
	assert_int_equal(v->u.obj.n, 3);
	const struct pjson_member *a = pjson_get(v, "a");
	assert_int_equal(a->line, 2);
	assert_int_equal(a->column, 3);
	assert_int_equal(a->value->line, 2);
	assert_int_equal(a->value->column, 8);
	assert_int_equal(a->value->u.arr.n, 3);
	assert_int_equal(a->value->u.arr.v[1]->u.i, -2);
	assert_int_equal(a->value->u.arr.v[1]->column, 12);
	assert_int_equal(a->value->u.arr.v[2]->type, PJSON_REAL);
	/* A tab is one column; é is one column though two bytes. */
	const struct pjson_member *e = pjson_get(v, "\xc3\xa9");
	assert_non_null(e);
	assert_int_equal(e->line, 3);
	assert_int_equal(e->column, 2);
	assert_int_equal(e->value->column, 7);
	assert_string_equal(e->value->u.str.s, "x\xc3\xa9\xf0\x9f\x98\x80");
	assert_int_equal(e->value->u.str.len, 7);
	const struct pjson_member *b = pjson_get(v, "b");
	assert_int_equal(pjson_get(b->value, "d")->value->u.b, true);
	assert_int_equal(pjson_get(b->value, "c")->value->type, PJSON_NULL);
	assert_null(pjson_get(v, "z"));
	pjson_free(v);
}

static void test_pjson_limits(void **state)
{
	struct pjson_value *v;
	struct pjson_error err;
	char buf[256];

	/* 64 levels are fine, 65 are not. */
	memset(buf, '[', 64);
	memset(buf + 64, ']', 64);
	assert_int_equal(pjson_parse(buf, 128, &v, &err), 0);
	pjson_free(v);
	memset(buf, '[', 65);
	memset(buf + 65, ']', 65);
	assert_int_equal(pjson_parse(buf, 130, &v, &err), -1);
	assert_string_equal(err.msg, "nesting deeper than 64");
	assert_int_equal(err.column, 65);

	const char *ints = "[9223372036854775807, -9223372036854775808, -0]";
	assert_int_equal(pjson_parse(ints, strlen(ints), &v, &err), 0);
	assert_true(v->u.arr.v[0]->u.i == INT64_MAX);
	assert_true(v->u.arr.v[1]->u.i == INT64_MIN);
	assert_int_equal(v->u.arr.v[2]->u.i, 0);
	pjson_free(v);

	static const struct {
		const char *text, *msg;
	} bad[] = {
	    {"9223372036854775808", "integer out of range"},
	    {"-9223372036854775809", "integer out of range"},
	    {"01", "bad number: leading zero"},
	    {"1.", "bad number: digits expected after '.'"},
	    {"1e", "bad number: digits expected in the exponent"},
	    {"-", "bad number"},
	    {"+1", "unexpected '+'"},
	    {"tru", "invalid literal (expected true, false or null)"},
	    {"\"\\u0000\"", "\\u0000 is not allowed in strings"},
	    {"\"\\ud83d\"", "unpaired surrogate \\ud83d"},
	    {"\"\\ude00\"", "unpaired surrogate \\ude00"},
	    {"\"\\u12g4\"", "bad \\u escape: expected 4 hex digits"},
	    {"\"\xed\xa0\x80\"", "invalid UTF-8 in string"},
	    {"\"\xf4\x90\x80\x80\"", "invalid UTF-8 in string"},
	    {"\"\xe2\x82\"", "invalid UTF-8 in string"},
	    {"\xef\xbb\xbf{}", "byte order mark is not allowed"},
	    {"{\"a\":1,}", "trailing comma"},
	    {"[1,]", "trailing comma"},
	    {"[1 2]", "expected ',' or ']'"},
	    {"{a:1}", "expected a member name in double quotes"},
	    {"{\"a\" 1}", "expected ':' after member name"},
	    {"\"abc", "unterminated string"},
	    {"[", "unexpected end of input"},
	    {"", "unexpected end of input"},
	    {"\xc3\xa9", "unexpected non-ASCII character"},
	};
	for (size_t i = 0; i < P11G_ARRAY_SIZE(bad); i++) {
		if (pjson_parse(bad[i].text, strlen(bad[i].text), &v, &err) != -1)
			fail_msg("accepted %s", bad[i].text);
		if (strcmp(err.msg, bad[i].msg) != 0)
			fail_msg("%s: got \"%s\", wanted \"%s\"", bad[i].text, err.msg, bad[i].msg);
	}

	/* Duplicates among many members are still found, at the second one. */
	size_t cap = 20 * 1000 + 64, len = 0;
	char *big = malloc(cap);
	assert_non_null(big);
	big[len++] = '{';
	for (int i = 0; i < 1000; i++)
		len += (size_t)snprintf(big + len, cap - len, "%s\"k%d\":%d", i ? "," : "", i, i);
	len += (size_t)snprintf(big + len, cap - len, ",\"k500\":0}");
	assert_int_equal(pjson_parse(big, len, &v, &err), -1);
	assert_true(strncmp(err.msg, "duplicate member \"k500\"", 23) == 0);
	big[len - 8] = 'j'; /* "k500" -> "j500" */
	assert_int_equal(pjson_parse(big, len, &v, &err), 0);
	assert_int_equal(v->u.obj.n, 1001);
	pjson_free(v);
	free(big);

	/* 1 MiB is the limit. */
	size_t max = PJSON_MAX_INPUT;
	char *huge = malloc(max + 1);
	assert_non_null(huge);
	memset(huge, ' ', max + 1);
	huge[0] = '0';
	assert_int_equal(pjson_parse(huge, max, &v, &err), 0);
	pjson_free(v);
	assert_int_equal(pjson_parse(huge, max + 1, &v, &err), -1);
	assert_int_equal(err.line, 0);
	free(huge);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_policies),
	    cmocka_unit_test(test_parse_buffer_errors),
	    cmocka_unit_test(test_long_messages),
	    cmocka_unit_test(test_no_texts),
	    cmocka_unit_test(test_examples),
	    cmocka_unit_test(test_match),
	    cmocka_unit_test(test_empty_label_rule),
	    cmocka_unit_test(test_request_judging_agrees_with_match),
	    cmocka_unit_test(test_default_allow),
	    cmocka_unit_test(test_digest),
	    cmocka_unit_test(test_issuers_and_claims),
	    cmocka_unit_test(test_notifiers),
	    cmocka_unit_test(test_rule_round_trip),
	    cmocka_unit_test(test_rule_from_json_strict),
	    cmocka_unit_test(test_duration),
	    cmocka_unit_test(test_principal_parse),
	    cmocka_unit_test(test_principal_match),
	    cmocka_unit_test(test_ident_json),
	    cmocka_unit_test(test_pjson_positions),
	    cmocka_unit_test(test_pjson_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
