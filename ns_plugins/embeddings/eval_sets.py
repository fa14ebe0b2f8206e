"""Readers for word-embedding evaluation files.

- word pairs with human scores (``word1<TAB>word2<TAB>score``, ``#`` comments): the layout of
  gensim's bundled ``wordsim353.tsv`` and ``simlex999.txt``;
- analogies (``: section`` headers, then ``a b c d`` lines): Google's ``questions-words.txt``.

A file that cannot be decoded, has the wrong layout or holds no usable row raises ``UsageError``
naming it, in one line.
"""

from __future__ import annotations

from pathlib import Path

from ns_plugins.errors import UsageError

__all__ = ["load_analogies", "load_similarity"]


def _read_lines(path, encoding: str = "utf-8") -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation file at {path}")
    try:
        return path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as err:
        raise UsageError(
            f"{path}: not {encoding} text (byte {err.start} cannot be decoded); "
            "evaluation files are plain UTF-8 text"
        ) from None


def load_similarity(path, delimiter: str = "\t", encoding: str = "utf-8"):
    """Read word pairs with human scores: ``word1<TAB>word2<TAB>score`` lines, ``#`` comments.

    Returns ``[(word1, word2, score), ...]``. Lines that do not parse are skipped (as gensim
    does); a file with no valid pair raises ``UsageError``.
    """
    pairs = []
    for line in _read_lines(path, encoding):
        if not line or line.startswith("#"):
            continue
        parts = line.split(delimiter)
        if len(parts) != 3:
            continue
        try:
            score = float(parts[2])
        except ValueError:
            continue
        pairs.append((parts[0], parts[1], score))
    if not pairs:
        raise UsageError(
            f"{path}: no 'word<TAB>word<TAB>score' lines found; not a word-similarity file"
        )
    return pairs


def load_analogies(path, encoding: str = "utf-8"):
    """Read an analogy file: ``: section`` headers, then ``a b c d`` lines (``a:b = c:d``).

    Returns ``[(section, [(a, b, c, d), ...]), ...]``. Lines without exactly four words are
    skipped, as gensim does; a question before the first header, or a file with no header or no
    question, raises ``UsageError``.
    """
    sections: list[tuple[str, list]] = []
    for line_no, line in enumerate(_read_lines(path, encoding), 1):
        if line.startswith(": "):
            sections.append((line.lstrip(": ").strip(), []))
            continue
        if not sections:
            if not line.strip():
                continue
            raise UsageError(
                f"{path}: line {line_no}: question before the first ': section' line; "
                "not an analogy file"
            )
        parts = line.split()
        if len(parts) == 4:
            sections[-1][1].append(tuple(parts))
    if not sections:
        raise UsageError(f"{path}: no ': section' header found; not an analogy file")
    if not any(questions for _, questions in sections):
        raise UsageError(f"{path}: no 'a b c d' question lines found")
    return sections
