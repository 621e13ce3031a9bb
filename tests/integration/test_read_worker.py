"""Listing pages are read away from approvald's event loop (issue 18, item 1): `list` and `audit`
pages are read by a child process of approvald ("approvald-read", at SCHED_IDLE) on its own
read-only view of the store, while the loop goes on serving `use` and `status`.  The child
decides nothing the policy says: what a page shows follows the operations' rule snapshots, as
before, and the right to read the audit is checked by approvald with the policy in force.
These tests stop and kill that child to see that a request waiting for it is answered (never
left hanging, never answered with another's page), that a new child takes over, and that one
uid cannot queue more than four pages."""

import os
import signal
import time

import p11g
from p11g import U, assert_refused, assert_reply_ok

PROD = "pkcs11:token=prod;object=%s"
PER_UID = 4  # read_worker.h P11G_READ_PER_UID


def readers(d):
    """pids of approvald's reading processes (children named approvald-read)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        rest = st[st.rindex(")") + 2:].split()
        if int(rest[1]) == d.proc.pid and comm == "approvald-read":
            out.append(int(p))
    return out


def one_reader(d, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        r = readers(d)
        if len(r) == 1:
            return r[0]
        assert time.monotonic() < deadline, "approvald has %d reading processes: %r" % (len(r), r)
        time.sleep(0.05)


def test_pages_are_read_by_a_child_at_low_priority(daemon):
    op = daemon.request("orderer", PROD % "rw1")
    assert op in daemon.list_ids("--all")
    pid = one_reader(daemon)
    # the idle class: a signer or approvald's loop that wakes takes its CPU as soon as the
    # kernel lets it (at nice 19 the reader could keep the CPU for its slice)
    assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    rep = daemon.call({"verb": "audit", "limit": 1000})
    recs = assert_reply_ok(rep)["records"]
    assert any(r.get("event") == "created" and r.get("op") == op for r in recs), recs
    # the same child: one for the daemon's life
    assert readers(daemon) == [pid]
    # what a page shows is still the caller's share: an outsider sees nothing of it
    assert op not in daemon.list_ids("--all", user="mallory")
    assert op in daemon.list_ids(user="alice")


def test_the_right_to_read_the_audit_follows_a_reloaded_policy(daemon):
    rep = daemon.call({"verb": "audit", "limit": 5}, user=U("alice"))
    assert_reply_ok(rep)
    pid = one_reader(daemon)
    # alice approves under no rule of the new policy: the reading process, started
    # under the old one, is not asked
    pol = p11g.default_policy()
    for r in pol["rules"]:
        r.pop("approvers", None)
        r.pop("auto_approve", None)
        r.pop("quorum", None)
        r["approvals"] = 0
    daemon.write_policy("10-test.json", pol)
    daemon.hup()
    deadline = time.monotonic() + 5
    while True:
        rep = daemon.call({"verb": "audit", "limit": 5}, user=U("alice"))
        if not rep.get("ok"):
            break
        assert time.monotonic() < deadline, "the reload did not take effect"
        time.sleep(0.1)
    assert_refused(rep, "forbidden")
    assert readers(daemon) == [pid]


def _send_list(d, user):
    """A connection of user with one `list --all` request sent (not read)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child keeps the connection as user and reports the reply
        try:
            os.close(r)
            p11g.drop_to(U(user))
            with p11g.Conn(d.sock, 60) as c:
                c.send({"verb": "list", "all": True, "v": 1})
                os.write(w, b"sent\n")
                rep = c.recv()
            import json
            os.write(w, json.dumps(rep).encode() + b"\n")
        finally:
            os._exit(0)
    os.close(w)
    f = os.fdopen(r)
    assert f.readline() == "sent\n"
    return pid, f


def _reply(child):
    import json
    pid, f = child
    line = f.readline()
    f.close()
    os.waitpid(pid, 0)
    assert line, "no reply"
    return json.loads(line)


def test_a_request_waiting_for_a_killed_reader_is_answered_and_a_new_one_takes_over(daemon):
    op = daemon.request("orderer", PROD % "rw2")
    assert op in daemon.list_ids("--all")
    pid = one_reader(daemon)
    os.kill(pid, signal.SIGSTOP)
    try:
        waiting = _send_list(daemon, "alice")
        time.sleep(0.3)
        # signing-side requests do not wait for the stopped reader
        t0 = time.monotonic()
        assert_reply_ok(daemon.call({"verb": "status"}))
        assert time.monotonic() - t0 < 2
    finally:
        os.kill(pid, signal.SIGKILL)
    rep = _reply(waiting)
    assert_refused(rep, "internal")
    assert "listing process ended" in rep["error"]["message"], rep
    # the next page is read by a new child
    assert op in daemon.list_ids("--all")
    new = one_reader(daemon)
    assert new != pid
    assert "listing process" in daemon.stderr()


def test_one_uid_queues_at_most_four_pages(daemon):
    daemon.request("orderer", PROD % "rw3")
    daemon.list_ids("--all")
    pid = one_reader(daemon)
    os.kill(pid, signal.SIGSTOP)
    waiting = []
    try:
        waiting = [_send_list(daemon, "alice") for _ in range(PER_UID)]
        time.sleep(0.3)
        rep = daemon.call({"verb": "list", "all": True}, user=U("alice"))
        assert_refused(rep, "limit_exceeded")
        # another uid still gets its turn in the queue; root's page waits like the others
        other = _send_list(daemon, "bob")
    finally:
        os.kill(pid, signal.SIGCONT)
    for w in waiting + [other]:
        rep = _reply(w)
        assert_reply_ok(rep)
        assert isinstance(rep["result"]["operations"], list)
    # and the uid may list again
    assert_reply_ok(daemon.call({"verb": "list", "all": True}, user=U("alice")))


def test_pages_of_clients_that_hung_up_do_not_hold_their_uid_back(daemon):
    daemon.request("orderer", PROD % "rw4")
    daemon.list_ids("--all")
    pid = one_reader(daemon)
    os.kill(pid, signal.SIGSTOP)
    try:
        gone = [_send_list(daemon, "alice") for _ in range(PER_UID)]
        time.sleep(0.3)
        for child_pid, f in gone:  # they hang up while their pages wait
            os.kill(child_pid, signal.SIGKILL)
            os.waitpid(child_pid, 0)
            f.close()
        time.sleep(0.3)
    finally:
        os.kill(pid, signal.SIGCONT)
    # their pages were dropped as their connections closed: alice lists at once
    assert_reply_ok(daemon.call({"verb": "list", "all": True}, user=U("alice")))
    assert readers(daemon) == [pid]
