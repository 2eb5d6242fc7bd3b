"""Text classification (SST-2 and any TSV/CSV folder): reader, metrics, task, models reading
words, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from attnlstm.attention import ATTENTION
from attnlstm.batch import SequenceBatch
from attnlstm.config import SequenceModelConfig, TextClassificationTaskConfig
from attnlstm.contracts import ModelOutput, TaskSpec
from attnlstm.data.text_classification import (
    TextFileError,
    make_vocabulary,
    read_labelled_texts,
)
from attnlstm.errors import ConfigError
from attnlstm.models import build_model
from attnlstm.tasks import build_task
from attnlstm.tasks.text_classification import ClassificationMeter, TextClassificationTask
from tests.conftest import only_run_dir, run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "text_classification"


def _task(**overrides: object) -> TextClassificationTask:
    cfg = TextClassificationTaskConfig(name="sst2", path=str(FIXTURE), **overrides)
    task = build_task(cfg, seed=0)
    assert isinstance(task, TextClassificationTask)
    return task


# -- reader ---------------------------------------------------------------------------------


def test_reader_reads_crlf_and_quotes_by_position() -> None:
    examples = read_labelled_texts(FIXTURE / "train.tsv", "0", "1", "\t")
    assert len(examples) == 8
    assert examples[0].label == "1" and examples[0].tokens == (
        "a",
        "gorgeous",
        ",",
        "witty",
        "film",
    )
    # CRLF: no '\r' left on the last token; a '"' in a TSV is an ordinary character
    assert all(not t.endswith("\r") for e in examples for t in e.tokens)
    assert examples[5].tokens[1] == '"comedy"'


def test_reader_columns_by_name_and_csv_quoting(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text('stars,review\n5,"good, really good"\n1,bad\n')
    examples = read_labelled_texts(path, "stars", "review", ",")
    assert [(e.label, e.tokens) for e in examples] == [
        ("5", ("good,", "really", "good")),
        ("1", ("bad",)),
    ]
    with pytest.raises(TextFileError, match=r"reviews.csv:1: no column 'text'"):
        read_labelled_texts(path, "stars", "text", ",")


def test_reader_errors_name_file_and_line(tmp_path: Path) -> None:
    short = tmp_path / "short.tsv"
    short.write_text("label\ttext\n1\tfine\n0\n")
    with pytest.raises(TextFileError, match=r"short.tsv:3: 1 column"):
        read_labelled_texts(short, "0", "1", "\t")
    binary = tmp_path / "latin1.tsv"
    binary.write_bytes("label\ttext\n1\tcaf\xe9\n".encode("latin-1"))
    with pytest.raises(TextFileError, match=r"latin1.tsv: byte \d+ is not UTF-8"):
        read_labelled_texts(binary, "0", "1", "\t")


def test_vocabulary_min_count() -> None:
    vocab = make_vocabulary([("a", "b", "a"), ("a", "c")], min_count=2)
    assert vocab.words == ["<pad>", "<unk>", "a"]


# -- metrics --------------------------------------------------------------------------------


def test_meter_accuracy_and_macro_f1_by_hand() -> None:
    meter = ClassificationMeter(3)
    # gold 0 0 1 2, predicted 0 1 1 1
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0], [0, 5.0, 0]])
    batch = SequenceBatch(torch.zeros(4, 1, dtype=torch.long), torch.tensor([0, 0, 1, 2]), None)
    meter.update(ModelOutput(logits), batch)
    metrics = meter.compute()
    assert metrics["acc"] == pytest.approx(0.5)
    # F1: class 0: P 1, R 1/2 -> 2/3; class 1: P 1/3, R 1 -> 1/2; class 2: 0
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    expected_loss = torch.nn.functional.cross_entropy(logits, batch.targets).item()
    assert metrics["loss"] == pytest.approx(expected_loss)


# -- task -----------------------------------------------------------------------------------


def test_task_batches_spec_and_state() -> None:
    task = _task()
    assert task.classes == ["0", "1"]
    assert task.spec.target == "value" and task.spec.inputs == "tokens"
    assert task.spec.output_size == 2 and task.spec.input_size == len(task.vocab)
    batches = list(task.train_batches(1))
    assert sum(len(b) for b in batches) == 8 == task.num_train_batches() * 64 - 56
    test = task.eval_batches("test")
    assert sum(len(b) for b in test) == 3
    batch = test[0]
    for row in range(len(batch)):  # padding beyond each length, real tokens within
        length = int(batch.lengths[row])
        assert (batch.inputs[row, length:] == 0).all() and (batch.inputs[row, :length] != 0).all()
    assert task.state_dict()["classes"] == ["0", "1"]


def test_word_dropout_replaces_only_real_tokens() -> None:
    task = _task(word_dropout=0.5)
    batch = next(iter(task.train_batches(1)))
    real = batch.lengths.unsqueeze(1) > torch.arange(batch.inputs.size(1))
    assert (batch.inputs[real] == 1).any()  # some became <unk>
    assert (batch.inputs[~real] == 0).all()  # padding stayed padding


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"task\.word_dropout=1\.5 is not allowed"):
        TextClassificationTaskConfig(path="x", word_dropout=1.5)
    with pytest.raises(ConfigError, match="no column 'stars'"):
        _task(label_column="stars")
    with pytest.raises(ConfigError, match="labels the training file lacks"):
        _task(label_column="1", text_column="1")
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (tmp_path / name).write_text("label\ttext\n1\tgood\n1\tfine\n")
    with pytest.raises(ConfigError, match="one label only"):
        build_task(TextClassificationTaskConfig(path=str(tmp_path)), seed=0)


# -- models reading words -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method"),
    [("lstm", "none"), ("mean", "none"), ("ffattn", "feedforward")]
    + [("lstm_attn", m) for m in ATTENTION.names()],
)
def test_token_models_same_alone_as_padded(name: str, method: str) -> None:
    """A text gives the same prediction alone as padded beside a longer one."""
    torch.manual_seed(0)
    cfg = SequenceModelConfig(name=name, hidden_size=6, head_size=5, embedding_size=4)
    spec = TaskSpec(20, 3, target="value", inputs="tokens")
    model = build_model(cfg, OmegaConf.create({"method": method, "hidden_dim": None}), spec)
    model.eval()
    short = torch.tensor([[4, 5, 6]])
    padded = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 9, 10, 11]])
    alone = model(short, torch.tensor([3])).prediction
    together = model(padded, torch.tensor([3, 5])).prediction
    torch.testing.assert_close(alone[0], together[0])


def test_feature_model_rejects_nothing_new() -> None:
    """Feature-reading tasks build the models exactly as before: no embedding layer."""
    cfg = SequenceModelConfig(name="lstm_attn", hidden_size=6, head_size=5)
    model = build_model(cfg, OmegaConf.create({"method": "dot"}), TaskSpec(2, 1))
    assert not any("embedding" in name for name, _ in model.named_parameters())


# -- end to end -----------------------------------------------------------------------------


def test_train_text_classification_end_to_end(tmp_path: Path) -> None:
    run_cli(
        [
            "task=text_classification",
            f"task.path={FIXTURE}",
            "model=lstm_attn",
            "attention=additive",
            "model.hidden_size=8",
            "model.head_size=8",
            "model.embedding_size=8",
            "trainer.max_epochs=2",
            "trainer.progress_bar=false",
            "device=cpu",
        ],
        cwd=tmp_path,
    )
    run = only_run_dir(tmp_path / "outputs")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert set(metrics["test"]) == {"test/loss", "test/acc", "test/macro_f1"}
    assert 0.0 <= metrics["test"]["test/acc"] <= 1.0


@pytest.mark.slow  # three runs (15 s)
def test_runs_of_other_seeds_and_methods_vote_as_an_ensemble(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``attnlstm-evaluate RUN_1 RUN_2 RUN_3``: the ensemble's accuracy is that of the mean
    of the members' class probabilities, computed here from the members one by one."""
    from attnlstm.cli import evaluate
    from attnlstm.models.ensemble import ProbabilityEnsemble
    from attnlstm.runs import load_run

    runs = []
    for seed, method in ((0, "additive"), (1, "dot"), (2, "feedforward")):
        run_cli(
            [
                "task=text_classification",
                f"task.path={FIXTURE}",
                "model=lstm_attn",
                f"attention={method}",
                "model.hidden_size=8",
                "model.head_size=8",
                "model.embedding_size=8",
                "trainer.max_epochs=1",
                "trainer.progress_bar=false",
                "trainer.attention_images=0",
                "device=cpu",
                f"seed={seed}",
            ],
            cwd=tmp_path / str(seed),
        )
        runs.append(only_run_dir(tmp_path / str(seed) / "outputs"))
    status = evaluate.main([str(run) for run in runs])
    out, err = capsys.readouterr()
    assert status == 0, err
    metrics = json.loads(out)["metrics"]

    task = _task()
    models = [load_run(run).model for run in runs]
    correct = total = 0
    with torch.no_grad():
        for batch in task.eval_batches("test"):
            probabilities = torch.stack(
                [model(batch.inputs, batch.lengths).prediction.softmax(-1) for model in models]
            ).mean(dim=0)
            correct += int((probabilities.argmax(-1) == batch.targets).sum())
            total += len(batch)
            ensemble = ProbabilityEnsemble(models)(batch.inputs, batch.lengths)
            assert isinstance(ensemble, ModelOutput) and ensemble.attention is None
            torch.testing.assert_close(ensemble.prediction.exp(), probabilities)
    assert metrics["acc"] == pytest.approx(correct / total)
    alone = [evaluate.evaluate(run, "test")["loss"] for run in runs]
    assert metrics["loss"] not in alone  # three models' probabilities, not one


@pytest.mark.data
def test_sst2_reads_the_real_files() -> None:
    from attnlstm.paths import data_dir

    if not (data_dir() / "sst-2" / "train.tsv").is_file():
        pytest.skip(f"SST-2 not found under {data_dir()} (set ATTNLSTM_DATA)")
    task = build_task(TextClassificationTaskConfig(name="sst2", path="sst-2"), seed=0)
    counts = {split: sum(len(b) for b in task.eval_batches(split)) for split in ("val", "test")}
    assert len(task.train_data) == 67_349 and counts == {"val": 872, "test": 1_821}


def test_ptb_escapes_are_unescaped_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "dev.tsv"
    path.write_text("label\tcontent\n1\ta -lrb- very -rrb- good and\\/or fine film\n")
    plain = read_labelled_texts(path, "0", "1", "\t")[0].tokens
    unescaped = read_labelled_texts(path, "0", "1", "\t", unescape=True)[0].tokens
    assert plain[1] == "-lrb-" and plain[5] == "and\\/or"
    assert unescaped == ("a", "(", "very", ")", "good", "and/or", "fine", "film")


def test_fused_adam_is_the_same_update() -> None:
    """optim.fused only changes the kernel: the weights after a few steps agree."""
    from attnlstm.config import OptimConfig
    from attnlstm.training.optim import build_optimizer

    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 3)
        optimizer = build_optimizer(OptimConfig(lr=0.01, fused=fused), layer.parameters())
        for _ in range(3):
            optimizer.zero_grad()
            layer(torch.ones(2, 4)).square().sum().backward()
            optimizer.step()
        results.append(layer.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1])


@pytest.mark.slow
def test_resume_with_changed_data_is_refused_and_the_run_is_kept(tmp_path: Path) -> None:
    """A resume whose files give another vocabulary stops before anything is written."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    run = tmp_path / "run"
    common = ["trainer.progress_bar=false", "device=cpu"]
    small = ["model=mean", "model.hidden_size=8", "model.head_size=8", "model.embedding_size=8"]
    first = ["task=text_classification", f"task.path={data}", *small, "trainer.max_epochs=1"]
    run_cli([*first, *common, f"hydra.run.dir={run}"], cwd=tmp_path)
    before = (run / "metrics.json").read_text()
    config_before = (run / "config.yaml").read_text()
    with (data / "train.tsv").open("a") as handle:
        handle.write("1\tbrandnewword here\r\n")
    result = run_cli([f"resume={run}", "trainer.max_epochs=2", *common], tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    assert "does not match" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (run / "metrics.json").read_text() == before
    assert (run / "config.yaml").read_text() == config_before


def test_sst2_table_aggregates_seeds(tmp_path: Path) -> None:
    import subprocess
    import sys

    for seed, accuracy in ((0, 0.84), (1, 0.86)):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        config = {"task": {"name": "sst2"}, "model": {"name": "lstm_attn"}, "seed": seed}
        config["attention"] = {"method": "feedforward"}
        OmegaConf.save(OmegaConf.create(config), run / "config.yaml")
        metrics = {
            "status": "completed",
            "test": {"test/acc": accuracy, "test/macro_f1": accuracy},
            "best": {"val/acc": 0.85},
            "wall_time_s": 300.0,
        }
        (run / "metrics.json").write_text(json.dumps(metrics))
    script = Path(__file__).resolve().parents[1] / "scripts" / "sst2_table.py"
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout
    row = "| lstm_attn | feedforward | 0 | 0, 1 | 85.00 ± 1.41 (n=2) | 85.00 ± 1.41 (n=2)"
    assert row + " | 85.00 ± 0.00 (n=2) | 5.0 ± 0.0 (n=2) |" in out
    assert "| Tai et al. (2015) LSTM, GloVe |  |  |  | 84.9 |" in out
