/* What a rule decides about people: who may order, approve and revoke; whether a quorum is met. */
#include "policy/policy.h"
#include "p11gate/mech.h"

bool p11g_rule_may_order(const struct p11g_rule *r, const struct p11g_ident *id)
{
	return r && p11g_principals_match(&r->orderers, id);
}

bool p11g_rule_may_approve(const struct p11g_rule *r, const struct p11g_ident *id)
{
	if (!r)
		return false;
	for (size_t i = 0; i < r->n_quorum; i++)
		if (r->quorum[i].count > 0 && p11g_principals_match(&r->quorum[i].from, id))
			return true;
	return false;
}

bool p11g_rule_is_admin(const struct p11g_rule *r, const struct p11g_ident *id)
{
	return r && p11g_principals_match(&r->admins, id);
}

bool p11g_rule_needs_approval(const struct p11g_rule *r)
{
	for (size_t i = 0; i < r->n_quorum; i++)
		if (r->quorum[i].count > 0)
			return true;
	return false;
}

bool p11g_rule_auto_approves(const struct p11g_rule *r, const struct p11g_ident *orderer)
{
	if (!r)
		return false;
	return !p11g_rule_needs_approval(r) || p11g_principals_match(&r->auto_approve, orderer);
}

/* Unknown mechanisms are treated like raw ones: p11gate cannot say which
 * digest they sign, so only a rule that allows raw use lets them through. */
bool p11g_rule_allows_mechanism(const struct p11g_rule *r, CK_MECHANISM_TYPE mech)
{
	const struct p11g_mech_info *mi = p11g_mech_by_type(mech);
	bool raw = !mi || mi->family == P11G_MECH_RAW;

	if (!r)
		return false;
	if (raw && !r->allow_raw)
		return false;
	if (r->n_mechanisms == 0)
		return true;
	for (size_t i = 0; i < r->n_mechanisms; i++)
		if (r->mechanisms[i] == mech)
			return true;
	return false;
}

/*
 * Bipartite matching of people to clauses, where a clause of count N has N
 * seats.  Seats are not materialised: a clause with a free seat takes a
 * person directly, a full one can take them if one of its occupants moves to
 * another clause (an augmenting path).
 */
struct matching {
	size_t n_people, n_clauses;
	const bool *eligible;  /* [person * n_clauses + clause] */
	const unsigned *count; /* seats per clause */
	size_t *assigned;      /* clause of each person, or SIZE_MAX */
	unsigned *filled;      /* seats taken per clause */
	bool *visited;         /* clauses seen in this search */
};

static bool augment(struct matching *m, size_t person)
{
	for (size_t c = 0; c < m->n_clauses; c++) {
		if (!m->eligible[person * m->n_clauses + c] || m->visited[c])
			continue;
		m->visited[c] = true;
		if (m->filled[c] < m->count[c]) {
			m->assigned[person] = c;
			m->filled[c]++;
			return true;
		}
		for (size_t q = 0; q < m->n_people; q++) {
			if (m->assigned[q] != c)
				continue;
			m->assigned[q] = SIZE_MAX;
			if (augment(m, q)) {
				m->assigned[person] = c;
				return true;
			}
			m->assigned[q] = c;
		}
	}
	return false;
}

static void append(char *buf, size_t size, size_t *len, const char *s)
{
	size_t n = strlen(s);
	if (*len >= size)
		return;
	if (n > size - 1 - *len) {
		n = size - 1 - *len;
	}
	memcpy(buf + *len, s, n);
	*len += n;
	buf[*len] = '\0';
}

/* Clauses from which a seat can be freed for clause c by moving people along
 * (an occupant of d who also fits c can move there, and so on): a new person
 * who fits any of them completes one more seat of c. */
static void reachable(const struct matching *m, size_t c, bool *in)
{
	bool grew = true;

	memset(in, 0, m->n_clauses * sizeof(*in));
	in[c] = true;
	while (grew) {
		grew = false;
		for (size_t q = 0; q < m->n_people; q++) {
			size_t d = m->assigned[q];
			if (d == SIZE_MAX || in[d])
				continue;
			for (size_t e = 0; e < m->n_clauses; e++) {
				if (in[e] && m->eligible[q * m->n_clauses + e]) {
					in[d] = true;
					grew = true;
					break;
				}
			}
		}
	}
}

/* "needs 1 more approval from group:a and 2 more approvals from user:b or
 * group:c": one part per unmet clause, naming everyone who could fill it. */
static void describe_missing(const struct p11g_rule *r, const struct matching *m, bool *in,
                             char *out, size_t size)
{
	size_t len = 0, n_unmet = 0, k = 0;
	char num[64];

	if (!out || size == 0)
		return;
	out[0] = '\0';
	for (size_t c = 0; c < r->n_quorum; c++)
		n_unmet += m->filled[c] < m->count[c];
	append(out, size, &len, "needs ");
	for (size_t c = 0; c < r->n_quorum; c++) {
		unsigned miss = m->count[c] - m->filled[c];
		char **named = NULL;
		size_t n_named = 0, cap = 0;

		if (m->filled[c] >= m->count[c])
			continue;
		if (k > 0)
			append(out, size, &len, k + 1 == n_unmet ? " and " : ", ");
		k++;
		snprintf(num, sizeof(num), "%u more approval%s from ", miss, miss == 1 ? "" : "s");
		append(out, size, &len, num);
		reachable(m, c, in);
		/* The clause's own principals first, then those of clauses that can
		 * hand a person over, each name once. */
		for (size_t pass = 0; pass < 2; pass++) {
			for (size_t d = 0; d < r->n_quorum; d++) {
				if ((pass == 0) != (d == c) || !in[d])
					continue;
				const struct p11g_principals *ps = &r->quorum[d].from;
				for (size_t i = 0; i < ps->n; i++) {
					char *s = p11g_principal_to_string(&ps->v[i]);
					bool dup = !s;
					for (size_t j = 0; s && j < n_named; j++)
						dup |= strcmp(named[j], s) == 0;
					if (!dup && n_named == cap) {
						size_t ncap = cap ? cap * 2 : 8;
						char **v = realloc(named, ncap * sizeof(*v));
						if (v) {
							named = v;
							cap = ncap;
						} else {
							dup = true;
						}
					}
					if (dup) {
						free(s);
						continue;
					}
					named[n_named++] = s;
				}
			}
		}
		for (size_t i = 0; i < n_named; i++) {
			if (i > 0)
				append(out, size, &len, i + 1 == n_named ? " or " : ", ");
			append(out, size, &len, named[i]);
			free(named[i]);
		}
		free(named);
	}
}

bool p11g_rule_quorum_met(const struct p11g_rule *r, const struct p11g_ident *approvers,
                          size_t n_approvers, uid_t orderer, char *missing, size_t missing_size)
{
	size_t nc = r ? r->n_quorum : 0, np = 0;
	uid_t *uids = NULL;
	bool *eligible = NULL, *visited = NULL;
	size_t *assigned = NULL;
	unsigned *filled = NULL, *count = NULL;
	bool met = false;

	if (missing && missing_size)
		missing[0] = '\0';
	if (!r)
		return false;
	if (nc == 0)
		return true;

	/* One entry per distinct uid other than the orderer; a person recorded
	 * twice is eligible wherever any of their records is. */
	uids = calloc(n_approvers ? n_approvers : 1, sizeof(*uids));
	eligible = calloc((n_approvers ? n_approvers : 1) * nc, sizeof(*eligible));
	visited = calloc(nc, sizeof(*visited));
	assigned = calloc(n_approvers ? n_approvers : 1, sizeof(*assigned));
	filled = calloc(nc, sizeof(*filled));
	count = calloc(nc, sizeof(*count));
	if (!uids || !eligible || !visited || !assigned || !filled || !count) {
		if (missing && missing_size)
			snprintf(missing, missing_size,
			         "cannot evaluate the quorum: out of memory");
		goto out;
	}
	for (size_t i = 0; i < n_approvers; i++) {
		size_t p;
		if (approvers[i].uid == orderer)
			continue;
		for (p = 0; p < np; p++)
			if (uids[p] == approvers[i].uid)
				break;
		if (p == np)
			uids[np++] = approvers[i].uid;
		for (size_t c = 0; c < nc; c++)
			if (p11g_principals_match(&r->quorum[c].from, &approvers[i]))
				eligible[p * nc + c] = true;
	}
	for (size_t c = 0; c < nc; c++)
		count[c] = r->quorum[c].count;

	struct matching m = {
	    .n_people = np,
	    .n_clauses = nc,
	    .eligible = eligible,
	    .count = count,
	    .assigned = assigned,
	    .filled = filled,
	    .visited = visited,
	};
	for (size_t p = 0; p < np; p++)
		assigned[p] = SIZE_MAX;
	for (size_t p = 0; p < np; p++) {
		memset(visited, 0, nc * sizeof(*visited));
		augment(&m, p);
	}
	met = true;
	for (size_t c = 0; c < nc; c++)
		if (filled[c] < count[c])
			met = false;
	if (!met)
		describe_missing(r, &m, visited, missing, missing_size);
out:
	free(uids);
	free(eligible);
	free(visited);
	free(assigned);
	free(filled);
	free(count);
	return met;
}
