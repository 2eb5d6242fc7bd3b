"""Labelled texts from a TSV or CSV file: one example per row, a label and a text column.

Columns are picked by header name or by position (``"0"``, ``"1"``, ...). Line endings may be
LF or CRLF (SST-2's train.tsv has CRLF). Tab-separated files are read without quote handling
(a ``"`` is an ordinary character there, as in SST-2); comma-separated files follow the CSV
quoting rules. Texts are split on whitespace (SST-2 is tokenised already).
"""

from __future__ import annotations

import csv
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from attnlstm.data.corpus import Vocabulary
from attnlstm.data.textfile import NotUtf8Error, read_lines
from attnlstm.errors import ConfigError

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


class TextFileError(ConfigError):
    """A row that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class LabelledText:
    """One example: its label (as written in the file) and its tokens."""

    label: str
    tokens: tuple[str, ...]


#: the Penn Treebank's escapes of brackets and slashes, and the characters they stand for
PTB_ESCAPES = {
    "-lrb-": "(",
    "-rrb-": ")",
    "-lsb-": "[",
    "-rsb-": "]",
    "-lcb-": "{",
    "-rcb-": "}",
}


def unescape_ptb(token: str) -> str:
    """``-lrb-`` -> ``(`` (and the other brackets, either case), ``\\/`` -> ``/``."""
    return PTB_ESCAPES.get(token.lower(), token).replace("\\/", "/")


def _column_index(spec: str, header: Sequence[str] | None, path: Path, what: str) -> int:
    """The index of column ``spec``: a position (``"0"``), or a name in ``header``."""
    if spec.isdigit():
        return int(spec)
    if header is None:
        raise TextFileError(
            f"{path}: task.{what}={spec!r} is a column name, but task.header=false; give its"
            " position (0, 1, ...) instead"
        )
    if spec not in header:
        raise TextFileError(
            f"{path}:1: no column {spec!r} in the header (columns: {', '.join(header)})"
        )
    return list(header).index(spec)


def read_labelled_texts(
    path: Path,
    label_column: str,
    text_column: str,
    delimiter: str,
    header: bool = True,
    lowercase: bool = False,
    unescape: bool = False,
) -> list[LabelledText]:
    """The examples of ``path`` (``unescape``: :func:`unescape_ptb` on every token);
    :class:`TextFileError` naming the file and the line for a row without the columns, an
    empty text, or bytes that are not UTF-8."""
    path = Path(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    examples: list[LabelledText] = []
    try:
        rows = csv.reader(read_lines(path, newline=""), delimiter=delimiter, quoting=quoting)
        names = next(rows, None) if header else None
        label_index = _column_index(label_column, names, path, "label_column")
        text_index = _column_index(text_column, names, path, "text_column")
        needed = max(label_index, text_index) + 1
        for row in rows:
            line = rows.line_num
            if not row or row == [""]:
                continue  # a blank line
            if len(row) < needed:
                raise TextFileError(
                    f"{path}:{line}: {len(row)} column(s), need at least {needed}"
                    f" (delimiter {delimiter!r})"
                )
            text = row[text_index].strip()
            label = row[label_index].strip()
            tokens = tuple((text.lower() if lowercase else text).split())
            if unescape:
                tokens = tuple(unescape_ptb(t) for t in tokens)
            if not tokens or not label:
                raise TextFileError(f"{path}:{line}: empty {'text' if label else 'label'}")
            examples.append(LabelledText(label, tokens))
    except NotUtf8Error as error:  # the reader's own error type, as for a malformed row
        raise TextFileError(str(error)) from None
    if not examples:
        raise TextFileError(f"{path}: no examples")
    return examples


def make_vocabulary(texts: Iterable[Sequence[str]], min_count: int) -> Vocabulary:
    """``<pad>``, ``<unk>``, then the tokens seen at least ``min_count`` times, most frequent
    first (ties in order of first appearance)."""
    counts: Counter[str] = Counter()
    for tokens in texts:
        counts.update(tokens)
    vocab = Vocabulary([PAD, UNK])
    for token, count in counts.most_common():
        if count >= min_count:
            vocab.add(token)
    return vocab


def delimiter_for(file_name: str, configured: str | None) -> str:
    """``configured``, else a comma for ``.csv`` files and a tab for any other."""
    if configured:
        return configured
    return "," if file_name.lower().endswith(".csv") else "\t"


def char_ngrams(word: str, min_n: int, max_n: int) -> list[str]:
    """The character n-grams of ``<word>`` of ``min_n`` to ``max_n`` characters, shortest
    first, in order of position; the bracketed word itself only when it is one of them
    (fastText's subwords: ``char_ngrams("fun", 3, 4)`` = ``<fu, fun, un>, <fun, fun>``)."""
    marked = f"<{word}>"
    return [
        marked[start : start + n]
        for n in range(min_n, max_n + 1)
        for start in range(len(marked) - n + 1)
    ]


def subword_ids(word: str, buckets: int, min_n: int, max_n: int) -> list[int]:
    """The bucket of each of :func:`char_ngrams`: 1 + crc32(UTF-8 of the n-gram) mod
    ``buckets`` (0 is left for padding). CRC-32 rather than ``hash()``, which Python salts
    per process: the same word gets the same ids in every run and on every machine."""
    return [
        1 + zlib.crc32(ngram.encode("utf-8")) % buckets for ngram in char_ngrams(word, min_n, max_n)
    ]
