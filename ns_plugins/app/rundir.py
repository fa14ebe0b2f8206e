"""A run directory is one run's: ``RUN_DIR/.lock`` (flock, the holder's pid in it) is held for
the whole run; a second run into a busy directory, or into one holding a finished, interrupted or
unfinished run that ``ckpt_path`` does not resume, is refused in one line."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from functools import partial
from pathlib import Path

from ns_plugins.app.checks import ConfigError

# Run directories whose lock this process holds: {resolved directory: what releases the lock}.
_HELD: dict = {}


# Variables by which a launcher tells a process that it is not a run's first one (rank > 0 under
# torchrun or SLURM, a rank Lightning's launcher started, another node): such a process writes
# into the directory that rank 0 holds.
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


def _owns_run_dir() -> bool:
    return all(os.environ.get(name, "0") in ("", "0") for name in _RANK_VARIABLES)


def claim_run_dir(run_dir, ckpt_path=None) -> bool:
    """Take ``RUN_DIR/.lock`` for this process and check that the directory may take a new run.

    A run directory holds one run. Another process running into it is refused at once, naming its
    pid; so is a directory that holds a run already (its ``metrics.json``, or checkpoints of a run
    that ended without one) unless ``ckpt_path`` resumes from a checkpoint inside it. Returns
    whether this call took the lock (False: this process holds it already, or is not the run's
    first process). The lock goes with the process (``release_run_dir``, or its exit)."""
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _HELD or not _owns_run_dir():
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    _HELD[key] = _lock(run_dir / ".lock", run_dir)
    try:
        _check_run_dir_free(run_dir, ckpt_path)
    except BaseException:
        release_run_dir(run_dir)
        raise
    return True


def release_run_dir(run_dir) -> None:
    release = _HELD.pop(Path(run_dir).resolve(), None)
    if release is not None:
        release()


@contextlib.contextmanager
def run_dir_claimed(run_dir, ckpt_path=None):
    """``claim_run_dir`` for the duration of the block (nothing when this process holds it)."""
    taken = claim_run_dir(run_dir, ckpt_path)
    try:
        yield
    finally:
        if taken:
            release_run_dir(run_dir)


def _lock(path: Path, run_dir: Path):
    """An exclusive lock on ``path`` with this process's pid written in it, and the function
    that releases it; a ConfigError naming the holder's pid when another process holds it.

    flock, held by an open descriptor: the kernel drops it when the process ends, however it
    ends, so no stale lock is left; processes forked during the run share it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): filelock's lock, without the holder's pid
        return _lock_without_flock(path, run_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise ConfigError(
            f"the run directory {run_dir} is in use by another run (pid {holder}); "
            "choose another hydra.run.dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return partial(os.close, fd)


def _lock_without_flock(path: Path, run_dir: Path):
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"the run directory {run_dir} is in use by another run; choose another hydra.run.dir"
        ) from None
    return lock.release


def _check_run_dir_free(run_dir: Path, ckpt_path) -> None:
    """Refuse a directory that holds a run, unless ``ckpt_path`` resumes from inside it."""
    if ckpt_path is not None and Path(ckpt_path).resolve().is_relative_to(run_dir.resolve()):
        return
    choose = "choose another hydra.run.dir or resume with ckpt_path="
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        try:
            saved = json.loads(metrics.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("interrupted") and saved.get("interrupt_checkpoint"):
            raise ConfigError(
                f"{run_dir} holds an interrupted run; {choose}{saved['interrupt_checkpoint']}"
            )
        raise ConfigError(
            f"{run_dir} holds a finished run; {choose}{run_dir / 'checkpoints' / 'last.ckpt'}"
        )
    checkpoints = run_dir / "checkpoints"
    for name in ("interrupted.ckpt", "last.ckpt"):
        if (checkpoints / name).is_file():
            raise ConfigError(
                f"{run_dir} holds the checkpoints of a run that did not finish; "
                f"{choose}{checkpoints / name}"
            )
