"""Failures users met in the data readers and the commands, each answered by one sentence:
data files that are not UTF-8, an empty language-model split, broken runs under
``attnlstm-compare``, options the run commands could not take, output paths that cannot be
written, and corrupt checkpoints."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from attnlstm import compare
from attnlstm.cli import evaluate, generate, tag, translate
from attnlstm.config import LanguageModelTaskConfig
from attnlstm.data.conllu import read_conllu
from attnlstm.data.corpus import read_words
from attnlstm.data.seq2seq import read_sentence_pairs
from attnlstm.data.text_classification import read_labelled_texts
from attnlstm.errors import ConfigError
from attnlstm.tasks.language_model import LanguageModelTask
from tests.conftest import only_run_dir, run_cli
from tests.test_cli_commands import RUN_ARGS

REPO = Path(__file__).resolve().parents[1]
LM_FIXTURE = REPO / "tests" / "fixtures" / "lm"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# -- data files that are not UTF-8 ----------------------------------------------------------

CONLLU_WORD = "1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n"


def _read_conllu(path: Path) -> object:
    return read_conllu(path)


def _read_tsv(path: Path) -> object:
    return read_labelled_texts(path, "label", "text", "\t")


def _read_csv(path: Path) -> object:
    return read_labelled_texts(path, "label", "text", ",")


#: each reader, a text of its format whose line 3 holds "café" in Latin-1 (é = 0xE9)
READERS: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "conllu": (
        _read_conllu,
        "train.conllu",
        f"# text = Hi cafe\n{CONLLU_WORD}2\tcaf\xe9\tcafe\tNOUN\tNN\t_\t1\tobj\t_\t_\n",
    ),
    "lm": (read_words, "ptb.valid.txt", "the cat\r\nsat on\r\nthe caf\xe9 mat\n"),
    "pairs": (read_sentence_pairs, "eng-fra.txt", "Go.\tVa !\nHi.\tSalut !\nCafe.\tCaf\xe9 !\n"),
    "tsv": (_read_tsv, "train.tsv", "label\ttext\r\n1\tgood\r\n0\tcaf\xe9 bad\r\n"),
    "csv": (_read_csv, "train.csv", 'label,text\n1,"good, fine"\n0,caf\xe9\n'),
}


@pytest.mark.parametrize("kind", READERS)
def test_a_file_that_is_not_utf8_names_file_line_byte_and_the_fix(
    kind: str, tmp_path: Path
) -> None:
    read, name, text = READERS[kind]
    path = tmp_path / name
    data = text.encode("latin-1")
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        read(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and "line 3" in message
    assert f"byte {data.index(0xE9)} " in message and "0xE9" in message
    assert "iconv -f latin1 -t utf-8" in message


def test_the_byte_offset_counts_from_the_start_of_the_file(tmp_path: Path) -> None:
    """Python's decoder reads in chunks of about 8 KiB and counts from the chunk's start."""
    path = tmp_path / "train.txt"
    good = "".join(f"word{i} and more words\n" for i in range(3000)).encode()
    path.write_bytes(good + b"caf\xe9\n")
    with pytest.raises(
        ConfigError, match=rf"byte {len(good) + 3} is not UTF-8 \(0xE9 on line 3001"
    ):
        read_words(path)


def test_a_utf8_file_with_a_byte_order_mark_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "train.conllu"
    path.write_bytes(b"\xef\xbb\xbf" + CONLLU_WORD.encode())
    assert read_conllu(path)[0].words == ("Hi",)


def test_training_on_a_latin1_corpus_is_one_error_line_and_leaves_no_run(
    tmp_path: Path,
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (corpus / name).write_bytes((LM_FIXTURE / name).read_bytes())
    with (corpus / "valid.txt").open("ab") as handle:
        handle.write("le caf\xe9 est ouvert\n".encode("latin-1"))
    cwd = tmp_path / "cwd"
    args = ["task=lm", f"task.path={corpus}", "model=lm", "device=cpu"]
    result = run_cli([*args, f"hydra.run.dir={cwd / 'run'}"], cwd, check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(corpus / "valid.txt") in lines[0] and "not UTF-8" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (cwd / "run").exists() and list(cwd.iterdir()) == []


# -- an empty language-model split ------------------------------------------------------------


def _lm_task(tmp_path: Path, valid: str, **overrides: Any) -> LanguageModelTask:
    """The ``lm`` task on the fixture corpus with ``valid`` as its validation text."""
    for name in ("train.txt", "test.txt"):
        (tmp_path / name).write_bytes((LM_FIXTURE / name).read_bytes())
    (tmp_path / "valid.txt").write_text(valid)
    overrides.setdefault("batch_size", 2)
    overrides.setdefault("eval_batch_size", 2)
    files = {"train_file": "train.txt", "valid_file": "valid.txt", "test_file": "test.txt"}
    cfg = LanguageModelTaskConfig(name="lm", path=str(tmp_path), **files, **overrides)
    return LanguageModelTask(cfg, seed=0)


@pytest.mark.parametrize(
    ("valid", "says"), [("", "is empty"), ("\n\n  \n", "holds only blank lines")]
)
def test_an_empty_lm_split_names_its_file(tmp_path: Path, valid: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _lm_task(tmp_path, valid)
    message = str(caught.value)
    assert f"the valid file {tmp_path / 'valid.txt'} {says}" in message
    assert "lower task" not in message  # fewer rows cannot make text appear


def test_a_short_lm_split_names_its_file_and_both_fixes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _lm_task(tmp_path, "the cat\n", eval_batch_size=3)  # 3 tokens, 3 rows of 2 wanted
    message = str(caught.value)
    assert f"the valid file {tmp_path / 'valid.txt'} has 3 tokens" in message
    assert "task.eval_batch_size=3" in message and "at least 6 tokens" in message
    assert "lower task.eval_batch_size" in message
    with pytest.raises(ConfigError, match=r"task.max_train_tokens=3 keeps 3 tokens of the train"):
        _lm_task(tmp_path, "the cat sat on the mat\n", max_train_tokens=3)


# -- attnlstm-compare on broken runs and read-only folders -----------------------------------


def _write_run(folder: Path, lr: float, loss: float) -> None:
    """A run folder as the trainer leaves it: metrics.json and config.yaml."""
    folder.mkdir(parents=True)
    metrics = {
        "status": "completed",
        "epochs": 2,
        "monitor": {"metric": "val/loss", "mode": "min"},
        "best": {"epoch": 2, "val/loss": loss},
        "test": {"test/loss": loss},
        "history": [{"epoch": 1, "val/loss": loss + 1}, {"epoch": 2, "val/loss": loss}],
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(f"model:\n  name: lm\noptim:\n  lr: {lr}\n")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Two good runs and three whose metrics.json cannot be used."""
    root = tmp_path / "sweep"
    _write_run(root / "lr=0.1", 0.1, 2.0)
    _write_run(root / "lr=0.01", 0.01, 1.5)
    for name, text in [("cut", '{"test": {"test/loss": 1.'), ("list", "[]"), ("text", '"x"')]:
        (root / name).mkdir()
        (root / name / "metrics.json").write_text(text)
    return root


def _compare(args: Sequence[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = compare.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_compare_skips_unreadable_metrics_with_one_warning_each(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _compare([sweep, "--no-plot"], capsys)
    assert status == 0
    rows = out.strip().splitlines()[2:]
    assert [row.split("|")[1].strip() for row in rows] == ["lr=0.01", "lr=0.1"]  # by test/loss
    warnings = err.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("warning: skipped ") for w in warnings)
    for name in ("cut", "list", "text"):
        assert sum(str(sweep / name / "metrics.json") in w for w in warnings) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("blocked", ["a folder in the way", "a read-only folder"])
def test_compare_shows_the_table_when_the_plot_cannot_be_written(
    sweep: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    """The plot goes to ROOT/val_curves.png by default."""
    if blocked == "a folder in the way":
        (sweep / "val_curves.png").mkdir()
    elif IS_ROOT:  # root writes into read-only folders: the refusal the OS would give
        from matplotlib.figure import Figure

        def refused(self: Figure, path: Path, **kwargs: Any) -> None:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(Figure, "savefig", refused)
    sweep.chmod(0o555 if blocked == "a read-only folder" else 0o755)
    try:
        status, out, err = _compare([sweep], capsys)
    finally:
        sweep.chmod(0o755)
    assert status == 0
    assert len(out.strip().splitlines()) == 4  # header, rule, two runs
    (line,) = [w for w in err.splitlines() if "val_curves.png" in w]
    assert line.startswith(f"warning: could not write the validation curves to {sweep}")
    assert "--plot" in line and "Traceback" not in err


def test_compare_without_runs_is_one_sentence_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        compare.main([str(tmp_path)])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: no readable runs under {tmp_path}") and err.count("\n") == 1


# -- the run commands ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny trained ``lm`` and ``seq2seq`` run folder."""
    folders = {}
    for kind in ("lm", "seq2seq"):
        cwd = tmp_path_factory.mktemp(kind)
        run_cli(RUN_ARGS[kind], cwd)
        folders[kind] = only_run_dir(cwd / "outputs")
    return folders


def call(
    command: ModuleType, args: Sequence[object], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``command.main(args)`` in-process: (exit status, stdout, stderr)."""
    status = command.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def one_error_line(err: str) -> str:
    """The single ``error: ...`` line of a command's stderr (no traceback)."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_translate_takes_sentences_after_its_options(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = call(translate, [runs["seq2seq"], "--beam", "2", "s1 s2", "s3"], capsys)
    assert status == 0, err
    assert [line.split(" -> ")[0] for line in out.splitlines()] == ["s1 s2", "s3"]


@pytest.mark.parametrize(
    ("command", "kind", "args", "message"),
    [
        (generate, "lm", ["--words", "0"], "--words must be at least 1, got 0"),
        (generate, "lm", ["--words", "-5"], "--words must be at least 1, got -5"),
        (generate, "lm", ["--temperature", "0"], "--temperature must be positive"),
        (generate, "lm", ["--temperature", "-1"], "--temperature must be positive"),
        (generate, "lm", ["--temperature", "nan"], "--temperature must be positive"),
        (generate, "lm", ["--seed", str(2**70)], "--seed must be between 0 and"),
        (translate, "seq2seq", ["s1", "--beam", "0"], "--beam must be at least 1, got 0"),
        (translate, "seq2seq", ["--beam", "-3", "s1"], "--beam must be at least 1, got -3"),
        (translate, "seq2seq", ["s1", "--length-penalty", "nan"], "--length-penalty must be"),
    ],
)
def test_nonsensical_numbers_are_usage_errors(
    command: ModuleType,
    kind: str,
    args: list[str],
    message: str,
    runs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = call(command, [runs[kind], *args], capsys)
    assert status == 2 and out == ""
    assert message in one_error_line(err)


def test_a_png_folder_that_cannot_be_made_is_refused_before_translating(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    png = tmp_path / "notes.txt" / "maps"
    status, out, err = call(translate, [runs["seq2seq"], "s1 s2", "--png", png], capsys)
    assert status == 2 and out == ""  # nothing translated, then a traceback
    assert f"--png {png}" in one_error_line(err)


def test_a_read_only_png_folder_is_refused_before_translating(
    runs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if IS_ROOT:  # root may write anywhere: the answer os.access gives other users
        real_access = os.access

        def access(path: Any, mode: int, **kwargs: Any) -> bool:
            return Path(path) != locked and real_access(path, mode, **kwargs)

        monkeypatch.setattr(os, "access", access)
    try:
        status, out, err = call(
            translate, [runs["seq2seq"], "s1", "--png", locked / "maps"], capsys
        )
    finally:
        locked.chmod(0o755)
    assert status == 2 and out == ""
    assert f"{locked} is not writable" in one_error_line(err)


def test_evaluate_refuses_an_out_file_in_a_missing_folder_before_the_work(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "no" / "such" / "eval.json"
    status, out, err = call(evaluate, [runs["lm"], "--out", out_file], capsys)
    assert status == 2 and out == ""
    assert str(out_file) in one_error_line(err)


def test_evaluate_shows_a_progress_bar_on_a_terminal(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bars: list[tuple[dict[str, Any], Any, io.StringIO]] = []
    real_tqdm = evaluate.tqdm

    def terminal_tqdm(*args: Any, **kwargs: Any) -> Any:
        """The bar evaluate asks for, drawn (as on a terminal) into a buffer."""
        screen = io.StringIO()
        bar = real_tqdm(*args, **{**kwargs, "disable": False, "file": screen})
        bars.append((kwargs, bar, screen))
        return bar

    monkeypatch.setattr(evaluate, "tqdm", terminal_tqdm)
    status, out, err = call(evaluate, [runs["lm"]], capsys)
    assert status == 0, err
    ((asked, bar, screen),) = bars
    assert asked["disable"] is None  # drawn on a terminal only, not into logs or pipes
    assert asked.get("file", sys.stderr) is sys.stderr  # never into the JSON on stdout
    assert asked["total"] >= 1 and bar.n == asked["total"]  # one step per batch
    assert "evaluating test" in screen.getvalue()
    assert json.loads(out)["split"] == "test"


@pytest.mark.parametrize("damage", ["random bytes", "cut in half"])
@pytest.mark.parametrize(
    ("command", "extra"),
    [(generate, []), (tag, ["The dog"]), (translate, ["s1"]), (evaluate, [])],
)
def test_a_corrupt_checkpoint_is_one_sentence_naming_the_file(
    command: ModuleType,
    extra: list[str],
    damage: str,
    runs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    good = (runs["lm"] / "best.pt").read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    broken = os.urandom(4096) if damage == "random bytes" else good[: len(good) // 2]
    (run / "best.pt").write_bytes(broken)
    status, out, err = call(command, [run, *extra], capsys)
    assert status == 2 and out == ""
    line = one_error_line(err)
    assert f"{run / 'best.pt'} is not a readable attnlstm checkpoint" in line
    assert "weights_only" not in line


def test_ATTNLSTM_DEBUG_adds_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    args = [tmp_path / "nowhere", "s1"]
    monkeypatch.delenv("ATTNLSTM_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    status, _, err = call(translate, args, capsys)
    assert status == 2 and "no checkpoint at" in one_error_line(err)
    monkeypatch.setenv("ATTNLSTM_DEBUG", "1")
    status, out, err = call(translate, args, capsys)
    assert status == 2 and out == ""
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith("error: no checkpoint at")


def test_input_that_is_not_utf8_on_stdin_is_one_sentence(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO("s1 caf\xe9\n".encode("latin-1")), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    status, out, err = call(translate, [runs["seq2seq"]], capsys)
    assert status == 2 and out == ""
    assert "standard input is not UTF-8" in one_error_line(err)


def test_the_script_reports_a_corrupt_run_without_a_traceback(tmp_path: Path) -> None:
    """The console path: ``python scripts/generate.py`` with its real stderr and exit code."""
    (tmp_path / "best.pt").write_bytes(b"PK\x03\x04 not a zip archive")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "generate.py"), str(tmp_path), "--words", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "ATTNLSTM_DEBUG"},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "not a readable attnlstm checkpoint" in one_error_line(result.stderr)
