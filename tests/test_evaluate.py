import math
import subprocess
import sys

import numpy as np
import pytest

from ns_plugins.app import evaluation as ev
from ns_plugins.embeddings import save_word2vec, spearman


def _analogy_world(seed, n_pairs=40, dim=16, noise=0.35):
    """Vocabulary of (x_i, y_i) pairs with y_i ~ x_i + offset, plus case variants and fillers.

    The noise is chosen so that some analogies come out right and some wrong.
    """
    rng = np.random.default_rng(seed)
    xs = [f"x{i}" for i in range(n_pairs)]
    ys = [f"y{i}" for i in range(n_pairs)]
    base = rng.standard_normal((n_pairs, dim))
    offset = rng.standard_normal(dim) * 1.5
    words = xs + ys + [f"f{i}" for i in range(30)] + ["X3", "Y7", "x5_", "F0"]
    vecs = np.concatenate(
        [
            base,
            base + offset + noise * rng.standard_normal((n_pairs, dim)),
            rng.standard_normal((30, dim)),
            rng.standard_normal((4, dim)),
        ]
    )
    # make one case variant a near copy of its lowercase form so it wins the ranking sometimes
    vecs[words.index("Y7")] = vecs[words.index("y7")] + 0.01 * rng.standard_normal(dim)
    order = rng.permutation(len(words))
    words = [words[i] for i in order]
    return words, vecs[order].astype(np.float32), rng


def _analogy_file(path, rng, n_pairs=40, n_questions=300):
    lines = []
    for s in range(3):
        lines.append(f": section-{s}")
        for _ in range(n_questions // 3):
            i, j = rng.choice(n_pairs, 2, replace=False)
            q = [f"x{i}", f"y{i}", f"x{j}", f"y{j}"]
            q = [w.upper() if rng.random() < 0.2 else w for w in q]
            if rng.random() < 0.1:
                q[rng.integers(4)] = "unknownword"
            lines.append(" ".join(q))
        lines.append("not a question at all")
    lines.append(": empty-section")
    path.write_text("\n".join(lines) + "\n")
    return path


def _pairs_file(path, words, rng, n=120):
    lines = ["# made-up word pairs", "# Word 1\tWord 2\tHuman (mean)"]
    for _ in range(n):
        # distinct words: several pairs of a word with itself would tie at cosine 1, and gensim
        # orders those by float32 rounding noise
        a, b = rng.choice(sorted({w.lower() for w in words}), 2, replace=False)
        if rng.random() < 0.15:
            b = "outofvocab"
        if rng.random() < 0.2:
            a = a.upper()
        lines.append(f"{a}\t{b}\t{rng.integers(0, 11)}")  # integer scores: many ties
    lines += ["broken line", "a\tb\tnot-a-number", f"{words[0]}\t{words[0]}\t10.0"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_similarity_skips_comments_and_bad_lines(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("# c\nA\tb\t1.5\nbad\nx\ty\tz\nc\td\t2\n\n")
    assert ev.load_similarity(p) == [("A", "b", 1.5), ("c", "d", 2.0)]
    p.write_text("# only comments\n")
    with pytest.raises(ValueError, match="no 'word<TAB>word<TAB>score'"):
        ev.load_similarity(p)
    with pytest.raises(FileNotFoundError, match="no evaluation file"):
        ev.load_similarity(tmp_path / "missing.tsv")


def test_load_analogies(tmp_path):
    p = tmp_path / "q.txt"
    p.write_text(": one\na b c d\nshort line\n: two\ne f g h\n")
    assert ev.load_analogies(p) == [
        ("one", [("a", "b", "c", "d")]),
        ("two", [("e", "f", "g", "h")]),
    ]
    p.write_text("a b c d\n: one\n")
    with pytest.raises(ValueError, match="before the first"):
        ev.load_analogies(p)


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, 40).astype(float)
    b = np.where(rng.random(40) < 0.3, 0.5, rng.standard_normal(40))
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)


def test_similarity_against_float64_reference(tmp_path):
    words, vecs, rng = _analogy_world(10)
    pairs = [(words[i], words[j], float(rng.random())) for i, j in rng.integers(0, 60, (50, 2))]
    pairs.append(("missing", words[0], 1.0))
    rho, used, oov = ev.similarity_spearman(words, vecs, pairs)
    v = vecs.astype(np.float64)
    index = {w: i for i, w in enumerate(words)}
    cos = [
        v[index[a]] @ v[index[b]] / np.linalg.norm(v[index[a]]) / np.linalg.norm(v[index[b]])
        for a, b, _ in pairs[:-1]
    ]
    gold = [s for *_, s in pairs[:-1]]
    ranks = [np.argsort(np.argsort(x)) for x in (gold, cos)]
    assert rho == pytest.approx(np.corrcoef(*ranks)[0, 1], abs=1e-9)
    assert (used, oov) == (50, 1)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("restrict", [300000, 90])
def test_similarity_matches_gensim(tmp_path, seed, restrict):
    kv_mod = pytest.importorskip("gensim.models.keyedvectors")
    words, vecs, rng = _analogy_world(seed)
    path = _pairs_file(tmp_path / "pairs.tsv", words, rng)
    kv = kv_mod.KeyedVectors.load_word2vec_format(save_word2vec(tmp_path / "v.txt", words, vecs))
    _, (g_rho, _), g_oov_ratio = kv.evaluate_word_pairs(path, restrict_vocab=restrict)
    rho, used, oov = ev.similarity_spearman(words, vecs, path, restrict_vocab=restrict)
    assert rho == pytest.approx(g_rho, abs=1e-6)
    assert 100.0 * oov / (used + oov) == pytest.approx(g_oov_ratio)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("restrict", [300000, 100])
def test_analogies_match_gensim(tmp_path, seed, restrict):
    kv_mod = pytest.importorskip("gensim.models.keyedvectors")
    words, vecs, rng = _analogy_world(seed)
    path = _analogy_file(tmp_path / "questions.txt", rng)
    kv = kv_mod.KeyedVectors.load_word2vec_format(save_word2vec(tmp_path / "v.txt", words, vecs))
    g_score, g_sections = kv.evaluate_word_analogies(path, restrict_vocab=restrict)
    res = ev.analogy_accuracy(words, vecs, path, restrict_vocab=restrict)
    assert res["accuracy"] == pytest.approx(g_score, abs=1e-12)
    total = g_sections[-1]
    assert res["correct"] == len(total["correct"])
    assert res["answered"] == len(total["correct"]) + len(total["incorrect"])
    assert 0 < res["correct"] < res["answered"]  # the test world is neither trivial nor hopeless
    assert res["total"] == 300 and res["skipped"] == 300 - res["answered"]
    assert len(res["sections"]) == len(g_sections) - 1 == 4
    for ours, theirs in zip(res["sections"], g_sections):
        assert ours["section"] == theirs["section"]
        assert ours["correct"] == len(theirs["correct"])
        assert ours["answered"] == len(theirs["correct"]) + len(theirs["incorrect"])
    assert res["sections"][-1] == {
        "section": "empty-section",
        "correct": 0,
        "answered": 0,
        "accuracy": 0.0,
    }


def _brute_force_analogy(words, vecs, questions):
    """Float64 3CosAdd over a lower-case vocabulary, one question at a time."""
    unit = vecs.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    index = {w: i for i, w in enumerate(words)}
    correct = answered = 0
    for q in questions:
        if not all(w in index for w in q):
            continue
        a, b, c, d = (index[w] for w in q)
        scores = unit @ (unit[b] - unit[a] + unit[c])
        scores[[a, b, c]] = -np.inf
        answered += 1
        correct += int(np.argmax(scores) == d)
    return correct, answered


def test_analogies_against_brute_force():
    words, vecs, rng = _analogy_world(7, noise=0.3)
    keep = [i for i, w in enumerate(words) if w == w.lower()]
    words, vecs = [words[i] for i in keep], vecs[keep]
    questions = [
        (f"x{i}", f"y{i}", f"x{j}", f"y{j}") for i, j in rng.integers(0, 40, (400, 2)) if i != j
    ]
    res = ev.analogy_accuracy(words, vecs, [("all", questions)])
    assert (res["correct"], res["answered"]) == _brute_force_analogy(words, vecs, questions)
    assert 0 < res["correct"] < res["answered"]


def test_nearest_neighbours_against_brute_force():
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(200)]
    vecs = rng.standard_normal((200, 8))
    got = ev.nearest_neighbours(words, vecs, ["w5", "missing", "w199", "w5"], k=4)
    assert list(got) == ["w5", "w199"]
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    for q, neighbours in got.items():
        scores = unit @ unit[words.index(q)]
        scores[words.index(q)] = -np.inf
        top = np.argsort(-scores)[:4]
        assert [w for w, _ in neighbours] == [words[i] for i in top]
        np.testing.assert_allclose([s for _, s in neighbours], scores[top], atol=1e-6)
    with pytest.raises(ValueError, match="k must be"):
        ev.nearest_neighbours(words, vecs, ["w1"], k=0)


def test_import_does_not_load_torch():
    code = "import sys, ns_plugins.app.evaluation, ns_plugins.report; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def _tied_world(seed, n=300, dim=6):
    """Vectors with no, one or four entries of +-1: unit vectors have entries 0, +-0.5 or +-1, so
    every score is exact in float32 and float64 alike, and many scores tie. Some of the rarer
    words are upper-case variants of frequent ones."""
    rng = np.random.default_rng(seed)
    vecs = np.zeros((n, dim), dtype=np.float32)
    for row in vecs:
        nonzero = rng.choice(dim, rng.choice([0, 1, 4, 4, 4]), replace=False)
        row[nonzero] = rng.choice([-1.0, 1.0], nonzero.size)
    words = [f"w{i}" for i in range(n)]
    variants = zip(rng.choice(range(n // 2, n), 30, replace=False), rng.choice(n // 2, 30, False))
    for i, j in variants:
        words[i] = f"W{j}"
    return words, vecs, rng


def _brute_force_3cosadd(words, vecs, question, restrict):
    """gensim's rule for one question, in float64: of the 5 best words other than the question
    words' own entries (equal scores lowest index first), the first whose upper-case form is not a
    question word's, else the last. Returns the answer's upper-case form."""
    unit = vecs[:restrict].astype(np.float64)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit /= np.where(norms > 0, norms, 1)
    index = {}
    for i, w in enumerate(words[:restrict]):
        index.setdefault(w.upper(), i)
    a, b, c = (index[w.upper()] for w in question)
    scores = unit @ (unit[b] - unit[a] + unit[c])
    scores[[a, b, c]] = -np.inf
    top = [j for j in np.argsort(-scores, kind="stable")[:5] if scores[j] > -np.inf]
    fresh = [j for j in top if index[words[j].upper()] not in (a, b, c)]
    return words[fresh[0] if fresh else top[-1]].upper() if top else None


@pytest.mark.parametrize("seed", range(3))
def test_tied_scores_against_brute_force(seed):
    torch = pytest.importorskip("torch")
    words, vecs, rng = _tied_world(seed)
    restrict = 250
    known = {w.upper() for w in words[:restrict]}
    sections, expected = [], []
    for i in range(300):
        # random case, repeated words, and now and then a word past restrict_vocab
        q = [w.swapcase() if rng.random() < 0.2 else w for w in rng.choice(words[:260], 3)]
        answerable = known.issuperset(w.upper() for w in q)
        answer = _brute_force_3cosadd(words, vecs, q, restrict) if answerable else None
        # the brute-force answer half the time (so most of them should come out right)
        d = answer.lower() if answer and rng.random() < 0.5 else str(rng.choice(words))
        sections.append((f"q{i}", [(*q, d)]))
        if known.issuperset(w.upper() for w in (*q, d)):
            expected.append({"answered": 1, "correct": int(d.upper() == answer)})
        else:
            expected.append({"answered": 0, "correct": 0})
    res = ev.analogy_accuracy(words, vecs, sections, restrict_vocab=restrict)
    assert [{k: s[k] for k in ("answered", "correct")} for s in res["sections"]] == expected
    assert 0 < res["correct"] < res["answered"] < res["total"]

    unit = vecs.astype(np.float64)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit /= np.where(norms > 0, norms, 1)
    queries = [str(w) for w in rng.choice(words, 40)]
    got = ev.nearest_neighbours(words, vecs, queries, k=7)
    assert got == ev.nearest_neighbours(words, torch.from_numpy(vecs), queries, k=7)
    for q, neighbours in got.items():
        scores = unit @ unit[words.index(q)]
        scores[words.index(q)] = -np.inf
        top = np.argsort(-scores, kind="stable")[:7]
        assert neighbours == [(words[j], scores[j]) for j in top]


def _planted(seed, n_clusters=4, per=15, dim=12, spread=0.2):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)) * 3
    words, vecs, clusters = [], [], {}
    for c in range(n_clusters):
        for i in range(per):
            w = f"c{c}_{i}"
            words.append(w)
            clusters[w] = c
            vecs.append(centres[c] + spread * rng.standard_normal(dim))
    return words, np.array(vecs), clusters, rng


def test_planted_scores():
    words, vecs, clusters, rng = _planted(0)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    # answers placed exactly on the 3CosAdd target direction b - a + c of unit vectors
    extra = {
        f"d{i}": unit[words.index(f"c1_{i}")] - unit[0] + unit[words.index("c2_0")] for i in (1, 2)
    }
    words += list(extra)
    vecs = np.vstack([vecs, *extra.values()])
    truth = {
        "clusters": clusters,
        "analogies": [
            ["c0_0", "c1_1", "c2_0", "d1"],
            ["c0_0", "c1_2", "c2_0", "d2"],
            ["zz", "a", "b", "c"],
        ],
    }
    scores = ev.planted_scores(words, vecs, truth)
    assert scores["planted_purity"] == pytest.approx(1.0)
    assert scores["planted_analogy"] == pytest.approx(1.0)
    assert scores["planted_analogy_answered"] == 2

    shuffled = rng.permutation(len(words))
    noise = ev.planted_scores(words, vecs[shuffled], {"clusters": clusters})
    assert 0.0 <= noise["planted_purity"] < 0.6
    # hand-computed purity on a tiny case: a's nearest is b (same), b's is a, c's is b (other)
    tiny = ev.planted_scores(
        ["a", "b", "c"],
        np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]),
        {"clusters": {"a": 0, "b": 0, "c": 1}},
        k=1,
    )
    assert tiny == {"planted_purity": pytest.approx(2 / 3)}


def test_evaluate_all_flat_keys(tmp_path):
    words, vecs, rng = _analogy_world(4)
    pairs = _pairs_file(tmp_path / "p.tsv", words, rng)
    questions = _analogy_file(tmp_path / "q.txt", rng)
    out = ev.evaluate_all(words, vecs, wordsim=pairs, simlex=pairs, analogies=questions)
    assert set(out) == {
        "wordsim353",
        "wordsim353_pairs",
        "wordsim353_oov",
        "simlex999",
        "simlex999_pairs",
        "simlex999_oov",
        "analogy",
        "analogy_correct",
        "analogy_answered",
        "analogy_skipped",
    }
    assert out["wordsim353"] == out["simlex999"] == ev.similarity_spearman(words, vecs, pairs)[0]
    assert out["analogy"] == ev.analogy_accuracy(words, vecs, questions)["accuracy"]
    assert ev.evaluate_all(words, vecs) == {}
    rho, used, oov = ev.similarity_spearman(words, vecs, [("nope", "none", 1.0)])
    assert math.isnan(rho) and (used, oov) == (0, 1)


def test_bad_shapes():
    with pytest.raises(ValueError, match="2 words for 3 vectors"):
        ev.nearest_neighbours(["a", "b"], np.zeros((3, 2)), ["a"])
    with pytest.raises(ValueError, match="2-D"):
        ev.similarity_spearman(["a"], np.zeros(3), [("a", "a", 1.0)])


@pytest.mark.parametrize(
    ("key", "content", "message"),
    [
        ("wordsim", b"", r"eval\.wordsim: .*no 'word<TAB>word<TAB>score' lines"),
        ("simlex", b": capital\nathens greece baghdad iraq\n", "not a word-similarity file"),
        ("analogies", b"tiger\tcat\t7.35\n", "question before the first ': section'"),
        ("analogies", b"\n\n", "no ': section' header"),
        ("analogies", b": one\n", "no 'a b c d' question lines"),
        ("wordsim", b"tiger\tcat\t7.35\n\x80\x81\tb\t1\n", "not utf-8 text"),
    ],
)
def test_check_eval_files_refuses_bad_files(tmp_path, key, content, message):
    from ns_plugins.errors import UsageError

    path = tmp_path / "eval.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message) as info:
        ev.check_eval_files({key: str(path)}, k=10)
    text = str(info.value)
    assert str(path) in text and f"eval.{key}" in text and "\n" not in text


def test_check_eval_files_reads_each_file_once(tmp_path):
    from ns_plugins.errors import UsageError

    sim = tmp_path / "sim.tsv"
    sim.write_text("a\tb\t1.5\nc\td\t2\n")
    questions = tmp_path / "q.txt"
    questions.write_text(": one\na b c d\n")
    parsed = ev.check_eval_files({"wordsim": sim, "analogies": questions}, k=1)
    assert parsed == {
        "wordsim": [("a", "b", 1.5), ("c", "d", 2.0)],
        "analogies": [("one", [("a", "b", "c", "d")])],
    }
    with pytest.raises(UsageError, match=r"eval\.k must be >= 1 .*got 0"):
        ev.check_eval_files({"wordsim": sim}, k=0)
    with pytest.raises(UsageError, match=r"evaluation file not found: eval\.simlex=.*nothere"):
        ev.check_eval_files({"simlex": tmp_path / "nothere"}, k=5)
    words = ["a", "b", "c", "d"]
    vecs = np.eye(4, dtype=np.float32)
    assert ev.evaluate_all(words, vecs, **parsed)["wordsim353_pairs"] == 2
