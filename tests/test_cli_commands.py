"""The run commands installed with the package: ``attnlstm-evaluate``, ``attnlstm-generate``,
``attnlstm-tag`` and ``attnlstm-translate`` (:mod:`attnlstm.cli`), on tiny runs of each kind:
their output, their one-line errors, and the same commands from an installed wheel."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import pytest

from attnlstm.cli import evaluate, generate, tag, translate
from attnlstm.data.corpus import UNK, read_words
from attnlstm.runs import load_run
from tests.conftest import TINY, install_wheel_in_fresh_venv, only_run_dir, run_cli

REPO = Path(__file__).resolve().parents[1]
LM_FIXTURE = REPO / "tests" / "fixtures" / "lm"
#: a run of each kind, in a few seconds each
RUN_ARGS: dict[str, list[str]] = {
    "lm": [
        "task=lm",
        f"task.path={LM_FIXTURE}",
        "task.batch_size=4",
        "task.eval_batch_size=2",
        "task.bptt=5",
        "model=lm",
        "attention=dot",
        "model.embedding_size=12",
        "model.hidden_size=12",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "device=cpu",
    ],
    "tagger": [
        "task=pos_toy",
        "model=tagger",
        "attention=dot",
        "model.word_embedding_size=8",
        "model.char_embedding_size=4",
        "model.char_hidden_size=4",
        "model.hidden_size=8",
        "optim.lr=0.05",
        "trainer.max_epochs=3",
        "trainer.progress_bar=false",
        "device=cpu",
    ],
    "seq2seq": [
        "task=reverse",
        "model=seq2seq",
        "attention=dot",
        "task.symbols=6",
        "task.min_length=2",
        "task.max_length=6",
        "task.batches_per_epoch=5",
        "task.eval_size=24",
        "task.beam_size=2",
        "model.hidden_size=16",
        "model.embedding_size=8",
        "trainer.max_epochs=1",
        "trainer.attention_images=0",
        "trainer.progress_bar=false",
        "device=cpu",
    ],
    "long_memory": [*TINY, "trainer.max_epochs=1"],
}
POS_TOY_TAGS = {"DET", "NN", "V"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained run folder of each kind (``lm``, ``tagger``, ``seq2seq``, ``long_memory``)."""
    folders = {}
    for kind, args in RUN_ARGS.items():
        cwd = tmp_path_factory.mktemp(kind)
        run_cli(args, cwd)
        folders[kind] = only_run_dir(cwd / "outputs")
    return folders


def call(
    command: Callable[[Sequence[str] | None], int],
    args: Sequence[object],
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, str]:
    """``command.main(args)`` in-process: (exit status, stdout, stderr)."""
    status = command([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_generate_samples_words_of_the_vocabulary(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status, text, err = call(generate.main, [runs["lm"], "--words", "30", "--seed", "1"], capsys)
    assert status == 0, err
    vocabulary = set(read_words(LM_FIXTURE / "train.txt")) | {UNK}
    assert set(load_run(runs["lm"]).task_state["vocab"]["words"]) <= vocabulary | {"<eos>"}
    words = text.split()  # <eos> is printed as a line break
    assert 0 < len(words) <= 30 and set(words) <= vocabulary
    assert call(generate.main, [runs["lm"], "--words", "30", "--seed", "1"], capsys)[1] == text
    status, continued, _ = call(
        generate.main, [runs["lm"], "--prompt", "the cat", "--words", "3"], capsys
    )
    assert status == 0 and continued.startswith("the cat")
    assert len(continued.split()) <= 5


def test_tag_tags_with_the_tag_set(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sentences = ["The dog ate the apple", "Everybody read that book"]
    status, out, err = call(tag.main, [runs["tagger"], *sentences], capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    for line, sentence in zip(lines, sentences, strict=True):
        pairs = [pair.rsplit("/", 1) for pair in line.split()]
        assert [word for word, _ in pairs] == sentence.split()
        assert {tag_ for _, tag_ in pairs} <= POS_TOY_TAGS
    # one sentence per line on stdin; --also: an ensemble (of the run with itself: same tags)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(sentences) + "\n\n"))
    status, from_stdin, err = call(tag.main, [runs["tagger"], "--also", runs["tagger"]], capsys)
    assert status == 0, err
    assert from_stdin == out


def test_translate_outputs_tokens_of_the_target_vocabulary(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = set(load_run(runs["seq2seq"]).task_state["target_vocab"]["words"])
    args = [runs["seq2seq"], "s1 s2 s3", "s0 s5", "--beam", "2", "--png", tmp_path / "maps"]
    status, out, err = call(translate.main, args, capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    for line, source in zip(lines, ["s1 s2 s3", "s0 s5"], strict=True):
        shown, output = line.split(" -> ")
        assert shown == source
        assert set(output.split()) <= target - {"<eos>"}
    assert sorted(p.name for p in (tmp_path / "maps").glob("*.png")) == ["0.png", "1.png"]
    assert err.count("heatmap:") == 2


@pytest.mark.parametrize("kind", ["lm", "tagger", "seq2seq", "long_memory"])
def test_evaluate_reproduces_the_runs_test_metrics(
    kind: str, runs: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "eval.json"
    status, printed, err = call(evaluate.main, [runs[kind], "--out", out], capsys)
    assert status == 0, err
    result = json.loads(out.read_text())
    assert json.loads(printed) == result
    assert result["checkpoint"] == str(load_run(runs[kind]).path)
    assert result["split"] == "test" and result["overrides"] == []
    test = json.loads((runs[kind] / "metrics.json").read_text())["test"]
    expected = {key.removeprefix("test/"): value for key, value in test.items()}
    assert set(result["metrics"]) == set(expected)
    assert result["metrics"] == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_evaluate_with_other_decoding_settings_and_a_tagger_ensemble(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = call(evaluate.main, [runs["seq2seq"], "--set", "task.beam_size=1"], capsys)
    assert status == 0, err
    greedy = json.loads(out)
    assert greedy["overrides"] == ["task.beam_size=1"] and "beam_exact" not in greedy["metrics"]
    status, out, err = call(evaluate.main, [runs["tagger"], runs["tagger"]], capsys)
    assert status == 0, err
    assert len(json.loads(out)["checkpoint"]) == 2


def one_error_line(err: str) -> str:
    """The single ``error: ...`` line of a command's stderr."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("command", "kind", "extra", "message"),
    [
        (generate, "tagger", [], "is a model=tagger run, not model=lm"),
        (tag, "lm", ["The dog"], "is a model=lm run, not model=tagger"),
        (tag, "tagger", ["--also", "@lm", "The dog"], "is a model=lm run, not model=tagger"),
        (translate, "long_memory", ["s1"], "is a model=lstm_attn run, not model=seq2seq"),
        (evaluate, "lm", ["@tagger"], "an ensemble's runs share their model family"),
        (evaluate, "lm", ["@lm"], "is a task=lm run (model=lm), which predicts no classes"),
        (evaluate, "long_memory", ["@long_memory"], "which predicts no classes"),
        (evaluate, "tagger", ["@seq2seq"], "a model=tagger one; an ensemble's runs"),
    ],
)
def test_a_run_of_the_wrong_model_is_one_error_line(
    command: ModuleType,
    kind: str,
    extra: list[str],
    message: str,
    runs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [runs[kind], *(runs[a[1:]] if a.startswith("@") else a for a in extra)]
    status, out, err = call(command.main, args, capsys)
    assert status == 2 and out == ""
    assert message in one_error_line(err)


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        (generate, ["{nowhere}"], "no checkpoint at"),
        (tag, ["{nowhere}", "x"], "no checkpoint at"),
        (translate, ["{nowhere}", "x"], "no checkpoint at"),
        (evaluate, ["{nowhere}"], "no checkpoint at"),
        (generate, ["{lm}/metrics.json"], "is not a readable attnlstm checkpoint"),
        (generate, ["{lm}", "--temperature", "0"], "--temperature must be positive"),
        (generate, ["{lm}", "--words", "0"], "--words must be at least 1"),
        (generate, ["{lm}", "--words", "many"], "invalid int value: 'many'"),
        (translate, ["{seq2seq}", "s1", "--beam", "0"], "--beam must be at least 1"),
        (translate, ["{seq2seq}", "s1", "--length-penalty", "-1"], "--length-penalty"),
        (translate, ["{seq2seq}", "  "], "no sentence to translate"),
        (tag, ["{tagger}", " "], "no sentence to tag"),
        (evaluate, ["{seq2seq}", "--split", "train"], "invalid choice: 'train'"),
        (evaluate, ["{seq2seq}", "--set", "model.hidden_size=3"], "task.<key>=<value>"),
        (evaluate, ["{seq2seq}", "--set", "task.colour=red"], "the task has no key 'colour'"),
        (evaluate, ["{seq2seq}", "--set", "task.beam_size=0"], "beam_size"),
        (evaluate, ["{seq2seq}", "--set", "task.beam_size=wide"], "task.beam_size"),
        (evaluate, ["{seq2seq}", "--set", "task.length_buckets=x"], "task.length_buckets"),
        (evaluate, ["{seq2seq}", "--set", "task.symbols=9"], "does not fit its model"),
        (evaluate, ["{lm}", "--out", "{lm}/metrics.json"], "is never overwritten"),
    ],
)
def test_bad_paths_and_option_values_are_one_error_line(
    command: ModuleType,
    args: list[str],
    message: str,
    runs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    filled = [arg.format(nowhere=tmp_path / "nowhere", **runs) for arg in args]
    status, out, err = call(command.main, filled, capsys)
    assert status == 2 and out == ""
    assert message in one_error_line(err)


@pytest.mark.slow
def test_the_scripts_still_run_the_commands(runs: dict[str, Path]) -> None:
    """``python scripts/<name>.py`` (the documented commands) runs ``attnlstm-<name>``."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "tag.py"), str(runs["tagger"]), "The dog"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert [pair.rsplit("/", 1)[0] for pair in result.stdout.split()] == ["The", "dog"]
    for name in ("evaluate", "generate", "translate"):
        wrong = subprocess.run(
            [sys.executable, str(REPO / "scripts" / f"{name}.py"), str(runs["tagger"] / "x")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert wrong.returncode == 2 and "no checkpoint at" in one_error_line(wrong.stderr)


@pytest.mark.slow
def test_the_commands_of_an_installed_wheel_run_from_another_directory(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Build the wheel, install it into a fresh venv (reusing this torch), and run the four
    commands from outside the checkout on a run of each kind."""
    env_dir = install_wheel_in_fresh_venv(tmp_path)
    python = env_dir / "bin" / "python"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def command(name: str, *args: object, stdin: str | None = None) -> str:
        """``attnlstm-<name> <args>`` of the installed wheel, run in ``elsewhere``: stdout."""
        result = subprocess.run(
            [str(env_dir / "bin" / f"attnlstm-{name}"), *map(str, args)],
            cwd=elsewhere,
            input=stdin,
            capture_output=True,
            text=True,
            env=clean_env,
            timeout=180,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    where = subprocess.run(
        [
            str(python),
            "-c",
            "import attnlstm, attnlstm.cli.tag as m; print(attnlstm.__file__); print(m.__file__)",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
        env=clean_env,
    ).stdout.split()
    assert len(where) == 2
    assert all(file.startswith(str(env_dir)) for file in where), where

    for kind in runs:
        metrics = json.loads(command("evaluate", runs[kind]))["metrics"]
        test = json.loads((runs[kind] / "metrics.json").read_text())["test"]
        assert metrics == pytest.approx(
            {key.removeprefix("test/"): value for key, value in test.items()}, rel=1e-6, abs=1e-6
        )
    vocabulary = set(read_words(LM_FIXTURE / "train.txt")) | {UNK}
    words = command("generate", runs["lm"], "--words", "20").split()
    assert 0 < len(words) <= 20 and set(words) <= vocabulary
    tagged = command("tag", runs["tagger"], stdin="The dog ate the apple\n").split()
    assert [pair.rsplit("/", 1)[0] for pair in tagged] == ["The", "dog", "ate", "the", "apple"]
    assert {pair.rsplit("/", 1)[1] for pair in tagged} <= POS_TOY_TAGS
    target = set(load_run(runs["seq2seq"]).task_state["target_vocab"]["words"])
    translated = command("translate", runs["seq2seq"], "s1 s2 s3", "--beam", "2")
    source, output = translated.strip().split(" -> ")
    assert source == "s1 s2 s3" and set(output.split()) <= target - {"<eos>"}
