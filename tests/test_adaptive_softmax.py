"""The language model's adaptive softmax decoder (``model.decoder=adaptive``, Grave et al. 2017):
the loss is the mean negative log-likelihood of the exact adaptive distribution, its full
log-distribution sums to 1, the full decoder is untouched, bad settings are refused with the
key, the value and the fix, and a run trains, tests and generates from the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from attnlstm.cli import generate
from attnlstm.config import LanguageModelConfig
from attnlstm.data.corpus import UNK, read_words
from attnlstm.errors import ConfigError
from attnlstm.models import build_model
from attnlstm.models.language_model import LSTMLanguageModel, adaptive_target_log_probs
from attnlstm.tasks import build_task
from attnlstm.tasks.language_model import LanguageModelTask
from attnlstm.train import check_config
from tests.conftest import compose_config, only_run_dir, run_cli
from tests.test_language_model import FIXTURE, LM_TINY

#: the fixture corpus has 18 words: a head of 4, clusters [4, 10) and [10, 18); D' = 12 gives
#: the clusters 12 // 2 = 6 and 12 // 4 = 3 features
ADAPTIVE = [
    "model.decoder=adaptive",
    "model.tie_weights=false",
    "model.adaptive_cutoffs=[4,10]",
    "model.adaptive_div_value=2",
]


def adaptive_lm(seed: int = 0, **kwargs: object) -> LSTMLanguageModel:
    torch.manual_seed(seed)
    options: dict[str, object] = {
        "tie_weights": False,
        "decoder": "adaptive",
        "adaptive_cutoffs": [4, 10],
        "adaptive_div_value": 2.0,
    }
    options.update(kwargs)
    return LSTMLanguageModel(18, 12, 12, 2, **options)  # type: ignore[arg-type]


def task_and_model(*overrides: str) -> tuple[LanguageModelTask, nn.Module]:
    """The fixture corpus's task and a model built from ``LM_TINY`` + ``overrides``."""
    cfg = compose_config([*LM_TINY, *overrides])
    task = build_task(cfg.task, cfg.seed, cfg.data_dir)
    assert isinstance(task, LanguageModelTask)
    torch.manual_seed(0)
    return task, build_model(cfg.model, cfg.attention, task.spec)


# -- the full decoder is unchanged ----------------------------------------------------------


def test_full_decoder_is_the_default_and_its_loss_is_the_logits_cross_entropy() -> None:
    """In training the full softmax gives log p(targets) through the fused scores
    (attnlstm.models.fused_softmax): the loss and every gradient equal those of the
    cross-entropy of the logits the same model (same dropout masks) returns without targets."""
    assert str(LanguageModelConfig().decoder) == "full"
    task, model = task_and_model()
    _, explicit = task_and_model("model.decoder=full")
    assert isinstance(model.decoder, nn.Linear)
    assert model.decoder.weight is model.embedding.weight  # still tied by default
    state, again = model.state_dict(), explicit.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    batch = next(iter(task.train_batches(1)))
    model.train()
    torch.manual_seed(1)
    fused = model(batch.inputs, None, targets=batch.targets)
    assert fused.logits is None and fused.target_log_probs.shape == (4, 5)
    loss = task.loss(fused, batch)
    loss.backward()
    fused_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    torch.manual_seed(1)
    plain = model(batch.inputs, None)
    assert plain.target_log_probs is None and plain.logits.shape == (4, 5, len(task.vocab))
    expected = nn.functional.cross_entropy(
        plain.logits.reshape(-1, plain.logits.size(-1)), batch.targets.reshape(-1)
    )
    torch.testing.assert_close(loss, expected + plain.regularization)
    (expected + plain.regularization).backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(fused_grads[name], parameter.grad, msg=name)
    with torch.no_grad():  # evaluation keeps the logits (generation, attention figures)
        evaluated = task.forward(model.eval(), batch)
    assert evaluated.logits.shape == (4, 5, len(task.vocab))


# -- the adaptive loss and distribution -----------------------------------------------------


def test_adaptive_loss_is_the_mean_nll_of_its_full_distribution() -> None:
    task, model = task_and_model(*ADAPTIVE)
    assert isinstance(model.decoder, nn.AdaptiveLogSoftmaxWithLoss)
    assert model.decoder.cutoffs == [4, 10, 18] and model.decoder.head.bias is not None
    model.eval()
    batch = next(iter(task.train_batches(1)))
    output = task.forward(model, batch)
    assert output.logits is None  # no B x T x V scores when the targets are given
    assert output.target_log_probs.shape == batch.targets.shape
    with torch.no_grad():
        loss = task.loss(output, batch)
        full = model(batch.inputs).logits  # log p(. | o): B x T x V
    torch.testing.assert_close(full.exp().sum(-1), torch.ones(batch.targets.shape))
    picked = full.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(output.target_log_probs, picked)
    torch.testing.assert_close(loss, -picked.mean())
    assert batch.targets.unique().numel() > 4  # the batch reaches past the head's shortlist


def test_adaptive_perplexity_is_exact_over_a_split() -> None:
    """The meter's perplexity equals exp(mean -log p(y)) from the full distributions, with
    the state carried from segment to segment."""
    task, model = task_and_model(*ADAPTIVE)
    model.eval()
    meter = task.new_meter()
    total, tokens, state = 0.0, 0, None
    with torch.no_grad():
        for batch in task.eval_batches("val"):
            meter.update(task.forward(model, batch), batch)
            output = model(batch.inputs, state)
            state = output.state
            total -= output.logits.gather(-1, batch.targets.unsqueeze(-1)).sum().item()
            tokens += batch.targets.numel()
    metrics = meter.compute()
    assert metrics["loss"] == pytest.approx(total / tokens, rel=1e-5)
    assert metrics["ppl"] == pytest.approx(math.exp(total / tokens), rel=1e-5)


def test_target_log_probs_match_torchs_adaptive_softmax() -> None:
    decoder = adaptive_lm().decoder
    features = torch.randn(40, 12)
    targets = torch.arange(40) % 18  # every word: the head, both clusters and their bounds
    result = decoder(features, targets)
    ours = adaptive_target_log_probs(decoder, features, targets)
    torch.testing.assert_close(ours, result.output)
    torch.testing.assert_close(-ours.mean(), result.loss)


def test_every_cluster_takes_part_even_without_a_target_in_it() -> None:
    """DistributedDataParallel (find_unused_parameters=False) needs a gradient for every
    parameter at every step: a cluster no target falls in gets a zero one."""
    model = adaptive_lm().train()
    words = torch.randint(0, 18, (2, 6))
    targets = torch.randint(0, 4, (2, 6))  # all in the head's shortlist
    output = model(words, targets=targets)
    (-output.target_log_probs.mean()).backward()
    for name, parameter in model.decoder.named_parameters():
        assert parameter.grad is not None, name
        if name.startswith("tail."):
            assert not parameter.grad.any(), name


def test_adaptive_decoder_runs_in_float32_under_autocast() -> None:
    model = adaptive_lm().eval()
    features = torch.randn(2, 5, 12)
    targets = torch.randint(0, 18, (2, 5))
    with torch.no_grad():
        _, plain = model._adaptive(features, targets)
        full, _ = model._adaptive(features, None)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, mixed = model._adaptive(features, targets)
            full_mixed, _ = model._adaptive(features, None)
    assert mixed.dtype == torch.float32 and full_mixed.dtype == torch.float32
    assert torch.equal(mixed, plain) and torch.equal(full_mixed, full)


# -- refusals -------------------------------------------------------------------------------


def test_tied_weights_are_refused_before_any_data_is_read() -> None:
    cfg = compose_config(["task=lm", "task.path=/nowhere", "model=lm", "model.decoder=adaptive"])
    with pytest.raises(ConfigError) as error:
        check_config(cfg)  # the path does not exist: no data is read
    message = str(error.value)
    assert "\n" not in message
    assert "model.decoder=adaptive" in message and "model.tie_weights=true" in message
    assert "set model.tie_weights=false" in message
    check_config(compose_config([*LM_TINY, *ADAPTIVE]))  # untied: accepted
    with pytest.raises(ValueError, match="tie_weights=False"):
        LSTMLanguageModel(18, 12, 12, 1, tie_weights=True, decoder="adaptive")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.adaptive_cutoffs=[10,4]"], "model.adaptive_cutoffs=[10,4] is not allowed: "),
        (["model.adaptive_cutoffs=[4,4]"], "model.adaptive_cutoffs=[4,4] is not allowed: "),
        (["model.adaptive_cutoffs=[0,4]"], "model.adaptive_cutoffs=[0,4] is not allowed: "),
        (["model.adaptive_cutoffs=[]"], "model.adaptive_cutoffs=[] is not allowed: "),
        (["model.adaptive_div_value=0.5"], "model.adaptive_div_value=0.5 is not allowed: "),
    ],
)
def test_bad_cutoffs_and_divisors_are_refused_by_key_and_value(
    overrides: list[str], expected: str
) -> None:
    with pytest.raises(ConfigError) as error:
        check_config(compose_config([*LM_TINY, *ADAPTIVE, *overrides]))
    message = str(error.value)
    assert "\n" not in message and expected in message, message
    rule = {
        "[10,4]": "strictly increasing",
        "[4,4]": "strictly increasing",
        "[0,4]": "positive integer",
        "[]": "at least one cut-off",
        "0.5": "at least 1",
    }[expected.split("=")[1].split(" ")[0]]
    assert rule in message, message


def test_cutoffs_beyond_the_vocabulary_are_refused_when_the_model_is_built() -> None:
    cfg = compose_config([*LM_TINY, *ADAPTIVE, "model.adaptive_cutoffs=[4,18]"])
    check_config(cfg)  # the vocabulary size is known once the corpus is read
    task = build_task(cfg.task, cfg.seed, cfg.data_dir)
    with pytest.raises(ConfigError) as error:
        build_model(cfg.model, cfg.attention, task.spec)
    message = str(error.value)
    assert "model.adaptive_cutoffs=[4,18] is not allowed" in message
    assert "below the vocabulary size, 18 words here" in message
    fitting = compose_config([*LM_TINY, *ADAPTIVE, "model.adaptive_cutoffs=[4,17]"])
    assert build_model(fitting.model, fitting.attention, task.spec).decoder.cutoffs[-2:] == [17, 18]


def test_a_cluster_projected_onto_no_feature_is_refused() -> None:
    cfg = compose_config([*LM_TINY, *ADAPTIVE, "model.adaptive_div_value=4"])
    task = build_task(cfg.task, cfg.seed, cfg.data_dir)
    with pytest.raises(ConfigError) as error:  # 12 // 4^2 = 0
        build_model(cfg.model, cfg.attention, task.spec)
    message = str(error.value)
    assert "model.adaptive_div_value=4 is not allowed" in message
    assert "tail cluster 2" in message and "12 // 4^2 = 0" in message


def test_the_command_line_refuses_cutoffs_beyond_the_vocabulary(tmp_path: Path) -> None:
    result = run_cli([*LM_TINY, *ADAPTIVE, "model.adaptive_cutoffs=[4,30]"], tmp_path, check=False)
    shown = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, shown
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.adaptive_cutoffs=[4,30]"), shown
    assert "18 words here" in lines[0] and "epoch" not in result.stdout, shown


# -- end to end -----------------------------------------------------------------------------


def test_an_adaptive_run_trains_tests_and_generates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli([*LM_TINY, *ADAPTIVE, "trainer.max_epochs=1"], tmp_path)
    run_dir = only_run_dir(tmp_path / "outputs")
    # task.vocab_order=auto became frequency: the head holds the most frequent words
    assert "vocab_order: frequency" in (run_dir / "config.yaml").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 1
    test_ppl, test_loss = metrics["test"]["test/ppl"], metrics["test"]["test/loss"]
    assert math.isfinite(test_ppl) and math.isclose(test_ppl, math.exp(test_loss), rel_tol=1e-6)
    assert math.isfinite(metrics["history"][0]["train/ppl"])

    model, vocab = generate.load_language_model(run_dir)
    assert isinstance(model.decoder, nn.AdaptiveLogSoftmaxWithLoss)
    capsys.readouterr()
    assert generate.main([str(run_dir), "--words", "20", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    words = text.split()  # <eos> is printed as a line break
    assert 0 < len(words) <= 20
    assert set(words) <= set(read_words(FIXTURE / "train.txt")) | {UNK}
    assert generate.main([str(run_dir), "--words", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().out == text  # seeded
    sampled = generate.generate(model, vocab, 200, seed=0)
    assert len(set(sampled)) > 4  # words from the tail clusters are drawn too
    assert any(vocab.ids[word] >= 4 for word in sampled)


# -- the vocabulary's order -----------------------------------------------------------------


def test_a_frequency_ordered_vocabulary_puts_the_frequent_words_first() -> None:
    from collections import Counter

    from attnlstm.data.corpus import EOS, Corpus

    files = [FIXTURE / name for name in ("train.txt", "valid.txt", "test.txt")]
    first_seen = Corpus.from_files(*files)
    ordered = Corpus.from_files(*files, by_frequency=True)
    counts = Counter(read_words(FIXTURE / "train.txt"))
    assert first_seen.vocab.words[0] == EOS  # the ids of earlier runs
    frequencies = [counts[word] for word in ordered.vocab.words if word in counts]
    assert frequencies == sorted(frequencies, reverse=True)
    assert ordered.vocab.words[:2] == ["the", EOS]  # 15 and 8 times: the order changed
    assert sorted(ordered.vocab.words) == sorted(first_seen.vocab.words)
    for corpus in (first_seen, ordered):  # the same text either way
        assert corpus.vocab.decode(corpus.train.tolist()) == first_seen.vocab.decode(
            first_seen.train.tolist()
        )


@pytest.mark.parametrize(
    ("overrides", "order"),
    [
        ([], "first_seen"),
        (ADAPTIVE, "frequency"),
        ([*ADAPTIVE, "task.vocab_order=first_seen"], "first_seen"),  # the user's choice
        (["task.vocab_order=frequency"], "frequency"),
    ],
)
def test_vocab_order_auto_follows_the_decoder(overrides: list[str], order: str) -> None:
    cfg = compose_config([*LM_TINY, *overrides])
    check_config(cfg)
    assert cfg.task.vocab_order == order
    task = build_task(cfg.task, cfg.seed, cfg.data_dir)
    assert isinstance(task, LanguageModelTask)
    is_sorted = task.vocab.words[0] != "<eos>"  # <eos> is not the fixture's top word
    assert is_sorted == (order == "frequency")
