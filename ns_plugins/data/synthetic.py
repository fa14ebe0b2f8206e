"""A deterministic corpus with planted structure, and scores that check vectors found it.

Every sentence is about one topic cluster and one "lemma" of that cluster, written in one
grammatical form. It holds a form marker ("these" for plurals), the lemma in that form ("dolams"),
one or two attribute words of the lemma, topic words of the cluster and function-word fillers, in
random order.
What a word co-occurs with is therefore additive: cluster (topic words) + lemma (attributes) + form
(markers), which is the structure under which skip-gram vectors show analogy offsets:
``dolam : dolams :: kiru : kirus``. Frequencies are Zipf-like at every level.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ns_plugins.embeddings import KeyedVectors, analogy_scores, as_matrix, unit_rows

__all__ = ["SyntheticCorpus", "analogy_accuracy", "neighbour_purity", "synthetic_corpus"]

FORMS = ("", "s", "ed")  # base, plural, past: suffixes of the inflected forms
FORM_NAMES = ("base", "plural", "past")
MARKERS = (("this", "that"), ("these", "those"), ("did", "was"))
FILLERS = (
    "the of and to in is it for on with as at by from or an be are not but "
    "all can had her his one our out so up we you they will more when if no"
).split()
_ONSETS = list("bdfgklmnprstvz") + ["ch", "sh", "tr", "br"]
_VOWELS = list("aeiou") + ["ai", "ou"]


@dataclass
class SyntheticCorpus:
    sentences: list[list[str]]
    clusters: dict[str, int]  # word -> cluster id, for every word that belongs to a cluster
    analogies: list[tuple[str, str, str, str]]  # a : b :: c : d
    relations: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    seed: int = 0

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.sentences)

    @property
    def n_clusters(self) -> int:
        return len(set(self.clusters.values()))

    def __iter__(self):
        return iter(self.sentences)

    def __len__(self) -> int:
        return len(self.sentences)

    def write(self, path) -> Path:
        """One sentence per line (gzip when the name ends in .gz), readable by ``read_sentences``
        and ``encode_corpus`` like any text corpus."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "wt", encoding="utf-8") as f:
            for s in self.sentences:
                f.write(" ".join(s))
                f.write("\n")
        return p

    def vocab(self, min_count: int = 1):
        from .vocab import Vocab

        return Vocab.build(self.sentences, min_count=min_count)

    def neighbour_purity(self, vectors, vocab, k: int = 10) -> float:
        return neighbour_purity(vectors, vocab, self.clusters, k)

    def analogy_accuracy(self, vectors, vocab) -> float:
        return analogy_accuracy(vectors, vocab, self.analogies)


def _pseudo_words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """Pronounceable unique words; a word is refused if it or its inflections clash."""
    out: list[str] = []
    while len(out) < n:
        k = rng.integers(2, 4)
        w = "".join(
            _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
            for _ in range(k)
        )
        w += "mnlr"[rng.integers(4)]  # consonant ending keeps "s"/"ed" forms unambiguous
        forms = {w + s for s in FORMS}
        if forms & taken:
            continue
        taken |= forms
        out.append(w)
    return out


def _zipf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def synthetic_corpus(
    seed: int = 0,
    n_sentences: int = 40000,
    n_clusters: int = 8,
    lemmas_per_cluster: int = 6,
    topic_words_per_cluster: int = 12,
    attributes_per_lemma: int = 2,
    topic_words_per_sentence: int = 3,
    fillers_per_sentence: tuple[int, int] = (2, 6),
    noise: float = 0.1,
) -> SyntheticCorpus:
    """Generate the corpus (about 10 tokens a sentence: 40,000 sentences are ~440k tokens over
    ~400 words). With probability ``noise`` each topic word is drawn from any cluster and each
    marker from any form, so the structure is clear but not perfectly clean. The same arguments
    always give the same corpus."""
    if n_sentences < 1 or n_clusters < 2 or lemmas_per_cluster < 2:
        raise ValueError("need n_sentences >= 1, n_clusters >= 2 and lemmas_per_cluster >= 2")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    if topic_words_per_cluster < 1 or attributes_per_lemma < 1:
        raise ValueError("need at least one topic word per cluster and one attribute per lemma")
    lo, hi = fillers_per_sentence
    if not 0 <= lo <= hi:
        raise ValueError(
            f"fillers_per_sentence must be (low, high) with 0 <= low <= high, got {lo, hi}"
        )
    rng = np.random.default_rng(seed)
    taken = set(FILLERS) | {m for pair in MARKERS for m in pair}
    n_lem = n_clusters * lemmas_per_cluster
    lemmas = _pseudo_words(rng, n_lem, taken)  # lemma i belongs to cluster i // lemmas_per_cluster
    topics = _pseudo_words(rng, n_clusters * topic_words_per_cluster, taken)
    attrs = _pseudo_words(rng, n_lem * attributes_per_lemma, taken)

    clusters: dict[str, int] = {}
    for i, lem in enumerate(lemmas):
        for s in FORMS:
            clusters[lem + s] = i // lemmas_per_cluster
        for a in attrs[i * attributes_per_lemma : (i + 1) * attributes_per_lemma]:
            clusters[a] = i // lemmas_per_cluster
    for i, t in enumerate(topics):
        clusters[t] = i // topic_words_per_cluster

    relations = {
        f"{FORM_NAMES[0]}-{FORM_NAMES[f]}": [(lem, lem + FORMS[f]) for lem in lemmas]
        for f in range(1, len(FORMS))
    }
    analogies = [
        (a, b, c, d) for pairs in relations.values() for a, b in pairs for c, d in pairs if a != c
    ]

    # per-sentence choices, drawn in bulk
    cl = rng.choice(n_clusters, size=n_sentences, p=_zipf(n_clusters, 0.5))
    lem = cl * lemmas_per_cluster + rng.choice(
        lemmas_per_cluster, size=n_sentences, p=_zipf(lemmas_per_cluster, 0.8)
    )
    form = rng.integers(len(FORMS), size=n_sentences)
    marker = rng.integers(2, size=n_sentences)
    n_attr = rng.integers(1, attributes_per_lemma + 1, size=n_sentences)
    attr = np.argsort(rng.random((n_sentences, attributes_per_lemma)), axis=1)  # no repeats
    topic = cl[:, None] * topic_words_per_cluster + rng.choice(
        topic_words_per_cluster,
        size=(n_sentences, topic_words_per_sentence),
        p=_zipf(topic_words_per_cluster, 1.0),
    )
    stray = rng.random(topic.shape) < noise
    topic[stray] = rng.integers(n_clusters * topic_words_per_cluster, size=int(stray.sum()))
    mform = np.where(
        rng.random(n_sentences) < noise, rng.integers(len(FORMS), size=n_sentences), form
    )
    n_fill = rng.integers(lo, hi + 1, size=n_sentences)
    fill = rng.choice(len(FILLERS), size=(n_sentences, hi), p=_zipf(len(FILLERS), 1.0))
    keys = rng.random((n_sentences, 3 + attributes_per_lemma + topic_words_per_sentence + hi))

    sentences = []
    for i in range(n_sentences):
        words = [MARKERS[mform[i]][marker[i]], lemmas[lem[i]] + FORMS[form[i]]]
        base = lem[i] * attributes_per_lemma
        words += [attrs[base + a] for a in attr[i, : n_attr[i]]]
        words += [topics[t] for t in topic[i]]
        words += [FILLERS[f] for f in fill[i, : n_fill[i]]]
        order = np.argsort(keys[i, : len(words)])
        sentences.append([words[j] for j in order])
    return SyntheticCorpus(sentences, clusters, analogies, relations, seed)


def _words(vocab) -> list[str]:
    return list(getattr(vocab, "words", vocab))


def _checked(vectors, vocab) -> tuple[np.ndarray, list[str]]:
    words = _words(vocab)
    v = as_matrix(vectors)
    if v.shape[0] != len(words):
        raise ValueError(f"{v.shape[0]} vectors for a vocabulary of {len(words)} words")
    return v, words


def neighbour_purity(vectors, vocab, clusters: dict[str, int], k: int = 10) -> float:
    """Mean fraction of the ``k`` nearest clustered words (cosine) sharing a word's cluster.

    Only words of ``clusters`` present in ``vocab`` take part; chance is about 1 / n_clusters.
    """
    v, words = _checked(vectors, vocab)
    ids = np.array([i for i, w in enumerate(words) if w in clusters], dtype=np.int64)
    if ids.size <= k:
        raise ValueError(f"only {ids.size} clustered words in the vocabulary, need more than k={k}")
    lab = np.array([clusters[words[i]] for i in ids])
    u = unit_rows(v[ids], np.float64)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    nn = np.argpartition(-sim, k, axis=1)[:, :k]
    return float((lab[nn] == lab[:, None]).mean())


def analogy_accuracy(vectors, vocab, analogies) -> float:
    """Share of ``a : b :: c : d`` answered by ``d = argmax cos(x, b - a + c)`` over the whole
    vocabulary, ``a``, ``b`` and ``c`` excluded: 3CosAdd as gensim's ``evaluate_word_analogies``
    with no ``restrict_vocab`` and ``case_insensitive=False``, computed by
    :func:`ns_plugins.embeddings.analogy_scores`. Quadruples with a word outside ``vocab`` are
    skipped; when none is left, ``ValueError``."""
    v, words = _checked(vectors, vocab)
    scores = analogy_scores(
        KeyedVectors.from_words(words, v),
        [("planted", analogies)],
        restrict_vocab=None,
        case_insensitive=False,
    )
    if not scores["answered"]:
        raise ValueError("no analogy has all four words in the vocabulary")
    return scores["accuracy"]
