import base64
import io
import json
import re
import struct

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from ns_plugins.embeddings import save_word2vec  # noqa: E402
from ns_plugins.report import build_report, load_run  # noqa: E402
from ns_plugins.report.__main__ import main  # noqa: E402
from ns_plugins.report.plots import cluster_similarity_matrix  # noqa: E402
from ns_plugins.report.run import embedding_from_checkpoint, read_metrics_csv  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _clustered(seed=0, n_clusters=5, per=12, n_noise=15, dim=16):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)) * 2
    words, vecs, clusters = [], [], {}
    for i in range(n_clusters * per):
        c = i % n_clusters
        w = f"c{c}w{i // n_clusters}"
        words.append(w)
        clusters[w] = c
        vecs.append(centres[c] + 0.5 * rng.standard_normal(dim))
    for i in range(n_noise):
        words.append(f"other{i}")
        vecs.append(rng.standard_normal(dim))
    return words, np.array(vecs, dtype=np.float32), clusters


def _write_vocab(path, words):
    path.write_text("".join(f"{w}\t{1000 - i}\n" for i, w in enumerate(words)))


def _write_csv(path, n_steps=120):
    rng = np.random.default_rng(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "epoch,eval/planted_purity,eval/wordsim353_pairs,step,train/loss,train/lr,"
        "train/words_per_sec"
    ]
    for s in range(n_steps):
        loss = 4.0 * np.exp(-s / 40) + 1 + 0.1 * rng.random()
        lines.append(f"0,,,{s},{loss},{0.025 * (1 - s / n_steps)},{20000 + 1000 * rng.random()}")
        if s % 40 == 39:
            lines.append(f"0,{0.2 + s / 200},17,{s},,,")
    lines.append("0,nan,,120,,,")  # logged NaN is dropped, not plotted
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def run_dir(tmp_path):
    words, vecs, clusters = _clustered()
    run = tmp_path / "run"
    run.mkdir()
    save_word2vec(run / "vectors.txt", words, vecs)
    _write_vocab(run / "vocab.tsv", words)
    _write_csv(run / "csv" / "metrics.csv")
    (run / "metrics.json").write_text(
        json.dumps({"planted_purity": 0.93, "planted_analogy": 0.5, "words_per_sec": 21000.0})
    )
    truth = {"clusters": clusters, "analogies": [["c0w0", "c1w0", "c0w1", "c1w1"]]}
    (run / "ground_truth.json").write_text(json.dumps(truth))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        "model:\n  vector_size: 16\nreport:\n  words: [c3w2, notaword]\n"
    )
    return run


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _check_png(data: bytes):
    from PIL import Image

    width, height = _png_size(data)
    assert 500 <= width <= 2500 and 400 <= height <= 2500
    Image.open(io.BytesIO(data)).verify()  # decodes the chunks; raises on a corrupt file
    image = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    assert image.std() > 5  # not a blank canvas


def _check_self_contained(page: str) -> list[bytes]:
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"https?:|//[a-z]|<script|<link|@import|url\(", text, re.IGNORECASE)
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, re.IGNORECASE)
    assert all(r.startswith("data:image/png;base64,") for r in refs), refs
    return [base64.b64decode(r.split(",", 1)[1]) for r in refs]


def test_full_run_directory(run_dir):
    out = build_report(run_dir, words=["other3"])
    assert out == run_dir / "report.html"
    page = out.read_text(encoding="utf-8")
    images = _check_self_contained(page)
    assert len(images) == 3
    for png in images:
        _check_png(png)
    for name in ("report_training.png", "report_embeddings.png", "report_clusters.png"):
        assert (run_dir / name).read_bytes() in images
    # evaluation table, planted-structure glance line, config, version, neighbours
    assert "Planted clusters" in page and "0.9300" in page
    assert "random vectors would give about" in page
    assert "vector_size: 16" in page and "ns_plugins " in page
    assert "<b>c3w2</b>" in page and "<b>other3</b>" in page
    assert re.search(r"<b>notaword</b></td><td[^>]*>not in the vocabulary", page)
    assert 'class="same"' in page
    assert "Not found in the run directory" not in page


def test_neighbours_shown_are_the_true_nearest(run_dir):
    page = build_report(run_dir, words=["c2w5"]).read_text(encoding="utf-8")
    words, vecs, _ = _clustered()
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    sims = unit @ unit[words.index("c2w5")]
    sims[words.index("c2w5")] = -np.inf
    expected = [words[i] for i in np.argsort(-sims)[:8]]
    row = re.search(r"<tr><td><b>c2w5</b></td>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td[^>]*>([^ <]+) <span", row) == expected


def test_missing_pieces_are_reported(tmp_path):
    words, vecs, _ = _clustered()
    save_word2vec(tmp_path / "vectors.bin", words, vecs, binary=True)
    out = build_report(tmp_path / "vectors.bin", out=tmp_path / "r" / "page.html")
    page = out.read_text(encoding="utf-8")
    _check_self_contained(page)
    for piece in ("metrics.json", "csv/metrics.csv", "vocab.tsv", ".hydra/config.yaml"):
        assert piece in page
    assert "No training metrics were logged" in page
    assert not (tmp_path / "r" / "report_training.png").exists()
    _check_png((tmp_path / "r" / "report_embeddings.png").read_bytes())


def test_empty_directory_still_gives_a_page(tmp_path):
    page = build_report(tmp_path).read_text(encoding="utf-8")
    _check_self_contained(page)
    assert "vectors.txt / vectors.bin / checkpoints/*.ckpt" in page
    assert "No vectors" in page


def test_checkpoint_of_an_interrupted_run(tmp_path, run_dir):
    words, vecs, clusters = _clustered()
    run = tmp_path / "interrupted"
    (run / "checkpoints").mkdir(parents=True)
    _write_vocab(run / "vocab.tsv", words)
    (run / "ground_truth.json").write_text(json.dumps({"clusters": clusters}))
    state = {
        "model.out_embed.weight": torch.zeros(len(words), 16),
        "model.in_embed.weight": torch.from_numpy(vecs),
        "step": torch.tensor(3),
    }
    ckpt = run / "checkpoints" / "interrupted.ckpt"
    torch.save({"state_dict": state, "global_step": 7, "hyper_parameters": {"lr": 0.1}}, ckpt)
    np.testing.assert_array_equal(embedding_from_checkpoint(ckpt), vecs)

    assert main([str(ckpt), "--words", "c1w1"]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    _check_self_contained(page)
    assert "Vectors read from the checkpoint interrupted.ckpt" in page
    assert "planted structure" in page  # scored now: there was no metrics.json
    assert "<b>c1w1</b>" in page

    # the run directory finds the checkpoint itself when no vectors were exported
    assert load_run(run).vectors_from == ckpt


def test_checkpoint_without_vocabulary(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"in_embed.weight": torch.randn(30, 4)}}, ckpt)
    run = load_run(ckpt)
    assert run.words[:2] == ["#0", "#1"]
    assert any("words unknown" in n for n in run.notes)
    page = build_report(ckpt).read_text(encoding="utf-8")
    assert "words unknown" in page


def test_checkpoint_without_embedding(tmp_path):
    ckpt = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.randn(3, 3)}}, ckpt)
    with pytest.raises(ValueError, match=r"no input embedding.*layer\.weight"):
        embedding_from_checkpoint(ckpt)
    assert main([str(ckpt)]) == 2


def test_cli_reports_missing_path(tmp_path, capsys):
    assert main([str(tmp_path / "nothing")]) == 2
    assert "nothing at" in capsys.readouterr().err


def test_read_metrics_csv_sparse_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,train/loss,eval/x\n0,1.5,\n1,1.25,\n1,,0.5\n2,nan,\n")
    curves = read_metrics_csv(path)
    np.testing.assert_array_equal(curves["train/loss"][0], [0, 1])
    np.testing.assert_array_equal(curves["train/loss"][1], [1.5, 1.25])
    np.testing.assert_array_equal(curves["eval/x"][1], [0.5])


def test_unknown_projection(run_dir):
    with pytest.raises(ValueError, match="unknown projection"):
        build_report(run_dir, projection="mds")


def test_trainer_metrics_layout(run_dir):
    """metrics.json as the trainer writes it: scores under eval, config and neighbours beside."""
    (run_dir / ".hydra" / "config.yaml").unlink()
    metrics = {
        "global_step": 77,
        "final_loss": 1.25,
        "eval": {"planted_purity": 0.875, "wordsim353": None, "wordsim353_pairs": 0},
        "neighbours": {"c0w0": [["c0w1", 0.9]]},
        "interrupted": True,
        "interrupt_checkpoint": "checkpoints/interrupted.ckpt",
        "planted_learned": True,
        "config": {"eval": {"queries": ["c4w4"]}, "model": {"vector_size": 16}},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "interrupted at step 77" in page
    assert "planted structure was learned" in page
    assert "0.8750" in page  # the nested score reaches the evaluation table
    assert re.search(r"WordSim-353</td><td>[^<]*</td><td[^>]*>n/a", page)
    assert "vector_size: 16" in page  # config shown from metrics.json
    assert "<b>c4w4</b>" in page  # eval.queries get neighbour tables
    assert ".hydra/config.yaml" not in page
    assert "c0w1" not in page.split("Other recorded values")[1].split("</table>")[0]


def test_cluster_similarity_matrix_against_pairs():
    words, vecs, clusters = _clustered(seed=3, n_clusters=3, per=4)
    ids, mean = cluster_similarity_matrix(words, vecs, clusters)
    assert ids == [0, 1, 2]
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    for a in ids:
        for b in ids:
            sims = [
                float(unit[i] @ unit[j])
                for i, u in enumerate(words)
                for j, v in enumerate(words)
                if clusters.get(u) == a and clusters.get(v) == b and i != j
            ]
            assert mean[a, b] == pytest.approx(np.mean(sims), abs=1e-6)
    assert np.all(np.diag(mean) > mean.sum(axis=1) / 3 - 1e-9)  # tight clusters: diagonal wins


def test_optional_projection_missing_fails_early(run_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a)
    )
    with pytest.raises(ImportError, match="needs scikit-learn"):
        build_report(run_dir, projection="tsne")
    assert not (run_dir / "report.html").exists()


class _OpensAFile:
    """Unpickling this creates ``marker``: a stand-in for a file that runs code when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_bombs(tmp_path, marker):
    import pickle

    bomb = _OpensAFile(marker)
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(pickle.dumps({"state_dict": bomb}))
    saved = tmp_path / "saved.ckpt"
    torch.save({"state_dict": {"in_embed.weight": torch.randn(4, 2)}, "extra": bomb}, saved)
    npz = tmp_path / "objects.npz"
    np.savez(npz, in_embed=np.array([bomb, 1], dtype=object))
    return [plain, saved, npz]


def test_report_never_unpickles_a_checkpoint(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    for ckpt in _pickle_bombs(tmp_path, marker):
        assert not marker.exists()
        assert main([str(ckpt)]) == 2, ckpt
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refused" in err and str(ckpt) in err, err
        with pytest.raises(ValueError, match="refused"):
            load_run(ckpt)
        assert not marker.exists(), f"{ckpt.name} was unpickled"


def test_truncated_checkpoint_is_one_line(tmp_path, capsys):
    ckpt = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"in_embed.weight": torch.randn(40, 8)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    assert main([str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable torch checkpoint" in err, err


def test_cli_refuses_a_directory_with_nothing_to_report(tmp_path):
    import subprocess
    import sys

    (tmp_path / "notes.txt").write_text("not a run\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ns_plugins.report", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: nothing to report in") and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "report.html").exists()


_MARK = "OUTSIDE-THE-RUN"


def _outside_copy(tmp_path, name):
    """A file (or for "csv" a folder) outside the run directory holding the marker in the layout
    ``name`` expects."""
    outside = tmp_path / "elsewhere"
    outside.mkdir(exist_ok=True)
    if name == "csv":
        (outside / "csvdir").mkdir()
        (outside / "csvdir" / "metrics.csv").write_text(f"step,{_MARK}\n1,2.5\n2,3.5\n")
        return outside / "csvdir"
    target = outside / name.replace("/", "_")
    if name == ".hydra/config.yaml":
        target.write_text(f"secret: {_MARK}\n")
    elif name == "metrics.json":
        target.write_text(json.dumps({_MARK: 1.5, "planted_purity": 0.1234}))
    elif name == "csv/metrics.csv":
        target.write_text(f"step,{_MARK}\n1,2.5\n2,3.5\n")
    elif name == "ground_truth.json":
        target.write_text(json.dumps({"clusters": {_MARK: 0}}))
    elif name == "vectors.txt":
        save_word2vec(target, [_MARK, "b"], np.eye(2))
    elif name == "vocab.tsv":
        target.write_text(f"{_MARK}\t5\n")
    return target


@pytest.mark.parametrize(
    "name",
    [
        ".hydra/config.yaml",
        "metrics.json",
        "csv/metrics.csv",
        "csv",
        "ground_truth.json",
        "vectors.txt",
        "vocab.tsv",
    ],
)
def test_links_out_of_the_run_directory_are_not_read(tmp_path, run_dir, name):
    link = run_dir / name
    if link.is_dir():
        for p in sorted(link.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        link.rmdir()
    else:
        link.unlink()
    link.symlink_to(_outside_copy(tmp_path, name))
    run = load_run(run_dir)
    assert _MARK not in repr(vars(run))
    assert any("leads out of" in n and name in n for n in run.notes), run.notes
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert _MARK not in page and "0.1234" not in page
    assert "leads out of" in page


def test_links_inside_the_run_directory_are_followed(run_dir):
    (run_dir / "export").mkdir()
    (run_dir / "vectors.txt").rename(run_dir / "export" / "vectors.txt")
    (run_dir / "vectors.txt").symlink_to(run_dir / "export" / "vectors.txt")
    (run_dir / "metrics.json").rename(run_dir / "export" / "metrics.json")
    (run_dir / "metrics.json").symlink_to("export/metrics.json")  # relative, inside
    run = load_run(run_dir)
    assert run.words[:2] == ["c0w0", "c1w0"] and run.metrics["planted_purity"] == 0.93
    assert not any("leads out of" in n for n in run.notes)


def test_report_replaces_links_instead_of_writing_through_them(tmp_path, run_dir):
    victims = {}
    for name in ("report.html", "report_training.png"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("keep me")
        (run_dir / name).symlink_to(victims[name])
    build_report(run_dir)
    for name, victim in victims.items():
        assert victim.read_text() == "keep me"
        assert not (run_dir / name).is_symlink() and (run_dir / name).stat().st_size > 1000


def test_words_that_look_like_mathtext_are_drawn_as_text(tmp_path):
    # matplotlib parses "$...$" as math and raises on "$x^$": the page was never written
    words, vecs, clusters = _clustered(n_clusters=3, per=4, n_noise=4)
    odd = ["$x^$", "$\\frac{$", "$$", "a$b", "\\$", "_^{}"]
    words[: len(odd)] = odd
    clusters = {odd[i]: clusters.pop(w) for i, w in enumerate(list(clusters)[: len(odd)])}
    run = tmp_path / "run"
    run.mkdir()
    save_word2vec(run / "vectors.txt", words, vecs)
    (run / "ground_truth.json").write_text(json.dumps({"clusters": clusters}))
    _write_csv(run / "csv" / "metrics.csv")
    text = (run / "csv" / "metrics.csv").read_text().replace("eval/planted_purity", "eval/$x^$")
    (run / "csv" / "metrics.csv").write_text(text)
    out = build_report(run, words=["$x^$"])
    page = out.read_text(encoding="utf-8")
    assert "<b>$x^$</b>" in page
    for png in _check_self_contained(page):
        _check_png(png)
