"""Assemble ``report.html``: one self-contained page (images inlined as data URIs, styles inline,
no links out) that shows at a glance whether training worked. The figures are also written as
PNG files beside it for image viewers."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from pathlib import Path

import numpy as np

from ns_plugins.app import evaluation as evaluate
from ns_plugins.report import plots
from ns_plugins.report.run import Run, load_run

__all__ = ["build_report"]

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1150px;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.glance li{margin:.2em 0}.note{background:#fff8e1;border:1px solid #f0d080;padding:.5em 1em}
.same{background:#e3f4e3}.other{background:#fbe4e4}.score{color:#777;font-size:.85em}
img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:1em;overflow:auto;
font-size:.85em}
"""

# Metric key -> (short name, what the number is).
_SCORES = {
    "wordsim353": ("WordSim-353", "Spearman ρ, cosine vs. human scores"),
    "simlex999": ("SimLex-999", "Spearman ρ, cosine vs. human scores"),
    "analogy": ("Google analogies", "3CosAdd accuracy"),
    "planted_purity": ("Planted clusters", "nearest-neighbour purity"),
    "planted_analogy": ("Planted analogies", "3CosAdd accuracy"),
}


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        if 1e5 <= abs(v) < 1e15:
            return f"{v:,.0f}"
        if v != 0 and (abs(v) >= 1e15 or abs(v) < 1e-3):
            return f"{v:.4g}"
        return f"{v:,.4f}" if abs(v) < 100 else f"{v:,.1f}"
    return str(v)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def _metric_values(metrics: dict | None) -> dict:
    """Scalars of metrics.json in one flat dict; the trainer nests scores under ``eval``."""
    metrics = {k: v for k, v in (metrics or {}).items() if k not in ("config", "neighbours")}
    nested = metrics.pop("eval", None)
    flat = _flatten(metrics)
    if isinstance(nested, dict):
        flat.update(_flatten(nested))
    return flat


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _td(x, num: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in ("num" if num else "", cls) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{x}</td>"


def _cfg_get(cfg: dict | None, *keys):
    for k in keys:
        if not isinstance(cfg, dict):
            return None
        cfg = cfg.get(k)
    return cfg


def _chance_purity(words: list[str], clusters: dict) -> float:
    """Expected purity if neighbours were drawn at random among the clustered words."""
    sizes = np.bincount([int(clusters[w]) for w in words if w in clusters]).astype(float)
    n = sizes.sum()
    return float((sizes * (sizes - 1)).sum() / (n * (n - 1))) if n > 1 else math.nan


def _scores(run: Run) -> tuple[dict, list[str]]:
    """Final scores: metrics.json, plus what can be computed from the vectors when it lacks them."""
    scores = _metric_values(run.metrics)
    computed = []
    if run.vectors is None or run.words is None:
        return scores, computed
    if run.ground_truth and "planted_purity" not in scores:
        scores.update(evaluate.planted_scores(run.words, run.vectors, run.ground_truth))
        computed.append("planted structure")
    inputs = {
        "wordsim": ("wordsim353", _cfg_get(run.config, "eval", "wordsim")),
        "simlex": ("simlex999", _cfg_get(run.config, "eval", "simlex")),
        "analogies": ("analogy", _cfg_get(run.config, "eval", "analogies")),
    }
    todo = {
        arg: path
        for arg, (key, path) in inputs.items()
        if key not in scores and path and Path(path).is_file()
    }
    if todo:
        scores.update(evaluate.evaluate_all(run.words, run.vectors, **todo))
        computed += sorted(todo)
    return scores, computed


def _glance(run: Run, scores: dict) -> list[str]:
    items = []
    if scores.get("interrupted"):
        ckpt = scores.get("interrupt_checkpoint") or "a checkpoint"
        items.append(
            f"Training was interrupted at step {_fmt(scores.get('global_step'))}; this shows the "
            f"state then. Resume from {ckpt}."
        )
    if "planted_learned" in scores:
        learned = "was learned" if scores["planted_learned"] else "was NOT learned"
        items.append(f"The planted structure {learned}.")
    loss_key = plots.pick_curve(
        run.curves, "train/loss", "train/loss_step", "loss", contains="loss"
    )
    if loss_key:
        steps, loss = run.curves[loss_key]
        m = max(1, len(loss) // 20)
        first, last = float(np.mean(loss[:m])), float(np.mean(loss[-m:]))
        change = 100.0 * (last - first) / first if first else math.nan
        trend = "fell" if last < first else "did not fall"
        items.append(
            f"Loss {trend}: {first:.4g} → {last:.4g} ({change:+.0f}%) from step "
            f"{int(steps[0]):,} to step {int(steps[-1]):,} (means of the first and last 5%)."
        )
    speed = plots.pick_curve(run.curves, "train/words_per_sec", contains="words_per_sec")
    if speed:
        items.append(f"Median throughput {float(np.median(run.curves[speed][1])):,.0f} words/s.")
    if "planted_purity" in scores and run.ground_truth and run.words:
        chance = _chance_purity(run.words, run.ground_truth.get("clusters", {}))
        items.append(
            f"Planted clusters: neighbour purity {_fmt(scores['planted_purity'])} "
            f"(random vectors would give about {_fmt(chance)})."
        )
    for key in ("wordsim353", "simlex999", "analogy", "planted_analogy"):
        if key in scores:
            name, what = _SCORES[key]
            items.append(f"{name}: {_fmt(scores[key])} ({what}).")
    return items


def _score_table(scores: dict, run: Run) -> str:
    rows = []
    for key, (name, what) in _SCORES.items():
        if key not in scores:
            continue
        if key == "analogy":
            detail = (
                f"{_fmt(scores.get('analogy_correct'))} correct of "
                f"{_fmt(scores.get('analogy_answered'))} answered; "
                f"{_fmt(scores.get('analogy_skipped'))} skipped (unknown words)"
            )
        elif key == "planted_purity":
            chance = _chance_purity(run.words or [], (run.ground_truth or {}).get("clusters", {}))
            detail = f"share of 10 nearest clustered words in its cluster; chance ≈ {_fmt(chance)}"
        elif key == "planted_analogy":
            detail = f"{_fmt(scores.get('planted_analogy_answered'))} questions answered"
        else:
            detail = (
                f"{_fmt(scores.get(key + '_pairs'))} pairs used, "
                f"{_fmt(scores.get(key + '_oov'))} skipped (unknown words)"
            )
        cells = [_esc(name), _esc(what), _fmt(scores[key]), _esc(detail)]
        rows.append([_td(cells[0]), _td(cells[1]), _td(cells[2], num=True), _td(cells[3])])
    if not rows:
        return "<p>No evaluation scores (no metrics.json and nothing to compute them from).</p>"
    return _table(["evaluation", "measure", "score", "details"], rows)


def _other_table(scores: dict) -> str:
    shown = set(_SCORES) | {
        f"{k}{s}" for k in _SCORES for s in ("_pairs", "_oov", "_correct", "_answered", "_skipped")
    }
    rest = {k: v for k, v in scores.items() if k not in shown}
    if not rest:
        return ""
    rows = [
        [_td(_esc(k)), _td(_esc(_fmt(v)), num=isinstance(v, (int, float)))]
        for k, v in sorted(rest.items())
    ]
    return "<h3>Other recorded values</h3>" + _table(["key", "value"], rows)


def _frequent_queries(words: list[str], clusters: dict | None, n: int = 6) -> list[str]:
    if clusters:
        # one frequent word from each of the most frequent clusters
        picked, seen = [], set()
        for w in words:
            c = clusters.get(w)
            if c is not None and c not in seen:
                picked.append(w)
                seen.add(c)
                if len(picked) == n:
                    break
        if picked:
            return picked
    if len(words) <= 60:
        return words[:n]
    # the very top of a real vocabulary is function words; spread over the top thousand instead
    ranks = np.unique(np.geomspace(10, min(len(words), 1000) - 1, n).astype(int))
    return [words[i] for i in ranks]


def _neighbour_table(run: Run, queries: list[str], k: int) -> str:
    found = evaluate.nearest_neighbours(run.words, run.vectors, queries, k=k)
    clusters = (run.ground_truth or {}).get("clusters") or {}
    rows = []
    for q in queries:
        if q not in found:
            rows.append([_td(f"<b>{_esc(q)}</b>"), f'<td colspan="{k}">not in the vocabulary</td>'])
            continue
        cells = [_td(f"<b>{_esc(q)}</b>")]
        for w, s in found[q]:
            cls = ""
            if q in clusters and w in clusters:
                cls = "same" if clusters[w] == clusters[q] else "other"
            cells.append(_td(f'{_esc(w)} <span class="score">{s:.2f}</span>', cls=cls))
        rows.append(cells)
    return _table(["word"] + [str(i) for i in range(1, k + 1)], rows)


def _version() -> str:
    try:
        import ns_plugins

        return str(getattr(ns_plugins, "__version__", "unknown"))
    except Exception:
        return "unknown"


def _default_out(run: Run) -> Path:
    return run.run_dir / "report.html"


def build_report(
    run_dir,
    words=None,
    out=None,
    *,
    projection: str = "pca",
    max_points: int = 400,
    n_labels: int = 80,
    k: int = 8,
) -> Path:
    """Write ``report.html`` for a run directory, vectors file or checkpoint; returns its path.

    ``words`` are extra query words for the nearest-neighbour tables (the run config's
    ``report.words`` are used too). ``out`` defaults to ``report.html`` in the run directory (or
    next to the given file). The figures are also saved beside it as ``report_training.png``,
    ``report_embeddings.png`` and, for the synthetic corpus, ``report_clusters.png``.
    """
    plots.check_projection(projection)
    run = load_run(run_dir)
    out = Path(out) if out is not None else _default_out(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    if run.vectors is not None and not np.isfinite(run.vectors).all():
        run.notes.append("the vectors contain NaN or infinity: training diverged")
        run.vectors = np.nan_to_num(run.vectors, nan=0.0, posinf=0.0, neginf=0.0)
    scores, computed = _scores(run)
    clusters = (run.ground_truth or {}).get("clusters") or None

    title = f"Training report: {run.run_dir.resolve().name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shape = (
        "no vectors"
        if run.vectors is None
        else "{:,} words × {} dimensions".format(*run.vectors.shape)
    )
    src = f" from {_esc(run.vectors_from.name)}" if run.vectors_from else ""
    parts.append(
        f'<p class="sub">{shape}{src} · ns_plugins {_esc(_version())} · built {stamp} '
        f"from {_esc(run.source)}</p>"
    )

    glance = _glance(run, scores)
    if glance:
        parts.append("<h2>At a glance</h2><ul class='glance'>")
        parts += [f"<li>{_esc(g)}</li>" for g in glance]
        parts.append("</ul>")
    if run.missing or run.notes or computed:
        parts.append('<div class="note">')
        if run.missing:
            parts.append("<p>Not found in the run directory:</p><ul>")
            parts += [f"<li>{_esc(m)}</li>" for m in run.missing]
            parts.append("</ul>")
        parts += [f"<p>{_esc(n)}</p>" for n in run.notes]
        if computed:
            parts.append(
                f"<p>Computed from the vectors for this report: {_esc(', '.join(computed))}.</p>"
            )
        parts.append("</div>")

    parts.append("<h2>Evaluation</h2>")
    parts.append(_score_table(scores, run))
    parts.append(_other_table(scores))

    figures = {}
    parts.append("<h2>Training curves</h2>")
    if run.curves:
        figures["report_training.png"] = plots.training_figure(run.curves)
        parts.append(_img(figures["report_training.png"], "training curves"))
    else:
        parts.append("<p>No training metrics were logged (csv/metrics.csv missing).</p>")

    parts.append("<h2>Embedding map</h2>")
    if run.vectors is not None and len(run.vectors) >= 3:
        n = min(max_points, len(run.vectors))
        figures["report_embeddings.png"] = plots.embedding_map(
            run.words[:n], run.vectors[:n], clusters, n_labels=n_labels, method=projection
        )
        if clusters:
            parts.append(
                "<p>Colours are the planted clusters of the synthetic corpus: if training worked, "
                "same-coloured words sit together.</p>"
            )
        parts.append(_img(figures["report_embeddings.png"], "2-D map of the embeddings"))
        heat = plots.cluster_similarity(run.words, run.vectors, clusters) if clusters else None
        if heat is not None:
            figures["report_clusters.png"] = heat
            parts.append(
                "<p>Mean cosine similarity of words within each planted cluster (diagonal) and "
                "between clusters: a learned structure is a bright diagonal.</p>"
            )
            parts.append(_img(heat, "similarity within and between planted clusters"))
    else:
        parts.append("<p>No vectors to draw.</p>")

    parts.append("<h2>Nearest neighbours (cosine)</h2>")
    if run.vectors is not None:
        queries = _frequent_queries(run.words, clusters)
        parts.append("<h3>Frequent words</h3>")
        if clusters:
            parts.append("<p>Green: same planted cluster as the query; red: another cluster.</p>")
        parts.append(_neighbour_table(run, queries, k))
        asked = [
            *(words or []),
            *(_cfg_get(run.config, "report", "words") or []),
            *(_cfg_get(run.config, "eval", "queries") or []),
        ]
        asked = [w for w in dict.fromkeys(str(w) for w in asked) if w not in queries]
        if asked:
            parts.append("<h3>Requested words</h3>")
            parts.append(_neighbour_table(run, asked, k))
    else:
        parts.append("<p>No vectors.</p>")

    parts.append("<h2>Configuration</h2>")
    if run.config_text is not None:
        parts.append(f"<pre>{html.escape(run.config_text, quote=False)}</pre>")
    else:
        parts.append("<p>No .hydra/config.yaml in the run directory.</p>")
    parts.append("</body></html>")

    for name, png in figures.items():
        _replace(out.parent / name, png)
    _replace(out, "\n".join(parts).encode("utf-8"))
    return out


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` whole through a fresh temporary file: a reader never sees half a file, and a
    symbolic link at ``path`` is replaced, never written through."""
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)
    with open(tmp, "xb") as f:
        f.write(data)
    tmp.replace(path)
