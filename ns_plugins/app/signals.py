"""How a run ends when something outside it stops it: SIGINT or SIGTERM before training starts
(``RunInterrupted``, from ``interruptible``), or a forked rank killed during the run
(``RankStopped``; ``rank_failure`` tells the rank that sees its collective fail). The launcher sets
the watch; the data module and the callbacks below it read it."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM before training started (a BaseException, as KeyboardInterrupt is, so
    that no ``except Exception`` on the way takes it); the app reports it in one line and exits
    with 128 + the signal's number."""

    def __init__(self, signum: int, during: str):
        super().__init__(signum, during)
        self.signum, self.during = signum, during

    def __str__(self) -> str:
        return f"interrupted (signal {self.signum}) while {self.during}"


# The interrupt the last ``interruptible`` block received, if any: the raised exception may not
# survive the code it lands in (numba compiling a kernel turns it into a RuntimeError of its own).
_RECEIVED: RunInterrupted | None = None


def interrupt_received() -> RunInterrupted | None:
    """The interrupt received while the corpus was prepared, whatever became of its exception."""
    return _RECEIVED


@contextlib.contextmanager
def interruptible(during: str):
    """For the block, SIGINT and SIGTERM raise ``RunInterrupted(signum, during)`` in the main
    thread, wherever it is (an import, a wait for a child, encoding); elsewhere a no-op. Once
    training starts, ``GracefulInterrupt`` takes the signals over (a checkpoint, then a stop)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    global _RECEIVED
    _RECEIVED = None

    def handler(signum, frame):
        global _RECEIVED
        _RECEIVED = RunInterrupted(signum, during)
        raise _RECEIVED

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class RankStopped(Exception):
    """A forked rank was ended by a signal (kill -9, the OOM killer) during the run; rank 0 saved
    what it holds as the interrupt checkpoint when it could. The app reports it in one line and
    exits with 128 + the signal's number, as the shell reports a killed process."""

    def __init__(self, rank: int, status: int, checkpoint=None):
        super().__init__(rank, status, checkpoint)
        self.rank, self.status, self.checkpoint = rank, status, checkpoint
        self.exit_status = 128 - status if status < 0 else max(status, 1)

    def __str__(self) -> str:
        how = f"was killed by signal {-self.status}" if self.status < 0 else "failed"
        if self.checkpoint is None:
            return f"rank {self.rank} {how}; the run stopped without a checkpoint of this moment"
        return (
            f"rank {self.rank} {how}; rank 0 saved {self.checkpoint}: "
            f"resume with ckpt_path={self.checkpoint}"
        )


class _RankWatch:
    """What the watcher thread of a run's forked ranks tells the run's main thread."""

    def __init__(self):
        self.failed: tuple[int, int] | None = None  # (rank, exit status) of a rank a signal ended
        self.seen = threading.Event()  # set when failed is
        self.handled = threading.Event()  # the main thread takes it over (saves, then ends)
        self.stopping = False  # this process ends the ranks itself: their deaths are no news
        self.checkpoint: Path | None = None  # what rank 0 saved after the failure


# The watcher of this process's forked ranks while a run has them (set by launch._local_ranks).
_WATCH: _RankWatch | None = None


def rank_failure(wait: float):
    """(rank, exit status) of a forked rank of this run that a signal ended, waiting up to
    ``wait`` seconds for the watcher to see it (a collective fails the moment a peer dies; the
    watcher looks every 0.2 s), or None. A caller that gets it handles the failure: the watcher
    leaves the ending of this process to it."""
    watch = _WATCH
    if watch is None or not watch.seen.wait(wait):
        return None
    watch.handled.set()
    return watch.failed


def note_failure_checkpoint(path) -> None:
    """The checkpoint rank 0 saved after a rank failed, named in the run's last line."""
    if _WATCH is not None:
        _WATCH.checkpoint = Path(path)
