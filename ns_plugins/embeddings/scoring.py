"""Scores of word vectors on evaluation sets, as gensim's ``KeyedVectors`` computes them.

- word pairs: Pearson and Spearman correlations (with p-values) between human scores and cosine
  similarity, over the pairs whose words are among the ``restrict_vocab`` most frequent keys;
- analogies: 3CosAdd answers among the ``restrict_vocab`` most frequent keys, per section and in
  total.

Lookups are case-insensitive by default (upper-cased, the most frequent form of a key wins). The
functions take any object with ``index_to_key`` and ``vectors`` (a :class:`KeyedVectors`); its
``evaluate_word_pairs`` and ``evaluate_word_analogies`` methods are these functions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .eval_sets import load_analogies, load_similarity
from .similarity import answer_3cosadd, as_matrix, unit_rows
from .statistics import pearson, spearman, with_p_value

__all__ = [
    "analogy_answers",
    "analogy_scores",
    "evaluate_word_analogies",
    "evaluate_word_pairs",
    "pair_similarities",
    "vocabulary_index",
]

log = logging.getLogger(__name__)


def vocabulary_index(kv, restrict_vocab, case_insensitive: bool):
    """Key -> row over the first ``restrict_vocab`` keys (all when None or 0); the first (most
    frequent) form of a key wins when case is folded. Returns (index, fold, number of rows)."""
    ok = kv.index_to_key[:restrict_vocab] if restrict_vocab else kv.index_to_key
    fold = str.upper if case_insensitive else str
    index: dict[str, int] = {}
    for i, w in enumerate(ok):
        index.setdefault(fold(w), i)
    return index, fold, len(ok)


def pair_similarities(kv, pairs, restrict_vocab=300000, case_insensitive=True):
    """``(gold, model, n_oov)`` for ``(word1, word2, score)`` pairs: human scores and cosine
    similarities (float64) of the pairs whose words are among the first ``restrict_vocab``."""
    index, fold, _ = vocabulary_index(kv, restrict_vocab, case_insensitive)
    ia, ib, gold = [], [], []
    n_oov = 0
    for a, b, score in pairs:
        a, b = fold(a), fold(b)
        if a in index and b in index:
            ia.append(index[a])
            ib.append(index[b])
            gold.append(float(score))
        else:
            n_oov += 1
    vecs = as_matrix(kv.vectors)
    ua, ub = unit_rows(vecs[ia], np.float64), unit_rows(vecs[ib], np.float64)
    return np.array(gold), (ua * ub).sum(axis=1), n_oov


def evaluate_word_pairs(
    kv,
    pairs,
    delimiter: str = "\t",
    encoding: str = "utf8",
    restrict_vocab: int = 300000,
    case_insensitive: bool = True,
    dummy4unknown: bool = False,
):
    """``(pearson, spearman, oov_ratio)`` against human similarity scores, as gensim: each
    correlation a ``(statistic, pvalue)`` pair, ``oov_ratio`` the percentage of pairs with a
    word outside the first ``restrict_vocab`` keys (skipped, or scored 0 with
    ``dummy4unknown``). ``pairs`` is a file path or ``(word1, word2, score)`` triples."""
    if isinstance(pairs, (str, Path)):
        name, pairs = pairs, load_similarity(pairs, delimiter, encoding)
    else:
        name, pairs = "the given pairs", list(pairs)
    gold, model, n_oov = pair_similarities(kv, pairs, restrict_vocab, case_insensitive)
    if dummy4unknown and n_oov:
        index, fold, _ = vocabulary_index(kv, restrict_vocab, case_insensitive)
        missing = [s for a, b, s in pairs if fold(a) not in index or fold(b) not in index]
        gold, model = np.r_[gold, missing], np.r_[model, np.zeros(len(missing))]
    if not len(gold):
        raise ValueError(
            f"No valid similarity judgements found in {name}: either invalid format or all "
            f"are out-of-vocabulary in {kv}"
        )
    n = len(gold)
    r_pearson = with_p_value(pearson(gold, model), n)
    r_spearman = with_p_value(spearman(gold, model), n)
    oov_ratio = 100.0 * n_oov / (n if dummy4unknown else n + n_oov)
    log.info("Pearson correlation coefficient against %s: %.4f", name, r_pearson[0])
    log.info("Spearman rank-order correlation coefficient against %s: %.4f", name, r_spearman[0])
    log.info("Pairs with unknown words ratio: %.1f%%", oov_ratio)
    return r_pearson, r_spearman, oov_ratio


def analogy_answers(kv, sections, restrict_vocab=300000, case_insensitive=True):
    """Answer every question of ``[(section, [(a, b, c, d), ...]), ...]`` by 3CosAdd among the
    first ``restrict_vocab`` keys (all when None). Returns ``[(section, [(question folded,
    answered, correct), ...]), ...]``; a question with a word outside those keys is not
    answered."""
    index, fold, n_ok = vocabulary_index(kv, restrict_vocab, case_insensitive)
    unit = unit_rows(as_matrix(kv.vectors)[:n_ok], np.float32)
    canon = np.array([index[fold(w)] for w in kv.index_to_key[:n_ok]], dtype=np.int64)
    folded, quads = [], []
    for name, questions in sections:
        qs = [tuple(fold(w) for w in q) for q in questions]
        folded.append((name, qs))
        quads += [[index[w] for w in q] for q in qs if all(w in index for w in q)]
    quads_a = np.array(quads, dtype=np.int64).reshape(-1, 4)
    predicted = answer_3cosadd(unit, canon, quads_a[:, :3])
    # compared by folded form, as gensim compares upper-cased words
    correct = iter((predicted >= 0) & (canon[np.maximum(predicted, 0)] == quads_a[:, 3]))
    out = []
    for name, qs in folded:
        rows = []
        for q in qs:
            answered = all(w in index for w in q)
            rows.append((q, answered, bool(next(correct)) if answered else False))
        out.append((name, rows))
    return out


def analogy_scores(kv, sections, restrict_vocab=300000, case_insensitive=True) -> dict:
    """3CosAdd accuracy as flat counts: ``{"accuracy", "correct", "answered", "skipped",
    "total", "sections": [...]}`` where ``accuracy = correct / answered`` (0.0 when nothing was
    answered, as gensim) and each section entry has ``section``, ``correct``, ``answered``,
    ``accuracy``. ``sections`` is as for :func:`analogy_answers`."""
    answers = analogy_answers(kv, sections, restrict_vocab, case_insensitive)

    def acc(c, n):
        return c / n if n else 0.0  # gensim's convention for an empty section

    per = []
    for name, rows in answers:
        correct = sum(c for _, _, c in rows)
        answered = sum(a for _, a, _ in rows)
        per.append({"section": name, "correct": correct, "answered": answered,
                    "accuracy": acc(correct, answered)})  # fmt: skip
    n_correct = sum(s["correct"] for s in per)
    n_answered = sum(s["answered"] for s in per)
    total = sum(len(rows) for _, rows in answers)
    return {
        "accuracy": acc(n_correct, n_answered),
        "correct": n_correct,
        "answered": n_answered,
        "skipped": total - n_answered,
        "total": total,
        "sections": per,
    }


def evaluate_word_analogies(
    kv,
    analogies,
    restrict_vocab: int = 300000,
    case_insensitive: bool = True,
    dummy4unknown: bool = False,
    similarity_function: str = "most_similar",
):
    """``(score, sections)`` as gensim: 3CosAdd accuracy over the questions whose words are
    all among the first ``restrict_vocab`` keys (the others skipped, or counted wrong with
    ``dummy4unknown``), and per section ``{"section", "correct": [...], "incorrect": [...]}``
    with the questions (upper-cased when ``case_insensitive``), then ``"Total accuracy"``."""
    if similarity_function != "most_similar":
        raise ValueError(f"similarity_function={similarity_function!r}: only 'most_similar'")
    if isinstance(analogies, (str, Path)):
        analogies = load_analogies(analogies)
    results, n_oov, n_all = [], 0, 0
    for name, rows in analogy_answers(kv, analogies, restrict_vocab, case_insensitive):
        section = {"section": name, "correct": [], "incorrect": []}
        for q, answered, correct in rows:
            n_all += 1
            n_oov += not answered
            if answered or dummy4unknown:
                section["correct" if correct else "incorrect"].append(q)
        results.append(section)
    total = {
        "section": "Total accuracy",
        "correct": [q for s in results for q in s["correct"]],
        "incorrect": [q for s in results for q in s["incorrect"]],
    }
    results.append(total)
    for s in results:
        n = len(s["correct"]) + len(s["incorrect"])
        if n:
            log.info("%s: %.1f%% (%i/%i)", s["section"], 100 * len(s["correct"]) / n,
                     len(s["correct"]), n)  # fmt: skip
    if n_all:
        log.info("Quadruplets with out-of-vocabulary words: %.1f%%", 100.0 * n_oov / n_all)
    n = len(total["correct"]) + len(total["incorrect"])
    return (len(total["correct"]) / n if n else 0.0), results
