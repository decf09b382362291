"""Child process that runs math-verify for `cdra.rewards.grading`.

Run as a script (``python _grade_worker.py``), never imported by the package. Protocol: one
JSON object per line. On start it writes ``{"ready": true}`` (or ``{"ready": false, "error":
...}``); then for each request ``{"id": n, "pred": str, "gold": str}`` it writes ``{"id": n,
"ok": true, "result": bool}`` or ``{"id": n, "ok": false, "error": str}``. It exits when its
stdin closes or when its parent dies (PR_SET_PDEATHSIG on Linux). The parent enforces the time
limit by killing this process, so math-verify's own signal-based timeouts are disabled here.
"""

import json
import os
import sys

# This file's directory holds modules (grading.py, steps.py, ...) that must not shadow anything.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _make_grader():
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import parse, verify

    def _parse(s: str):
        # Wrapping in \boxed{} lets LaTeX without $ delimiters parse ("\frac{1}{2}", "x^2+1");
        # unbalanced input falls back to the raw string.
        out = parse("\\boxed{" + s + "}", parsing_timeout=None)
        if not out:
            out = parse(s, parsing_timeout=None)
        return out

    def grade(pred: str, gold: str) -> bool:
        g = _parse(gold)
        p = _parse(pred)
        if not g or not p:
            return False
        return bool(verify(g, p, timeout_seconds=None))

    return grade


def main() -> int:
    # Keep the protocol channel private: anything printed by libraries goes to stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    _set_parent_death_signal()

    def send(obj) -> None:
        out.write(json.dumps(obj).encode("utf-8") + b"\n")

    try:
        grade = _make_grader()
        grade("1", "1")  # warm up lazy regex compilation and the LaTeX parser
    except BaseException as e:  # noqa: BLE001 - report anything, including ImportError
        send({"ready": False, "error": f"{type(e).__name__}: {e}"[:1000]})
        return 1
    send({"ready": True})

    for line in sys.stdin.buffer:
        try:
            req = json.loads(line)
        except ValueError as e:
            send({"id": None, "ok": False, "error": f"bad request: {e}"[:1000]})
            continue
        rid = req.get("id")
        try:
            res = grade(str(req["pred"]), str(req["gold"]))
            send({"id": rid, "ok": True, "result": bool(res)})
        except BaseException as e:  # noqa: BLE001 - RecursionError etc. are grading errors
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            try:
                msg = f"{type(e).__name__}: {e}"[:1000]
            except Exception:  # str() of a sympy object can itself fail
                msg = type(e).__name__
            send({"id": rid, "ok": False, "error": msg})
    return 0


if __name__ == "__main__":
    sys.exit(main())
