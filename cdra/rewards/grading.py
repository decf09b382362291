"""Answer grading: a cheap in-process fast path, then math-verify under a hard time limit.

math-verify's own timeout uses ``signal.alarm`` and therefore only works in the main thread,
and it cannot interrupt C-level work (a regex backtracking on ``"{" * 5000``, big-integer
arithmetic for ``10^{10^{10^{10}}}``). So the symbolic check runs in a small pool of persistent
child processes (`_grade_worker.py`, started with ``subprocess``, so nothing of the caller's
``__main__`` is re-imported). A call waits for its answer at most ``timeout_s`` seconds; on
expiry the child is killed (SIGKILL) and replaced, and the call returns False. This works from
any thread. Model output is never ``eval``-ed: it only reaches math-verify's parser, and only
in the child.

Environment knobs: ``CDRA_GRADER_WORKERS`` (pool size, default min(4, CPUs)) and
``CDRA_GRADER_STARTUP_TIMEOUT`` (seconds a fresh child may take to import math-verify,
default 120; not counted against a call's ``timeout_s``).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import json
import logging
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time

from cdra.rewards.extraction import normalize_math_answer, normalize_number

__all__ = [
    "normalize_number",
    "grade_answer",
    "fast_grade",
    "GradingStats",
    "grading_stats",
    "reset_grading_stats",
    "shutdown_grader",
]

logger = logging.getLogger(__name__)

_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_grade_worker.py")
_MAX_STARTUP_FAILURES = 3


# -------------------------------------------------------------------------- stats


@dataclasses.dataclass
class GradingStats:
    """Counters over `grade_answer` calls in this process.

    calls: all calls; fast_path: decided without math-verify; math_verify: sent to a child;
    errors: the grader raised / crashed / could not start (the call returned False);
    timeouts: the call hit its time limit (returned False, child restarted).
    """

    calls: int = 0
    fast_path: int = 0
    math_verify: int = 0
    errors: int = 0
    timeouts: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


_stats = GradingStats()
_stats_lock = threading.Lock()


def _count(**inc: int) -> None:
    with _stats_lock:
        for k, v in inc.items():
            setattr(_stats, k, getattr(_stats, k) + v)


def grading_stats() -> GradingStats:
    """A snapshot (copy) of the process-wide grading counters."""
    with _stats_lock:
        return dataclasses.replace(_stats)


def reset_grading_stats() -> None:
    with _stats_lock:
        for f in dataclasses.fields(GradingStats):
            setattr(_stats, f.name, 0)


# ---------------------------------------------------------------------- fast path

_MCQ_RE = re.compile(r"\(?\s*([A-Ja-j])\s*\)?[.:]?")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm)\s*\{([^{}]*)\}")


def _mcq_letter(s: str, upper_only: bool = False) -> str | None:
    t = _TEXT_WRAP_RE.sub(lambda m: m.group(1), s.strip().replace("$", "")).strip()
    m = _MCQ_RE.fullmatch(t)
    if m is None or (upper_only and not m.group(1).isupper()):
        return None
    return m.group(1).upper()


def fast_grade(predicted: str, gold: str) -> bool | None:
    """Cheap decision without math-verify: True / False when decided, None when undecided.

    - empty prediction or gold: False;
    - gold is an option letter A-J (capital, optionally parenthesized): the prediction's
      letter compared case-insensitively, nothing else (decided). A lower-case gold such as
      "i" or "e" is math, not an option;
    - both plain numbers (`normalize_number`): equal -> True; both integers and different ->
      False; differing decimals stay undecided (math-verify rounds);
    - equal after `normalize_math_answer`: True.
    """
    p = (predicted or "").strip()
    g = (gold or "").strip()
    if not p or not g:
        return False
    gl = _mcq_letter(g, upper_only=True)
    if gl is not None:
        return _mcq_letter(p) == gl
    np_, ng = normalize_number(p), normalize_number(g)
    if np_ is not None and ng is not None:
        if np_ == ng:
            return True
        if "." not in np_ and "." not in ng:
            return False
    if p == g or normalize_math_answer(p) == normalize_math_answer(g):
        return True
    return None


# --------------------------------------------------------------- worker process


class _WorkerError(Exception):
    """The child is unusable (dead, unreachable, failed to start)."""


class _GradeError(Exception):
    """math-verify raised inside a healthy child."""


class _Worker:
    """One child process running `_grade_worker.py`, talking JSON lines over pipes."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, _WORKER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._fd = self.proc.stdout.fileno()
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._buf = b""
        self.ready = False
        self._next_id = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read_line(self, deadline: float) -> bytes | None:
        """Next line from the child; None when `deadline` passes; _WorkerError on EOF."""
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # poll, not select: select cannot watch fds >= 1024 (common in big processes).
            if not self._poller.poll(max(1, int(left * 1000 + 0.999))):
                continue  # loop re-checks the deadline
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise _WorkerError(f"grader child exited (rc={self.proc.poll()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def wait_ready(self, timeout_s: float) -> None:
        if self.ready:
            return
        line = self._read_line(time.monotonic() + timeout_s)
        if line is None:
            raise _WorkerError(f"grader child not ready after {timeout_s:.0f}s")
        msg = json.loads(line)
        if not msg.get("ready"):
            raise _WorkerError(f"grader child failed to start: {msg.get('error')}")
        self.ready = True

    def grade(self, pred: str, gold: str, timeout_s: float) -> bool | None:
        """True/False from math-verify; None on timeout; _GradeError when math-verify raised;
        _WorkerError when the child is gone."""
        self._next_id += 1
        rid = self._next_id
        req = json.dumps({"id": rid, "pred": pred, "gold": gold}).encode("utf-8") + b"\n"
        try:
            self.proc.stdin.write(req)
            self.proc.stdin.flush()
        except OSError as e:
            raise _WorkerError(f"grader child unreachable: {e}") from e
        line = self._read_line(time.monotonic() + timeout_s)
        if line is None:
            return None
        msg = json.loads(line)
        if msg.get("id") != rid:
            raise _WorkerError(f"grader protocol error: expected id {rid}, got {msg.get('id')}")
        if not msg.get("ok"):
            raise _GradeError(msg.get("error") or "grader error")
        return bool(msg.get("result"))

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class _Spawner:
    """Starts children from one long-lived daemon thread.

    The child's PR_SET_PDEATHSIG fires when the *thread* that started it exits, so children
    started directly from short-lived caller threads would be killed under their pool.
    """

    def __init__(self) -> None:
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="cdra-grader-spawner", daemon=True).start()

    def _run(self) -> None:
        while True:
            fut = self._q.get()
            try:
                fut.set_result(_Worker())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def spawn(self) -> _Worker:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._q.put(fut)
        return fut.result()


_spawner: _Spawner | None = None
_spawner_pid = -1
_spawner_lock = threading.Lock()


def _spawn_worker() -> _Worker:
    """Start a child from the process-wide spawner thread (one per process, lives forever)."""
    global _spawner, _spawner_pid
    with _spawner_lock:
        if _spawner is None or _spawner_pid != os.getpid():
            _spawner, _spawner_pid = _Spawner(), os.getpid()
        sp = _spawner
    return sp.spawn()


class _Pool:
    """Lazily grown pool of `_Worker`s; a killed worker is replaced right away so that its
    successor imports math-verify while the caller moves on."""

    def __init__(self, max_workers: int, startup_timeout_s: float) -> None:
        self.pid = os.getpid()
        self.max_workers = max(1, max_workers)
        self.startup_timeout_s = startup_timeout_s
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._n = 0
        self._startup_failures = 0
        self.disabled_reason: str | None = None
        self._closed = False

    def acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise _WorkerError("grader pool is shut down")
                while self._idle:
                    w = self._idle.pop()
                    if w.alive():
                        return w
                    # Died while idle (killed from outside): not this call's fault;
                    # replace it silently.
                    w.kill()
                    self._n -= 1
                if self._n < self.max_workers:
                    self._n += 1
                    break
                self._cond.wait()
        try:
            return _spawn_worker()
        except BaseException:
            with self._cond:
                self._n -= 1
                self._cond.notify()
            raise

    def release(self, w: _Worker, broken: bool) -> None:
        replacement = None
        if self._closed:
            w.kill()
            with self._cond:
                self._n -= 1
                self._cond.notify()
            return
        if broken:
            w.kill()
            if self.disabled_reason is None:
                try:
                    replacement = _spawn_worker()
                except OSError as e:
                    logger.warning("could not restart grader child: %s", e)
        with self._cond:
            if broken:
                if replacement is not None:
                    self._idle.append(replacement)
                else:
                    self._n -= 1
            else:
                self._idle.append(w)
            self._cond.notify()

    def note_startup(self, ok: bool, err: str = "") -> None:
        with self._cond:
            if ok:
                self._startup_failures = 0
                return
            self._startup_failures += 1
            if self._startup_failures >= _MAX_STARTUP_FAILURES and self.disabled_reason is None:
                self.disabled_reason = err
                logger.error(
                    "math-verify grader disabled after %d failed starts: %s; "
                    "non-trivial answers will grade False (counted as errors)",
                    self._startup_failures,
                    err,
                )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for w in idle:
            w.kill()


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid() or _pool._closed:
            # A forked child must not share its parent's pipes: start its own pool.
            n = int(os.environ.get("CDRA_GRADER_WORKERS", min(4, os.cpu_count() or 1)))
            st = float(os.environ.get("CDRA_GRADER_STARTUP_TIMEOUT", 120))
            _pool = _Pool(n, st)
        return _pool


def shutdown_grader() -> None:
    """Kill the grader children (idle ones now; busy ones when their call ends). A later
    `grade_answer` starts a fresh pool."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None and pool.pid == os.getpid():
        pool.close()


atexit.register(shutdown_grader)


def _math_verify_grade(predicted: str, gold: str, timeout_s: float) -> bool:
    pool = _get_pool()
    if pool.disabled_reason is not None:
        _count(errors=1)
        return False
    try:
        w = pool.acquire()
    except (_WorkerError, OSError) as e:
        logger.warning("grader unavailable: %s", e)
        _count(errors=1)
        return False
    broken = True
    try:
        if not w.ready:
            try:
                w.wait_ready(pool.startup_timeout_s)
            except (_WorkerError, ValueError) as e:
                pool.note_startup(False, str(e))
                logger.warning("%s", e)
                _count(errors=1)
                return False
            pool.note_startup(True)
        try:
            res = w.grade(predicted, gold, timeout_s)
        except _GradeError as e:
            broken = False  # the child answered; keep it
            logger.debug("math-verify error: %s", e)
            _count(errors=1)
            return False
        except (_WorkerError, ValueError) as e:
            logger.warning("grader child failed: %s", e)
            _count(errors=1)
            return False
        if res is None:
            _count(timeouts=1)
            return False
        broken = False
        return res
    finally:
        pool.release(w, broken)


# -------------------------------------------------------------------------- API


def grade_answer(
    predicted: str, gold: str, timeout_s: float = 5.0, *, fast: bool = False
) -> bool:
    """Whether `predicted` is the same answer as `gold`.

    The fast path (`fast_grade`) decides plain numbers, option letters and identical
    normalized strings in-process. Otherwise math-verify (``parse`` then ``verify(gold,
    pred)``) runs in a child process and must answer within `timeout_s` seconds; a timeout or
    any grader error returns False and is counted in `grading_stats()`. ``fast=True`` skips
    math-verify (undecided -> False). Safe to call from any thread.
    """
    _count(calls=1)
    if predicted is None or gold is None:
        _count(fast_path=1)
        return False
    predicted, gold = str(predicted), str(gold)
    decided = fast_grade(predicted, gold)
    if decided is not None:
        _count(fast_path=1)
        return decided
    if fast:
        _count(fast_path=1)
        return False
    _count(math_verify=1)
    return _math_verify_grade(predicted, gold, timeout_s)
