"""Run corpus work in forked processes, and report its progress.

``fork_map`` runs one function over a few tasks, each in a child forked from this process (so a
child sees everything this process built: the vocabulary, lookup tables, monkeypatched
functions), and returns their results in order. It forks with ``os.fork`` rather than through
``multiprocessing``, so it works inside a daemonic process too (the training run's background
encoder is one), and waits only for its own children. A child's exception is raised again here,
once every other child has been stopped; a child killed by a signal (the out-of-memory killer)
is an error naming it. Results travel as pickles in files under the caller's work directory.

``Progress`` counts bytes and words as they are read (in a shared memory page, one slot per
child) and logs, at INFO and every ``PROGRESS_SECONDS``, how much of the corpus is read, the
words per second and the time left.
"""

from __future__ import annotations

import logging
import mmap
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["PROGRESS_SECONDS", "Progress", "fork_map", "usable_cpus"]

log = logging.getLogger("ns_plugins.data")

PROGRESS_SECONDS = 5.0


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"


def _die_with_parent() -> None:
    """Linux: have the kernel end this child when the parent dies (kill -9) instead of leaving
    it working for nobody."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_child(fn, task, out: Path) -> int:
    code = 0
    try:
        result = (True, fn(task))
    except BaseException as err:  # noqa: BLE001 - handed to the parent, which raises it
        result, code = (False, err), 1
    try:
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
        data = pickle.dumps((False, RuntimeError(f"{type(result[1]).__name__}: {result[1]}")))
    part = out.with_name(out.name + ".part")
    with open(part, "wb") as f:
        f.write(data)
    os.replace(part, out)
    return code


def _stop(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def fork_map(
    fn: Callable,
    tasks: Sequence,
    workdir,
    poll: Callable[[], None] | None = None,
    poll_seconds: float = 0.2,
) -> list:
    """``[fn(task) for task in tasks]``, each call in a forked child, all at once; in this process
    when there is one task or no fork. ``poll`` is called every ``poll_seconds`` while waiting."""
    if len(tasks) <= 1 or not can_fork():
        return [fn(task) for task in tasks]
    workdir = Path(workdir)
    outs = [workdir / f"result-{i}.pickle" for i in range(len(tasks))]
    children: dict[int, int] = {}
    for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        for i, task in enumerate(tasks):
            pid = os.fork()
            if pid == 0:  # the child: never returns into the caller's code
                code = 3
                try:
                    _die_with_parent()
                    code = _run_child(fn, task, outs[i])
                finally:
                    os._exit(code)
            children[pid] = i
        results: list = [None] * len(tasks)
        while children:
            ended = False
            for pid in list(children):
                done, status = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
                ended = True
                i = children.pop(pid)
                if os.WIFSIGNALED(status):
                    raise RuntimeError(
                        f"corpus worker {i + 1} of {len(tasks)} was killed by signal "
                        f"{os.WTERMSIG(status)}"
                        + (" (out of memory?)" if os.WTERMSIG(status) == signal.SIGKILL else "")
                    )
                try:
                    with open(outs[i], "rb") as f:
                        ok, value = pickle.load(f)
                except (OSError, EOFError, pickle.UnpicklingError):
                    raise RuntimeError(
                        f"corpus worker {i + 1} of {len(tasks)} ended (status "
                        f"{os.waitstatus_to_exitcode(status)}) without a result"
                    ) from None
                outs[i].unlink(missing_ok=True)
                if not ok:
                    raise value
                results[i] = value
            if children and not ended:
                if poll is not None:
                    poll()
                time.sleep(poll_seconds)
        return results
    finally:
        _stop(list(children))
        for out in outs:
            out.unlink(missing_ok=True)
            out.with_name(out.name + ".part").unlink(missing_ok=True)


class Progress:
    """Bytes and words read so far, by slot (one per child, in a page shared across forks), and
    a log line every ``PROGRESS_SECONDS``."""

    def __init__(self, what: str, total_bytes: int, slots: int = 1):
        self.what, self.total = what, max(int(total_bytes), 1)
        self._map = mmap.mmap(-1, max(16 * slots, mmap.PAGESIZE))
        self.counts = np.frombuffer(self._map, dtype=np.int64)[: 2 * slots].reshape(slots, 2)
        self.start = self._last = time.monotonic()

    def set(self, slot: int, bytes_read: int, words: int) -> None:
        self.counts[slot] = bytes_read, words

    def maybe_log(self) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_SECONDS:
            return
        self._last = now
        bytes_read, words = (int(x) for x in self.counts.sum(axis=0))
        elapsed = now - self.start
        share = min(bytes_read / self.total, 1.0)
        left = elapsed * (1 - share) / share if share > 0 else float("nan")
        log.info(
            "%s: %s of %s read (%.0f%%), %.1fM words, %.2fM words/s, about %s left",
            self.what,
            _size(bytes_read),
            _size(self.total),
            100 * share,
            words / 1e6,
            words / 1e6 / max(elapsed, 1e-9),
            _duration(left),
        )

    def close(self) -> None:
        self.counts = None
        self._map.close()


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan: nothing read yet
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
