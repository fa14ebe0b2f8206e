"""Gather what a training run left behind: vectors, vocabulary, metrics, ground truth, config.

Any piece may be missing; :func:`load_run` records what it could not find in ``Run.missing`` so
the report can say so instead of failing. Only files inside the run directory are read: a
symbolic link (to a file or a folder) that leads out of it is skipped with a note, so that a
report never shows a file from elsewhere (``.hydra/config.yaml -> /etc/passwd``, say).
"""

from __future__ import annotations

import csv
import json
import math
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ns_plugins.embeddings import load_word2vec

__all__ = ["Run", "load_run", "read_metrics_csv", "embedding_from_checkpoint", "has_artefacts"]

# binary first: it reads many times faster than text (a 200k x 300 table: about 1 s against 15 s)
_VECTOR_FILES = ("vectors.bin", "vectors.txt", "vectors.bin.gz", "vectors.txt.gz")
_CHECKPOINT_SUFFIXES = (".ckpt", ".npz")  # Lightning runs, hogwild runs
_REFUSED = (
    "{path}: refused: reading it would unpickle Python objects, and unpickling runs code the file "
    "names; only arrays, tensors and plain values are read"
)


@dataclass
class Run:
    """One run's artefacts; ``None`` where a piece was not found."""

    source: Path  # what the report was asked to describe
    run_dir: Path  # the directory the artefacts were looked up in
    words: list[str] | None = None
    vectors: np.ndarray | None = None
    vectors_from: Path | None = None
    counts: np.ndarray | None = None  # aligned with ``words`` when the vocabulary matches
    metrics: dict | None = None
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    ground_truth: dict | None = None
    config_text: str | None = None
    config: dict | None = None
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_metrics_csv(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Lightning CSVLogger output as ``{column: (steps, values)}``, empty and NaN cells dropped.

    Rows are sparse (each logging call fills a few columns); ``step`` is the x axis, or the row
    number when the file has no ``step`` column.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    curves: dict[str, tuple[list, list]] = {}
    for n, row in enumerate(rows):
        step = _number(row.get("step"))
        x = step if step is not None else float(n)
        for key, cell in row.items():
            if key in (None, "step"):
                continue
            value = _number(cell)
            if value is not None:
                xs, ys = curves.setdefault(key, ([], []))
                xs.append(x)
                ys.append(value)
    return {k: (np.array(xs), np.array(ys)) for k, (xs, ys) in curves.items()}


def _number(cell) -> float | None:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path``, every link on the way resolved, lies in ``root`` (also resolved)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a link loop, or a path that cannot be resolved
        return False


class _Files:
    """The files of one run directory that may be read: those that are there and, links
    resolved, inside it. A file found but leading elsewhere is noted once in ``refused``."""

    def __init__(self, root: Path):
        self.root = root
        self.refused: list[str] = []

    def ok(self, path: Path, root: Path | None = None) -> bool:
        if not path.is_file():
            return False
        root = self.root if root is None else root
        if _inside(root, path):
            return True
        try:
            shown = path.relative_to(self.root)
        except ValueError:
            shown = path
        note = f"{shown} leads out of {root} (a symbolic link); not read"
        if note not in self.refused:
            self.refused.append(note)
        return False

    def first(self, paths) -> Path | None:
        return next((p for p in paths if self.ok(p)), None)


def _find_metrics_csv(run_dir: Path, files: _Files | None = None) -> Path | None:
    files = files or _Files(run_dir)
    direct = run_dir / "csv" / "metrics.csv"
    if files.ok(direct):
        return direct
    found = sorted(
        (p for p in run_dir.glob("csv/**/metrics.csv") if files.ok(p)),
        key=lambda p: p.stat().st_mtime,
    )
    found = found or sorted(
        (p for p in run_dir.glob("**/metrics.csv") if files.ok(p)),
        key=lambda p: p.stat().st_mtime,
    )
    return found[-1] if found else None


def _find_checkpoint(run_dir: Path, files: _Files | None = None) -> Path | None:
    files = files or _Files(run_dir)
    ckpts = sorted(
        (
            p
            for p in (run_dir / "checkpoints").glob("*")
            if p.suffix in _CHECKPOINT_SUFFIXES and files.ok(p)
        ),
        key=lambda p: p.stat().st_mtime,
    )
    return ckpts[-1] if ckpts else None


def embedding_from_checkpoint(path) -> np.ndarray:
    """The input embedding of a checkpoint: ``in_embed`` of a hogwild run's ``.npz``, or the 2-D
    float tensor named like ``*in*embed*weight`` of a Lightning ``.ckpt``.

    Only arrays, tensors and plain values are read: a file that needs arbitrary Python objects
    unpickled is refused (unpickling runs whatever code the file names)."""
    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as ckpt:
                if "in_embed" not in ckpt.files:
                    raise ValueError(f"{path}: no in_embed array in this checkpoint")
                return np.asarray(ckpt["in_embed"], dtype=np.float32)
        except ValueError as exc:
            if "allow_pickle" not in str(exc):
                raise
            raise ValueError(_REFUSED.format(path=path)) from None
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(
                f"{path}: not a readable .npz checkpoint ({_first_line(exc)})"
            ) from None
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(_REFUSED.format(path=path)) from None
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: say so in one line
        raise ValueError(f"{path}: not a readable torch checkpoint ({_first_line(exc)})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: no state_dict in this checkpoint")
    tables = {
        k: v
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.ndim == 2 and v.is_floating_point()
    }
    named = [k for k in tables if re.search(r"in\w*embed\w*\.weight$", k, re.IGNORECASE)]
    if not named:
        raise ValueError(
            f"{path}: no input embedding (a 2-D float tensor named like '*in*embed*weight') among "
            f"{sorted(tables) or 'no 2-D float tensors'}"
        )
    named.sort(key=lambda k: (not k.endswith("in_embed.weight"), len(k)))
    return tables[named[0]].detach().float().numpy()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def has_artefacts(run_dir) -> bool:
    """Whether a directory holds anything a report shows: vectors, a checkpoint or metrics."""
    d = Path(run_dir)
    files = _Files(d)
    return (
        files.first(d / n for n in (*_VECTOR_FILES, "metrics.json")) is not None
        or _find_checkpoint(d, files) is not None
        or _find_metrics_csv(d, files) is not None
    )


def _read_vocab(path: Path) -> tuple[list[str], np.ndarray]:
    from ns_plugins.data.vocab import Vocab

    vocab = Vocab.load(path)
    return list(vocab.words), np.asarray(vocab.counts)


def _find_upwards(start: Path, name: str, files: _Files, levels: int = 3) -> Path | None:
    """``name`` in ``start`` or up to ``levels`` folders above, each time only if it lies in the
    folder it was found in (links resolved)."""
    for d in [start, *start.parents][: levels + 1]:
        if files.ok(d / name, root=d):
            return d / name
    return None


def _load_config(run: Run, files: _Files) -> None:
    path = run.run_dir / ".hydra" / "config.yaml"
    if not files.ok(path):
        saved = (run.metrics or {}).get("config")
        if isinstance(saved, dict):  # the trainer also keeps the resolved config in metrics.json
            run.config = saved
            try:
                import yaml

                run.config_text = yaml.safe_dump(saved, sort_keys=False)
            except ImportError:
                run.config_text = json.dumps(saved, indent=2)
        else:
            run.missing.append(".hydra/config.yaml (run configuration)")
        return
    run.config_text = path.read_text(encoding="utf-8")
    try:
        import yaml

        loaded = yaml.safe_load(run.config_text)
        run.config = loaded if isinstance(loaded, dict) else None
    except Exception as exc:  # PyYAML missing or a non-plain config: the text is still shown
        run.notes.append(f"config not parsed ({type(exc).__name__}); shown as text")


def load_run(path) -> Run:
    """Read a run directory, a vectors file (.txt/.bin) or a checkpoint (.ckpt, .npz)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"nothing at {path}: give a run directory, vectors file or checkpoint (.ckpt, .npz)"
        )
    if path.is_dir():
        run = Run(source=path, run_dir=path)
        files = _Files(path)
        vec_file = files.first(path / n for n in _VECTOR_FILES)
        ckpt = None if vec_file else _find_checkpoint(path, files)
    else:  # the file named is read wherever it leads; what is found beside it is checked
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        run = Run(source=path, run_dir=run_dir)
        files = _Files(run_dir)
        is_ckpt = path.suffix in _CHECKPOINT_SUFFIXES
        vec_file, ckpt = (None, path) if is_ckpt else (path, None)

    vocab_file = _find_upwards(ckpt.parent if ckpt else run.run_dir, "vocab.tsv", files)
    if vocab_file is not None:
        vocab_words, counts = _read_vocab(vocab_file)
    else:
        vocab_words = counts = None
        run.missing.append("vocab.tsv (word counts)")

    if vec_file is not None:
        run.words, run.vectors = load_word2vec(vec_file)
        run.vectors_from = vec_file
    elif ckpt is not None:
        run.vectors = embedding_from_checkpoint(ckpt)
        run.vectors_from = ckpt
        run.notes.append(
            f"Vectors read from the checkpoint {ckpt.name}: no exported vectors file, so this "
            "shows the state when that checkpoint was saved (e.g. an interrupted run)."
        )
        if vocab_words is not None and len(vocab_words) == len(run.vectors):
            run.words = vocab_words
        else:
            why = (
                "no vocab.tsv next to or above it"
                if vocab_words is None
                else f"vocab.tsv has {len(vocab_words)} words for {len(run.vectors)} rows"
            )
            run.words = [f"#{i}" for i in range(len(run.vectors))]
            run.notes.append(f"words unknown for {ckpt.name} ({why}); rows are shown as #id")
    else:
        run.missing.append("vectors.txt / vectors.bin / checkpoints/*.ckpt or *.npz (embeddings)")

    if run.words is not None and vocab_words is not None:
        if run.words == vocab_words:
            run.counts = counts
        elif vec_file is not None:
            run.notes.append("vocab.tsv does not match the vectors file; counts not shown")

    metrics_json = run.run_dir / "metrics.json"
    if files.ok(metrics_json):
        try:
            run.metrics = json.loads(metrics_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            run.notes.append(f"metrics.json is not valid JSON ({exc.msg})")
    else:
        run.missing.append("metrics.json (final scores)")

    csv_path = _find_metrics_csv(run.run_dir, files)
    if csv_path is not None:
        run.curves = read_metrics_csv(csv_path)
    else:
        run.missing.append("csv/metrics.csv (training curves)")

    truth = run.run_dir / "ground_truth.json"
    if files.ok(truth):
        run.ground_truth = json.loads(truth.read_text(encoding="utf-8"))
    _load_config(run, files)
    run.notes += files.refused
    return run
