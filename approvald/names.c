/* Name-service lookups (users, groups) for approvald's identities and policy (issue #17). */
