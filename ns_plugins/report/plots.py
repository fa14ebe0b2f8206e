"""The report's figures as PNG bytes (matplotlib, Agg backend, nothing fetched)."""

from __future__ import annotations

import functools
import importlib.util
import io

import numpy as np

__all__ = [
    "PROJECTIONS",
    "training_figure",
    "embedding_map",
    "project_2d",
    "pick_curve",
    "eval_curves",
]

PROJECTIONS = ("pca", "tsne", "umap")

# Keys logged under eval/ that are counts rather than scores.
_COUNT_SUFFIXES = ("_pairs", "_oov", "_correct", "_answered", "_skipped", "_total")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _literal_text(figure_function):
    """Draw every string of the figure as it is: words, cluster ids and logged metric names are
    data, and matplotlib would otherwise parse ``$...$`` in them as math (raising on ``$x^$``)
    or hand them to LaTeX when a matplotlibrc sets ``text.usetex``."""

    @functools.wraps(figure_function)
    def draw(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return figure_function(*args, **kwargs)

    return draw


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return buf.getvalue()


def pick_curve(curves: dict, *names: str, contains: str | None = None):
    """The first of ``names`` present in ``curves``, else the first key containing ``contains``."""
    for name in names:
        if name in curves:
            return name
    if contains is not None:
        return next((k for k in sorted(curves) if contains in k), None)
    return None


def eval_curves(curves: dict) -> list[str]:
    return sorted(k for k in curves if k.startswith("eval/") and not k.endswith(_COUNT_SUFFIXES))


def _smooth(y: np.ndarray) -> np.ndarray:
    """Centred moving average over about 2% of the points (loss per batch is noisy)."""
    w = max(1, len(y) // 50)
    if w == 1:
        return y
    kernel = np.ones(w) / w
    padded = np.pad(y, (w // 2, w - 1 - w // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color="0.5", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


@_literal_text
def training_figure(curves: dict) -> bytes:
    """Loss, words/s, learning rate and evaluation scores against the training step."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), layout="constrained")
    (ax_loss, ax_speed), (ax_lr, ax_eval) = axes

    loss = pick_curve(curves, "train/loss", "train/loss_step", "loss", contains="loss")
    if loss:
        x, y = curves[loss]
        ax_loss.plot(x, y, color="tab:blue", alpha=0.25, lw=0.8, label="per step")
        ax_loss.plot(x, _smooth(y), color="tab:blue", lw=2, label="smoothed")
        ax_loss.set_ylabel(loss)
        ax_loss.legend(loc="upper right", frameon=False)
    else:
        _empty(ax_loss, "no loss logged")
    ax_loss.set_title("Training loss (mean per positive pair)")

    speed = pick_curve(curves, "train/words_per_sec", contains="words_per_sec")
    if speed:
        x, y = curves[speed]
        ax_speed.plot(x, y, color="tab:green", lw=1)
        med = float(np.median(y))
        ax_speed.axhline(med, color="0.3", ls="--", lw=1, label=f"median {med:,.0f}")
        ax_speed.set_ylim(bottom=0)
        ax_speed.legend(loc="lower right", frameon=False)
        ax_speed.set_ylabel("words / s")
    else:
        _empty(ax_speed, "no throughput logged")
    ax_speed.set_title("Throughput")

    lr = pick_curve(curves, "train/lr", contains="lr")
    if lr:
        x, y = curves[lr]
        ax_lr.plot(x, y, color="tab:purple", lw=1.5)
        ax_lr.set_ylim(bottom=0)
        ax_lr.set_ylabel("learning rate")
    else:
        _empty(ax_lr, "no learning rate logged")
    ax_lr.set_title("Learning rate")

    scores = eval_curves(curves)
    if scores:
        for key in scores:
            x, y = curves[key]
            ax_eval.plot(x, y, marker="o", ms=4, lw=1.5, label=key.removeprefix("eval/"))
        ax_eval.legend(loc="best", frameon=False, fontsize=8)
        ax_eval.set_ylabel("score")
    else:
        _empty(ax_eval, "no evaluation logged")
    ax_eval.set_title("Evaluation scores")

    for ax in axes.flat:
        if ax.has_data():
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    return _png(fig)


def check_projection(method: str) -> None:
    """Fail early, before any work, on an unknown projection or a missing optional package."""
    needs = {"pca": None, "tsne": ("sklearn", "scikit-learn"), "umap": ("umap", "umap-learn")}
    if method not in needs:
        raise ValueError(f"unknown projection {method!r}; use one of {PROJECTIONS}")
    if needs[method] and importlib.util.find_spec(needs[method][0]) is None:
        raise ImportError(f"projection {method!r} needs {needs[method][1]}; use 'pca'")


def project_2d(vectors: np.ndarray, method: str = "pca", seed: int = 0, groups=None):
    """2-D coordinates of the unit-normalised vectors and a caption for the axes.

    ``pca`` (numpy SVD) always works; ``tsne`` needs scikit-learn and ``umap`` needs umap-learn.
    With ``groups`` (a label per row, -1 for none; at least three groups) ``pca`` uses the two
    main directions between the group centres instead, so that planted clusters that were
    learned show apart rather than sharing the plane with whatever varies most.
    """
    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)  # cosine geometry, as the evaluations use
    centred = x - x.mean(axis=0)
    if method == "pca" and groups is not None:
        groups = np.asarray(groups)
        ids = np.unique(groups[groups >= 0])
        if len(ids) >= 3:
            centres = np.stack([centred[groups == g].mean(axis=0) for g in ids])
            _, _, vt = np.linalg.svd(centres - centres.mean(axis=0), full_matrices=False)
            return centred @ vt[:2].T, [f"cluster-centre direction {i}" for i in (1, 2)]
    if method == "pca" or len(x) < 5:
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        share = s**2 / max(float((s**2).sum()), 1e-300)
        coords = u[:, :2] * s[:2]
        if coords.shape[1] < 2:
            coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        labels = [
            f"PC{i + 1} ({100 * share[i]:.1f}% of variance)" if i < len(s) else "" for i in (0, 1)
        ]
        return coords, labels
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise ImportError("projection 'tsne' needs scikit-learn; use 'pca'") from None

        perplexity = min(30.0, (len(x) - 1) / 3)
        coords = TSNE(2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed)
        return coords.fit_transform(x), ["t-SNE 1", "t-SNE 2"]
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ImportError("projection 'umap' needs umap-learn; use 'pca'") from None

        coords = umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit_transform(x)
        return coords, ["UMAP 1", "UMAP 2"]
    raise ValueError(f"unknown projection {method!r}; use 'pca', 'tsne' or 'umap'")


def _palette(n: int) -> list:
    """Distinct colours without the greys of matplotlib's tab palettes."""
    plt = _pyplot()
    tab10 = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    if n <= len(tab10):
        return tab10
    return [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]


@_literal_text
def embedding_map(
    words: list[str],
    vectors: np.ndarray,
    clusters: dict | None = None,
    n_labels: int = 80,
    method: str = "pca",
) -> bytes:
    """Scatter of the given (most frequent) words, ``n_labels`` of them labelled, spread evenly
    over the frequency ranks (the very top of a real vocabulary is all function words).

    With ``clusters`` ({word: id}) points are coloured by planted cluster and unclustered words
    are grey, so learned structure shows as same-coloured groups.
    """
    plt = _pyplot()
    groups = None
    if clusters:
        order = {c: i for i, c in enumerate(sorted({clusters[w] for w in words if w in clusters}))}
        groups = [order[clusters[w]] if w in clusters else -1 for w in words]
    coords, axis_labels = project_2d(vectors, method, groups=groups)
    fig, ax = plt.subplots(figsize=(11, 9), layout="constrained")
    if clusters:
        ids = sorted({clusters[w] for w in words if w in clusters})
        palette = _palette(len(ids))
        colour = {c: palette[i % len(palette)] for i, c in enumerate(ids)}
        grey = (0.7, 0.7, 0.7, 0.6)  # no palette colour is grey, so unclustered words stand apart
        point_colours = [colour[clusters[w]] if w in clusters else grey for w in words]
        sizes = [26 if w in clusters else 12 for w in words]
        ax.scatter(coords[:, 0], coords[:, 1], c=point_colours, s=sizes, linewidths=0)
        shown = ids[:20]
        handles = [
            plt.Line2D([], [], ls="", marker="o", color=colour[c], label=f"cluster {c}")
            for c in shown
        ]
        if len(ids) > len(shown):
            handles.append(plt.Line2D([], [], ls="", label=f"... {len(ids) - len(shown)} more"))
        if any(w not in clusters for w in words):
            handles.append(plt.Line2D([], [], ls="", marker="o", color=grey, label="no cluster"))
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    else:
        ax.scatter(coords[:, 0], coords[:, 1], s=14, color="tab:blue", alpha=0.5, linewidths=0)
    labelled = np.unique(np.linspace(0, len(words) - 1, min(n_labels, len(words))).astype(int))
    for i in labelled:
        ax.annotate(
            words[i],
            coords[i],
            xytext=(3, 2),
            textcoords="offset points",
            fontsize=8,
            color="0.15",
        )
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    what = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}.get(method, method)
    if axis_labels[0].startswith("cluster-centre"):
        title = (
            f"The {len(words)} most frequent words on the main directions between cluster centres"
        )
    else:
        title = f"{what} of the {len(words)} most frequent words (cosine geometry)"
    step = len(words) / max(len(labelled), 1)
    ax.set_title(title + ("" if step <= 1 else f"; about every {step:.0f}th labelled"))
    ax.grid(alpha=0.2)
    return _png(fig)


def cluster_similarity_matrix(words: list[str], vectors: np.ndarray, clusters: dict):
    """``(ids, mean)``: mean cosine similarity between the words of each pair of clusters, a
    word's similarity with itself left out."""
    present = [(i, clusters[w]) for i, w in enumerate(words) if w in clusters]
    ids = sorted({c for _, c in present})
    x = np.asarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    members = [np.array([i for i, c in present if c == cid]) for cid in ids]
    if not members:
        return ids, np.zeros((0, 0))
    sums = np.stack([x[m].sum(axis=0) for m in members])
    sizes = np.array([len(m) for m in members], dtype=np.float64)
    total = sums @ sums.T  # sum of all pairwise cosines between the two clusters
    pairs = np.outer(sizes, sizes)
    np.fill_diagonal(total, np.diag(total) - sizes)  # each word with itself contributes 1
    np.fill_diagonal(pairs, sizes * (sizes - 1))
    return ids, np.divide(total, pairs, out=np.full_like(total, np.nan), where=pairs > 0)


@_literal_text
def cluster_similarity(words: list[str], vectors: np.ndarray, clusters: dict) -> bytes | None:
    """Heat map of :func:`cluster_similarity_matrix`: a learned structure shows as a bright
    diagonal on a dark background. None when fewer than two clusters have words here."""
    ids, mean = cluster_similarity_matrix(words, vectors, clusters)
    if len(ids) < 2:
        return None
    plt = _pyplot()
    side = min(9.0, 3.5 + 0.35 * len(ids))
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    image = ax.imshow(mean, cmap="viridis", vmin=min(0.0, float(np.nanmin(mean))), vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="mean cosine similarity")
    ticks = np.arange(len(ids))
    ax.set_xticks(ticks, [str(c) for c in ids])
    ax.set_yticks(ticks, [str(c) for c in ids])
    ax.set_xlabel("planted cluster")
    ax.set_ylabel("planted cluster")
    if len(ids) <= 12:
        for (r, c), v in np.ndenumerate(mean):
            if np.isfinite(v):
                ax.text(
                    c,
                    r,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if v > 0.6 else "white",
                )
    ax.set_title("Mean cosine similarity within / between planted clusters")
    return _png(fig)
