/* Where a client finds the pipeline's ID token it passes on with a request (issue 19): a file
 * the CI wrote, or an environment variable the CI set (GitLab's id_tokens).  The token is a
 * credential: it is never printed, and wiped when freed (p11g_id_token_free). */
#ifndef P11GATE_IDTOKEN_SRC_H
#define P11GATE_IDTOKEN_SRC_H

#include "p11gate/common.h"

#define P11G_ID_TOKEN_MAX 16384 /* bytes, as approvald takes them */

/* The token in file path ("-": standard input) or in the environment variable env (when path
 * is NULL), surrounding white space dropped: a malloc'd string, or NULL with err bad_request
 * naming where it looked (unreadable, empty, longer than 16 KiB, not text). */
char *p11g_id_token_load(const char *path, const char *env, p11g_err *err);
/* In a GitHub Actions job: the job's ID token for audience, asked of GitHub's token service by
 * approvald-fetch ($P11GATE_FETCH, else beside the running program when beside_self, else in
 * P11GATE_LIBEXECDIR); at most 30 s.  NULL with err bad_request saying why (not in such a job,
 * the service's refusal). */
char *p11g_id_token_github(const char *audience, bool beside_self, p11g_err *err);
void p11g_id_token_free(char *tok);

#endif
