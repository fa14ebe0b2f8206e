"""KeyedVectors: lookup, similarity, evaluation and word2vec files, against float64 references and,
where gensim is installed, against gensim's KeyedVectors on the same vectors."""

import math

import numpy as np
import pytest

from ns_plugins.embeddings import KeyedVectors, load_analogies, load_similarity
from ns_plugins.embeddings.statistics import betainc, pearson, spearman, with_p_value
from ns_plugins.errors import UsageError


def _world(seed, n=400, dim=16):
    """Random vectors; a few rare words are upper-case variants of frequent ones."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(n)]
    for i, j in zip(rng.choice(range(n // 2, n), 20, replace=False), rng.choice(n // 2, 20, False)):
        words[i] = f"W{j}"
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    return words, vecs, rng


def _pairs_file(path, words, rng, n=80):
    lines = ["# comment"]
    for _ in range(n):
        a, b = rng.choice(words, 2, replace=False)
        if rng.random() < 0.1:
            b = "unknownword"
        lines.append(f"{a.upper() if rng.random() < 0.3 else a}\t{b}\t{rng.uniform(0, 10):.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _analogy_file(path, words, rng, n=200):
    lines = []
    for i in range(n):
        if i % 50 == 0:
            lines.append(f": section-{i // 50}")
        q = [str(w) for w in rng.choice(words[:300], 4)]
        if rng.random() < 0.1:
            q[3] = "unknownword"
        lines.append(" ".join(q))
    path.write_text("\n".join(lines) + "\n")
    return path


def _unit64(vecs):
    v = vecs.astype(np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_lookup_and_missing_key():
    words, vecs, _ = _world(0)
    kv = KeyedVectors.from_words(words, vecs)
    assert len(kv) == 400 and kv.vector_size == 16
    assert kv.index_to_key[3] == words[3] and kv.key_to_index[words[3]] == 3
    np.testing.assert_array_equal(kv["w1"], vecs[1])
    np.testing.assert_array_equal(kv[["w2", "w1"]], vecs[[2, 1]])
    assert "w1" in kv and "nope" not in kv
    with pytest.raises(KeyError, match="'nope'"):
        kv["nope"]
    with pytest.raises(KeyError, match="'nope'"):
        kv.most_similar("nope")
    normed = kv.get_normed_vectors()
    np.testing.assert_allclose(normed, _unit64(vecs), atol=1e-6)
    np.testing.assert_allclose(kv.get_vector("w5", norm=True), normed[5])
    with pytest.raises(ValueError, match="duplicate word 'a'"):
        KeyedVectors.from_words(["a", "b", "a"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2 words for 3 vectors"):
        KeyedVectors.from_words(["a", "b"], np.zeros((3, 2)))


def test_add_vectors():
    kv = KeyedVectors(3)
    kv.add_vectors(["a", "b"], np.eye(3)[:2])
    kv.add_vectors(["b", "c"], np.ones((2, 3)))
    assert kv.index_to_key == ["a", "b", "c"]
    np.testing.assert_array_equal(kv["b"], [0, 1, 0])  # an existing key keeps its vector
    kv.add_vectors(["b"], np.full((1, 3), 2.0), replace=True)
    np.testing.assert_array_equal(kv["b"], [2, 2, 2])
    assert kv.similarity("b", "c") == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(3))
def test_most_similar_against_float64(seed):
    words, vecs, rng = _world(seed)
    kv = KeyedVectors.from_words(words, vecs)
    unit = _unit64(vecs)
    pos, neg = [words[i] for i in rng.choice(400, 2, False)], [words[int(rng.integers(400))]]
    ids = [words.index(w) for w in pos + neg]
    target = unit[ids[0]] + unit[ids[1]] - unit[ids[2]]
    target /= np.linalg.norm(target)
    scores = unit @ target
    order = [j for j in np.argsort(-scores) if j not in ids][:7]
    got = kv.most_similar(positive=pos, negative=neg, topn=7)
    assert [w for w, _ in got] == [words[j] for j in order]
    np.testing.assert_allclose([s for _, s in got], scores[order], atol=1e-5)
    assert kv.most_similar(pos[0], topn=0) == []
    assert kv.most_similar(pos[0], topn=None).shape == (400,)
    assert all(kv.key_to_index[w] < 50 for w, _ in kv.most_similar(pos[0], restrict_vocab=50))
    assert kv.similarity(pos[0], neg[0]) == pytest.approx(unit[ids[0]] @ unit[ids[2]], abs=1e-6)


def test_doesnt_match_picks_the_outlier():
    vecs = np.array([[1, 0.1, 0], [1, 0, 0.1], [0.9, 0.1, 0.1], [0, 0, 1]], dtype=np.float32)
    kv = KeyedVectors.from_words(["a", "b", "c", "d"], vecs)
    assert kv.doesnt_match(["a", "b", "c", "d"]) == "d"
    assert kv.doesnt_match(["a", "b", "d", "missing"]) == "d"
    with pytest.raises(ValueError, match="empty list"):
        kv.doesnt_match(["missing"])


def test_p_values_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (5, 30, 300):
        a = rng.standard_normal(n)
        b = a * rng.uniform(0, 2) + rng.standard_normal(n)
        r = stats.pearsonr(a, b)
        ours = with_p_value(pearson(a, b), n)
        assert ours[0] == pytest.approx(r[0], abs=1e-12)
        assert ours[1] == pytest.approx(r[1], rel=1e-8, abs=1e-300)
        s = stats.spearmanr(a, b)
        ours = with_p_value(spearman(a, b), n)
        assert ours.correlation == pytest.approx(s[0], abs=1e-12)
        assert ours.pvalue == pytest.approx(s[1], rel=1e-8, abs=1e-300)
    special = pytest.importorskip("scipy.special")
    for a, b, x in [(0.5, 0.5, 0.3), (14.0, 0.5, 0.99), (150.0, 0.5, 0.2), (3.0, 7.0, 0.6)]:
        assert betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-10)


def test_evaluate_word_pairs_against_float64(tmp_path):
    words, vecs, rng = _world(1)
    path = _pairs_file(tmp_path / "pairs.tsv", words, rng)
    kv = KeyedVectors.from_words(words, vecs)
    pearson, spearman, oov_ratio = kv.evaluate_word_pairs(path)
    index = {}
    for i, w in enumerate(words):
        index.setdefault(w.upper(), i)
    gold, model, oov = [], [], 0
    unit = _unit64(vecs)
    for a, b, s in load_similarity(path):
        if a.upper() in index and b.upper() in index:
            gold.append(s)
            model.append(unit[index[a.upper()]] @ unit[index[b.upper()]])
        else:
            oov += 1
    assert pearson[0] == pytest.approx(np.corrcoef(gold, model)[0, 1], abs=1e-9)
    assert 0 <= pearson[1] <= 1 and 0 <= spearman[1] <= 1
    assert oov_ratio == pytest.approx(100 * oov / (oov + len(gold)))
    with pytest.raises(ValueError, match="No valid similarity judgements"):
        kv.evaluate_word_pairs([("zz", "yy", 1.0)])


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_files_round_trip(tmp_path, binary):
    words, vecs, _ = _world(2, n=50)
    kv = KeyedVectors.from_words(words, vecs, counts=np.arange(50, 0, -1))
    path = tmp_path / ("v.bin" if binary else "v.txt")
    kv.save_word2vec_format(path, fvocab=tmp_path / "vocab.txt", binary=binary)
    back = KeyedVectors.load_word2vec_format(path, tmp_path / "vocab.txt", binary=binary)
    assert back.index_to_key == words
    np.testing.assert_array_equal(back.vectors, vecs)
    assert back.get_vecattr(words[0], "count") == 50
    assert len(KeyedVectors.load_word2vec_format(path, binary=binary, limit=7)) == 7
    kv.save(tmp_path / "kv.npz")
    again = KeyedVectors.load(tmp_path / "kv.npz")
    assert again.index_to_key == words and np.array_equal(again.vectors, vecs)
    np.testing.assert_array_equal(again.counts, kv.counts)


# ------------------------------------------------------------------------------- evaluation files
@pytest.mark.parametrize(
    ("content", "loader", "message"),
    [
        (b"", load_similarity, "no 'word<TAB>word<TAB>score' lines"),
        (b"# only comments\n", load_similarity, "no 'word<TAB>word<TAB>score' lines"),
        (b": capital\nathens greece baghdad iraq\n", load_similarity, "not a word-similarity"),
        (b"tiger\tcat\t7.35\n", load_analogies, "question before the first"),
        (b"", load_analogies, "no ': section' header"),
        (b": one\n: two\nshort line\n", load_analogies, "no 'a b c d' question lines"),
        (b"a\tb\t1\n\xff\xfe\n", load_similarity, "not utf-8 text"),
        (b": one\na b c \xe9\n", load_analogies, "not utf-8 text"),
    ],
)
def test_bad_evaluation_files(tmp_path, content, loader, message):
    path = tmp_path / "file.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message) as info:
        loader(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------- against gensim
def _gensim_kv(tmp_path, words, vecs):
    keyedvectors = pytest.importorskip("gensim.models.keyedvectors")
    path = tmp_path / "g.txt"
    KeyedVectors.from_words(words, vecs).save_word2vec_format(path)
    return keyedvectors.KeyedVectors.load_word2vec_format(path)


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_gensim(tmp_path, seed):
    words, vecs, rng = _world(seed)
    theirs = _gensim_kv(tmp_path, words, vecs)
    ours = KeyedVectors.from_words(words, vecs)
    for _ in range(5):
        pos = [str(w) for w in rng.choice(words, 2, replace=False)]
        neg = [str(rng.choice(words))]
        if neg[0] in pos:
            continue
        a = ours.most_similar(positive=pos, negative=neg, topn=10)
        b = theirs.most_similar(positive=pos, negative=neg, topn=10)
        assert [w for w, _ in a] == [w for w, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-6)
        assert ours.similarity(pos[0], neg[0]) == pytest.approx(
            float(theirs.similarity(pos[0], neg[0])), abs=1e-6
        )
        group = [str(w) for w in rng.choice(words, 6, replace=False)]
        assert ours.doesnt_match(group) == theirs.doesnt_match(group)
    for restrict in (300000, 250):
        pairs = _pairs_file(tmp_path / "pairs.tsv", words, rng)
        (p, pp), (s, sp), oov = ours.evaluate_word_pairs(pairs, restrict_vocab=restrict)
        (gp, gpp), (gs, gsp), goov = theirs.evaluate_word_pairs(pairs, restrict_vocab=restrict)
        assert (p, s, oov) == pytest.approx((gp, gs, goov), abs=1e-6)
        assert (pp, sp) == pytest.approx((gpp, gsp), rel=1e-4, abs=1e-12)
        questions = _analogy_file(tmp_path / "q.txt", words, rng)
        score, sections = ours.evaluate_word_analogies(questions, restrict_vocab=restrict)
        g_score, g_sections = theirs.evaluate_word_analogies(questions, restrict_vocab=restrict)
        assert score == pytest.approx(g_score, abs=1e-12)
        assert [s["section"] for s in sections] == [s["section"] for s in g_sections]
        for a, b in zip(sections, g_sections):
            assert sorted(a["correct"]) == sorted(b["correct"])
            assert sorted(a["incorrect"]) == sorted(b["incorrect"])


@pytest.mark.parametrize("binary", [False, True])
def test_files_interchange_with_gensim(tmp_path, binary):
    keyedvectors = pytest.importorskip("gensim.models.keyedvectors")
    words, vecs, _ = _world(4, n=60)
    ours_path, theirs_path = tmp_path / "ours", tmp_path / "theirs"
    KeyedVectors.from_words(words, vecs).save_word2vec_format(ours_path, binary=binary)
    g = keyedvectors.KeyedVectors.load_word2vec_format(ours_path, binary=binary)
    assert g.index_to_key == words and np.array_equal(g.vectors, vecs)
    g.save_word2vec_format(str(theirs_path), binary=binary)
    back = KeyedVectors.load_word2vec_format(theirs_path, binary=binary)
    assert back.index_to_key == words
    np.testing.assert_allclose(back.vectors, vecs, rtol=1e-6 if not binary else 0)


def test_empty_section_scores_zero(tmp_path):
    words, vecs, _ = _world(5, n=60)
    path = tmp_path / "q.txt"
    path.write_text(": known\nw1 w2 w3 w4\n: unknown\nx y z q\n")
    score, sections = KeyedVectors.from_words(words, vecs).evaluate_word_analogies(path)
    assert [s["section"] for s in sections] == ["known", "unknown", "Total accuracy"]
    assert sections[1]["correct"] == sections[1]["incorrect"] == []
    assert not math.isnan(score)
