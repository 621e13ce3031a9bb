/* Reading a policy from its files: approvald's side of the policy language (policy/ takes bytes).
 */
#ifndef P11GATE_POLICY_LOAD_H
#define P11GATE_POLICY_LOAD_H

#include "policy/policy.h"

/*
 * Loads one file, or every *.json in a directory in name order (a directory
 * with none is an empty deny-all policy), each regular and at most
 * P11G_POLICY_TEXT_MAX bytes.  On any error returns -1 with err (bad_request
 * "file:line:column: message", or "file: message" for one that cannot be
 * read; internal "out of memory") and leaves *ret untouched.  The errors of
 * the texts are p11g_policy_builder_add's.
 */
int p11g_policy_load(const char *path, struct p11g_policy **ret, p11g_err *err);

#endif
