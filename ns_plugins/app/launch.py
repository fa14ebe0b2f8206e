"""The entry of a run: check the config, start encoding the corpus in a forked process while
torch and Lightning import (not for a text corpus across nodes, where each rank encodes its own
part), fork the other ranks of a one-node DDP run, then hand over to the run skeleton
(``ns_plugins.app.skeleton``). Signals while the corpus is prepared end the run in one line; a
failed or killed rank stops the others."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig

from ns_plugins.app import signals
from ns_plugins.app.checks import check_config, devices, num_nodes
from ns_plugins.app.recipe import CorpusRecipe, cache_dir_of
from ns_plugins.app.rundir import run_dir_claimed
from ns_plugins.app.signals import RankStopped, RunInterrupted, _RankWatch, interruptible
from ns_plugins.errors import UsageError


def train(cfg: DictConfig, run_dir, extra_callbacks=()) -> dict:
    """Check ``cfg``, train with the engine it names, write the run directory, and return the
    final metrics (empty on ranks other than 0). ``extra_callbacks`` are Lightning callbacks."""
    check_config(cfg)
    run_dir = Path(run_dir)
    with run_dir_claimed(run_dir, cfg.ckpt_path):
        return _train(cfg, run_dir, CorpusRecipe.from_config(cfg), extra_callbacks)


def _train(cfg: DictConfig, run_dir: Path, recipe: CorpusRecipe, extra_callbacks) -> dict:
    encoder = None
    try:
        with interruptible("preparing the corpus"):
            # across nodes each rank encodes its own part once the process group is up: an early
            # encoder would read the whole corpus on every node
            if not recipe.sharded(num_nodes(cfg)):
                encoder = _encode_in_background(recipe, cache_dir_of(cfg, run_dir))
            try:
                from ns_plugins.app.skeleton import train as train_lightning
            except ModuleNotFoundError as err:
                if err.name not in ("torch", "pytorch_lightning", "lightning_fabric"):
                    raise
                raise UsageError(
                    f"training needs {err.name}, which is not installed: from the clone, "
                    'pip install ".[lightning]" (with torch for your platform; README: Install)'
                ) from None
            if encoder is not None:
                encoder.join()
    finally:
        if encoder is not None and encoder.exitcode is None:  # interrupted, or failed
            encoder.kill()
            encoder.join()
    with _local_ranks(cfg):
        return train_lightning(cfg, run_dir, extra_callbacks, recipe=recipe)


# Variables by which torchrun, SLURM, LSF or a cluster tell a process its rank: Lightning then
# starts no processes, and neither does _local_ranks.
_LAUNCHED_BY = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "SLURM_NTASKS", "LSB_JOBID")


@contextlib.contextmanager
def _local_ranks(cfg: DictConfig):
    """Start the other processes of a one-node DDP run by forking this one, with torch and
    Lightning imported and nothing trained yet; yields this process's local rank. A forked rank
    trains and exits inside the block.

    Lightning's launcher starts them only when ``fit`` begins, as new interpreters that compose the
    config and import torch and Lightning again while rank 0 waits (RESULTS.md has the cost).
    Forked, a rank starts with everything imported, as
    a DataLoader worker does. Lightning finds ``LOCAL_RANK`` set and treats the processes as
    started by a launcher, as under torchrun. When a rank fails, the others are killed, as
    Lightning's launcher does, instead of waiting in a collective forever. Elsewhere (several
    nodes, processes started by a launcher, CUDA already initialised, not Linux) Lightning's
    launcher starts the ranks as before."""
    n = devices(cfg)
    torch = sys.modules.get("torch")
    if (
        cfg.device.strategy != "ddp"
        or n < 2
        or num_nodes(cfg) != 1
        or any(name in os.environ for name in _LAUNCHED_BY)
        or (torch is not None and torch.cuda.is_initialized())  # CUDA does not survive a fork
        or sys.platform != "linux"
    ):
        yield 0
        return
    with socket.socket() as sock:  # a free port for the process group (as Lightning finds one)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": "0",
           "WORLD_SIZE": str(n), "LOCAL_RANK": "0"}  # fmt: skip
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    children = {}
    for rank in range(1, n):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.environ["LOCAL_RANK"] = str(rank)
            status = 1
            try:
                yield rank
                status = 0
            except UsageError as err:  # bad input: one line, as rank 0 gives it
                status = 2
                print(f"ns-train: error: {err}", file=sys.stderr)
            except RunInterrupted as err:  # rank 0 says it
                status = 128 + err.signum
            except BaseException:  # noqa: BLE001 - this process ends here, whatever happened
                traceback.print_exc()
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        children[pid] = rank
    waiting = dict(children)  # the watcher removes each rank it has seen end
    watch = signals._WATCH = _RankWatch()
    watcher = threading.Thread(target=_watch_ranks, args=(waiting, watch), daemon=True)
    watcher.start()
    try:
        yield 0
    except BaseException as err:
        # The other ranks usually fail too and say why (a rank 0 error is often only "connection
        # closed by peer"); any still running after a while would wait in a collective forever.
        watch.stopping = True
        _end(children, grace=5.0)
        if watch.failed is not None and isinstance(err, Exception):  # a rank was killed
            raise RankStopped(*watch.failed, watch.checkpoint) from err
        raise
    finally:
        signals._WATCH = None
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    watcher.join(timeout=60.0)  # the ranks end with this one's last collective
    watch.stopping = True
    _kill(list(waiting))


def _kill(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _exited(pid: int):
    """The exit status of a child that ended (reaping it), None while it runs; 0 when another
    thread already reaped it."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0
    return os.waitstatus_to_exitcode(status) if done else None


def _end(children, grace: float) -> None:
    """Give the children ``grace`` seconds to end, then kill the rest."""
    running = set(children)
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        running = {pid for pid in running if _exited(pid) is None}
        time.sleep(0.1)
    _kill(running)


def _watch_ranks(waiting: dict, watch: _RankWatch | None = None, grace: float = 5.0) -> None:
    """Wait for the forked ranks (``{pid: rank}``, emptied as they end); when one fails, kill the
    others (SIGKILL: a process waiting in a collective ignores SIGTERM) and, unless this process
    ends within ``grace`` seconds (a collective with a dead peer fails at once, and this rank may
    be failing itself, with the error that matters), end it with the failed rank's status.

    A rank ended by a signal did not fail on its own error: rank 0's collective with it fails
    next, and rank 0 saves where it is and ends the run with one line (``rank_failure``); this
    thread then waits for that, as long as it takes."""
    watch = watch or _RankWatch()
    while waiting:
        time.sleep(0.2)
        for pid in list(waiting):
            code = _exited(pid)
            if code is None:
                continue
            rank = waiting.pop(pid)
            if code == 0 or watch.stopping:
                continue
            if code < 0:
                watch.failed = (rank, code)
                watch.seen.set()
                _kill(waiting)
                if watch.handled.wait(grace):
                    return
                print(f"ns-train: error: {RankStopped(rank, code)}", file=sys.stderr, flush=True)
                os._exit(128 - code)
            print(f"ns-train: rank {rank} stopped (exit status {code}); stopping the run",
                  file=sys.stderr, flush=True)  # fmt: skip
            _kill(waiting)
            time.sleep(grace)
            os._exit(code)


def _encode_in_background(recipe: CorpusRecipe, cache_dir: Path):
    """Start encoding the corpus into its cache in a forked child, or return None.

    Importing torch and Lightning takes seconds, and so does encoding a corpus of a few million
    words: the child does the second while this process does the first. The run's data module
    then finds the recipe's directory ready. Whatever the child meets (a bad file, a signal) it
    leaves alone: the data module prepares the corpus again under the cache's lock and reports
    the error itself, and a directory the child left half-written is removed under that lock.
    Only before torch is imported (afterwards there is no import left to overlap), and only where
    fork is the platform's way (Linux)."""
    import multiprocessing

    if "torch" in sys.modules or sys.platform != "linux":
        return None
    proc = multiprocessing.get_context("fork").Process(
        target=_encode_quietly, args=(recipe, cache_dir, os.getpid()), daemon=True
    )
    proc.start()
    return proc


def _encode_quietly(recipe: CorpusRecipe, cache_dir: Path, parent: int) -> None:
    # The parent stops this child when it is interrupted; when it dies another way (kill -9),
    # the kernel ends this child with it instead of leaving it encoding as an orphan.
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        recipe.prepare(cache_dir)
    except BaseException:  # noqa: BLE001 - the data module prepares again and reports it
        pass


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGKILL when its parent ends (Linux's
    prctl(PR_SET_PDEATHSIG)); exit at once if the parent ended already."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux's libc: the parent's handler stops it
        pass
    if os.getppid() != parent:
        os._exit(0)
