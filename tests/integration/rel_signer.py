"""A signing client for the reliability tests: THREADS threads, each signing ATTEMPTS distinct
digests through a PKCS#11 module (p11gate.so or p11-kit-client.so), logging every signature it
received as one JSON line {"digest": "sha256:<hex>", "signature": "<hex>"} to LOG (appended,
flushed per line, so a test can read what it got even if this process is killed).
Prints {"ok": n, "refused": n, "other": n} at the end.
Usage: python3 rel_signer.py JSON-ARGS
  args: module, token, pin, label, threads, attempts, log, tag (makes digests unique per run),
        pause (seconds between attempts, default 0)"""
import hashlib
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pk11  # noqa: E402


def main():
    a = json.loads(sys.argv[1])
    m = pk11.Module(a["module"])
    # SoftHSMv2 started by many processes at once sometimes lists the token's slot without
    # the token, or fails C_Login (its file store is being read by another process): start
    # again (SoftHSMv2 directly does the same; see tests/integration/test_reliability.py)
    for attempt in range(20):
        rv = m.init()
        assert rv == 0, pk11.rvname(rv)
        try:
            first = m.open(a["token"], a.get("pin"))
            break
        except (SystemExit, AssertionError):  # no token, or C_Login's CKR_GENERAL_ERROR
            m.C_Finalize(None)
            time.sleep(0.1)
    else:
        raise SystemExit("no token %s after 20 starts" % a["token"])
    counts = {"ok": 0, "refused": 0, "other": 0}
    lock = threading.Lock()
    log = open(a["log"], "a")

    def worker(n):
        # (the same SoftHSMv2 hiccup can hide the token or the key from one session)
        for attempt in range(50):
            try:
                h = m.open(a["token"])
                key = m.find(h, pk11.CKO_PRIVATE_KEY, a["label"])
                break
            except (SystemExit, AssertionError):
                time.sleep(0.05)
        else:
            with lock:
                counts["other"] += a["attempts"]
            return
        for i in range(a["attempts"]):
            digest = hashlib.sha256(("%s/%d/%d/%d" % (a["tag"], os.getpid(), n, i)).encode()).digest()
            steps, sig = m.sign(h, key, "CKM_ECDSA", digest)
            with lock:
                if sig:
                    counts["ok"] += 1
                    log.write(json.dumps({"digest": "sha256:" + digest.hex(),
                                          "signature": sig}) + "\n")
                    log.flush()
                elif steps[-1][1] == "CKR_FUNCTION_REJECTED":
                    counts["refused"] += 1
                else:
                    counts["other"] += 1
                    # which step, for the test's message (p11gate's own line precedes it)
                    print("other: %s %s" % tuple(steps[-1]), file=sys.stderr, flush=True)
            if a.get("pause"):
                time.sleep(a["pause"])
        m.C_CloseSession(h)

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(a["threads"])]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    m.C_CloseSession(first)
    m.C_Finalize(None)
    log.close()
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
