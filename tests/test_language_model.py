"""Language modelling: corpus reading, BPTT segments, the AWD-LSTM pieces, causal attention
over earlier states (within and across segments), NT-ASGD, and the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from attnlstm.attention import make_attention
from attnlstm.config import LanguageModelTaskConfig
from attnlstm.data.corpus import EOS, UNK, Corpus, batchify, read_words
from attnlstm.errors import ConfigError
from attnlstm.models.language_model import LSTMLanguageModel, causal_window_mask
from attnlstm.models.regularizers import WeightDropLSTM, embedding_dropout, locked_dropout
from attnlstm.paths import data_dir
from attnlstm.tasks import build_task
from attnlstm.tasks.language_model import LanguageModelTask
from attnlstm.training.averaging import NonMonotoneAveraging
from tests.conftest import only_run_dir, run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "lm"
METHODS = ["dot", "scaled_dot", "general", "concat", "additive", "feedforward"]
LM_TINY = [
    "task=lm",
    f"task.path={FIXTURE}",
    "task.batch_size=4",
    "task.eval_batch_size=2",
    "task.bptt=5",
    "model=lm",
    "model.embedding_size=12",
    "model.hidden_size=12",
    "trainer.max_epochs=2",
    "trainer.progress_bar=false",
    "device=cpu",
]


def fixture_task(**overrides: object) -> LanguageModelTask:
    overrides.setdefault("eval_batch_size", 2)
    cfg = LanguageModelTaskConfig(
        name="lm",
        path=str(FIXTURE),
        train_file="train.txt",
        valid_file="valid.txt",
        test_file="test.txt",
        **overrides,
    )
    return LanguageModelTask(cfg, seed=0)


# -- data -----------------------------------------------------------------------------------


def test_words_end_each_line_with_eos() -> None:
    words = read_words(FIXTURE / "train.txt")
    assert words[:7] == ["the", "cat", "sat", "on", "the", "mat", EOS]
    assert words.count(EOS) == 8


def test_vocabulary_comes_from_train_and_unseen_words_become_unk() -> None:
    corpus = Corpus.from_files(FIXTURE / "train.txt", FIXTURE / "valid.txt", FIXTURE / "test.txt")
    vocab = corpus.vocab
    assert "fox" not in vocab and UNK in vocab  # "fox" is only in valid.txt
    valid_words = vocab.decode(corpus.valid.tolist())
    assert valid_words[-5:] == ["the", "red", UNK, "sat", EOS]
    assert vocab.decode(corpus.train.tolist()) == read_words(FIXTURE / "train.txt")


def test_batchify_cuts_rows_in_stream_order() -> None:
    rows = batchify(torch.arange(23), 4)
    assert rows.shape == (4, 5)
    assert rows[1].tolist() == [5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="too short"):
        batchify(torch.arange(5), 4)


def test_segments_cover_the_stream_with_next_word_targets() -> None:
    task = fixture_task(batch_size=3, bptt=4)
    batches = list(task.train_batches(1))
    assert len(batches) == task.num_train_batches()
    inputs = torch.cat([b.inputs for b in batches], dim=1)
    targets = torch.cat([b.targets for b in batches], dim=1)
    data = task.train_data
    assert torch.equal(inputs, data[:, :-1]) and torch.equal(targets, data[:, 1:])
    assert all(b.weight == 1.0 for b in batches)
    assert len(batches[0]) == 3 * 4  # a batch counts tokens


def test_variable_bptt_lengths_follow_awd_lstm_and_are_reproducible() -> None:
    task = fixture_task(batch_size=1, bptt=10, variable_bptt=True)
    lengths = [b.inputs.size(1) for b in task.train_batches(1)]
    assert min(lengths[:-1]) >= 5 and len(set(lengths)) > 1
    batch = next(iter(fixture_task(batch_size=1, bptt=10, variable_bptt=True).train_batches(1)))
    assert batch.weight == pytest.approx(batch.inputs.size(1) / 10)
    again = [
        b.inputs.size(1)
        for b in fixture_task(batch_size=1, bptt=10, variable_bptt=True).train_batches(1)
    ]
    assert again == lengths


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path: Path) -> None:
    cfg = LanguageModelTaskConfig(name="lm_ptb")
    with pytest.raises(ConfigError) as error:
        LanguageModelTask(cfg, seed=0, configured_data_dir=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "ptb" / "ptb.train.txt") in message
    assert "attnlstm-download ptb" in message and "ATTNLSTM_DATA" in message


def test_data_directory_comes_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATTNLSTM_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    assert data_dir("/elsewhere") == Path("/elsewhere")


# -- model pieces ---------------------------------------------------------------------------


def test_weight_drop_lstm_is_nn_lstm_when_not_dropping() -> None:
    torch.manual_seed(0)
    layer = WeightDropLSTM(5, 7, weight_drop=0.5)
    reference = nn.LSTM(5, 7, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(layer.weight_ih)
        reference.weight_hh_l0.copy_(layer.weight_hh)
        reference.bias_ih_l0.copy_(layer.bias_ih)
        reference.bias_hh_l0.copy_(layer.bias_hh)
    x = torch.randn(3, 6, 5)
    layer.eval()
    out, (h, _) = layer(x)
    expected, (h_ref, _) = reference(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(h, h_ref)
    layer.train()  # DropConnect: a different recurrent matrix, gradients still reach W_hh
    dropped, _ = layer(x)
    assert not torch.allclose(dropped, expected)
    dropped.sum().backward()
    assert layer.weight_hh.grad is not None and layer.weight_hh.grad.abs().sum() > 0


def test_locked_dropout_uses_one_mask_for_every_step() -> None:
    torch.manual_seed(0)
    x = torch.ones(4, 9, 16)
    y = locked_dropout(x, 0.5, training=True)
    assert torch.equal(y, y[:, :1].expand_as(y))  # the same units dropped at every step
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(locked_dropout(x, 0.5, training=False), x)


def test_embedding_dropout_drops_whole_words() -> None:
    torch.manual_seed(0)
    embedding = nn.Embedding(50, 8)
    words = torch.arange(50).repeat(2, 1)
    dropped = embedding_dropout(embedding, words, 0.5, training=True)
    zero_rows = (dropped == 0).all(-1)
    assert 0 < zero_rows.sum() < 100
    assert torch.equal(zero_rows[0], zero_rows[1])  # a dropped word is dropped everywhere


def test_tied_decoder_shares_the_embedding_matrix() -> None:
    for method in (None, "general"):
        attention = None if method is None else make_attention(method, 10, 10)
        model = LSTMLanguageModel(30, 6, 10, 2, tie_weights=True, attention=attention)
        assert model.decoder.weight is model.embedding.weight


def test_causal_window_mask() -> None:
    mask = causal_window_mask(steps=3, memory=2, window=2, device=torch.device("cpu"))[0]
    # keys are positions -2, -1, 0, 1, 2; query t sees t-2 .. t-1
    assert mask.int().tolist() == [[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0]]


def small_lm(
    method: str | None, window: int = 4, seed: int = 0, next_word: bool = False
) -> LSTMLanguageModel:
    torch.manual_seed(seed)
    attention = None if method is None else make_attention(method, 8, 8)
    model = LSTMLanguageModel(
        20,
        8,
        8,
        2,
        tie_weights=False,
        attention=attention,
        attention_window=window,
        next_word_values=next_word,
    )
    return model.eval()


# every attention method, averaging the states or the embeddings of the words that followed them
ATTENDING = [(method, values) for method in METHODS for values in (False, True)]


@pytest.mark.parametrize(("method", "next_word"), [(None, False), *ATTENDING])
def test_no_prediction_depends_on_a_later_word_across_segments(
    method: str | None, next_word: bool
) -> None:
    """Change one word of the second segment: nothing before it changes, in that segment or
    the first; predictions after it do."""
    model = small_lm(method, next_word=next_word)
    words = torch.randint(0, 20, (3, 12))
    changed = words.clone()
    changed[:, 8] = (changed[:, 8] + 1) % 20

    def run(tokens: torch.Tensor) -> torch.Tensor:
        first = model(tokens[:, :6])  # two segments, the state carried between them
        second = model(tokens[:, 6:], first.state)
        return torch.cat([first.logits, second.logits], dim=1)

    with torch.no_grad():
        before, after = run(words), run(changed)
    # the prediction at position 8 reads word 8 (it predicts word 9): positions 0-7 are earlier
    torch.testing.assert_close(before[:, :8], after[:, :8], rtol=0, atol=0)
    assert not torch.allclose(before[:, 8:], after[:, 8:])


@pytest.mark.parametrize(("method", "next_word"), ATTENDING)
def test_attention_reaches_into_the_previous_segment(method: str, next_word: bool) -> None:
    """With the LSTM's state carried, a change in segment 1 reaches segment 2 anyway; with a
    zero LSTM state handed over, it still does only through the attention memory."""
    model = small_lm(method, next_word=next_word)
    words = torch.randint(0, 20, (2, 10))
    changed = words.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 20
    with torch.no_grad():
        outputs = []
        for tokens in (words, changed):
            first = model(tokens[:, :5])
            state = first.state
            zeros = [(torch.zeros_like(h), torch.zeros_like(c)) for h, c in state.layers]
            state.layers = zeros  # only the attention memory crosses the boundary now
            outputs.append(model(tokens[:, 5:], state).logits)
    assert not torch.allclose(outputs[0][:, :2], outputs[1][:, :2])  # within the window
    # position 5 + 4 = 9 attends to 5..8 only: word 4 is out of its window
    torch.testing.assert_close(outputs[0][:, 4], outputs[1][:, 4], rtol=0, atol=0)


@pytest.mark.parametrize(("method", "next_word"), [(None, False), *ATTENDING])
def test_all_positions_at_once_equal_one_step_at_a_time(
    method: str | None, next_word: bool
) -> None:
    model = small_lm(method, window=3, next_word=next_word)
    words = torch.randint(0, 20, (2, 9))
    with torch.no_grad():
        whole = model(words).logits
        state, steps = None, []
        for t in range(words.size(1)):
            output = model(words[:, t : t + 1], state)
            state = output.state
            steps.append(output.logits)
    torch.testing.assert_close(whole, torch.cat(steps, dim=1), rtol=1e-5, atol=1e-6)


def test_state_is_detached_between_segments() -> None:
    model = small_lm("general").train()
    first = model(torch.randint(0, 20, (2, 5)))
    assert all(not h.requires_grad and not c.requires_grad for h, c in first.state.layers)
    assert first.state.memory is not None and not first.state.memory.requires_grad


def test_ar_and_tar_add_a_penalty_in_training_only() -> None:
    torch.manual_seed(0)
    model = LSTMLanguageModel(20, 8, 8, 1, tie_weights=True, ar=2.0, tar=1.0)
    words = torch.randint(0, 20, (2, 6))
    assert model.train()(words).regularization > 0
    assert model.eval()(words).regularization == 0


# -- NT-ASGD ------------------------------------------------------------------------------


def test_nt_asgd_triggers_as_awd_lstm_lm_does() -> None:
    averaging = NonMonotoneAveraging(nn.Linear(2, 1), nonmono=2)
    for epoch, loss in enumerate([5.0, 4.0, 3.0, 3.5, 3.2], start=1):
        averaging.observe(loss, epoch)
        assert not averaging.active  # each loss beats min(all but the last 2) or too few seen
    averaging.observe(5.5, 6)  # worse than min(5, 4, 3) = 3
    assert averaging.active and averaging.triggered_epoch == 6


def test_nt_asgd_averages_the_weights_after_every_update() -> None:
    model = nn.Linear(1, 1, bias=False)
    averaging = NonMonotoneAveraging(model, nonmono=0)
    averaging.observe(1.0, 1)
    averaging.observe(2.0, 2)  # worse than 1.0: triggered
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            model.weight.fill_(value)
        averaging.update()
    assert averaging.eval_model.weight.item() == pytest.approx(3.0)
    assert model.weight.item() == 6.0
    restored = NonMonotoneAveraging(nn.Linear(1, 1, bias=False), nonmono=0)
    restored.load_state_dict(averaging.state_dict())
    assert restored.eval_model.weight.item() == pytest.approx(3.0)


# -- end to end -----------------------------------------------------------------------------


def test_build_task_and_model_from_config() -> None:
    from attnlstm.models import build_model
    from tests.conftest import compose_config

    cfg = compose_config([*LM_TINY, "attention=dot"])
    task = build_task(cfg.task, cfg.seed, cfg.data_dir)
    model = build_model(cfg.model, cfg.attention, task.spec)
    batch = next(iter(task.train_batches(1)))
    output = task.forward(model, batch)  # training: the log-probabilities of the targets
    assert output.logits is None and output.target_log_probs.shape == (4, 5)
    assert output.attention.shape == (4, 5, 5)
    with torch.no_grad():
        assert task.forward(model.eval(), batch).logits.shape == (4, 5, len(task.vocab))


def test_sequence_models_refuse_a_language_modelling_task() -> None:
    from attnlstm.models import build_model
    from tests.conftest import compose_config

    cfg = compose_config([a for a in LM_TINY if not a.startswith("model")] + ["model=lstm"])
    task = build_task(cfg.task, cfg.seed, cfg.data_dir)
    with pytest.raises(ConfigError, match=r"next word at every position.*models that fit it: lm"):
        build_model(cfg.model, cfg.attention, task.spec)


@pytest.mark.slow
def test_train_resume_and_nt_asgd_from_the_command_line(tmp_path: Path) -> None:
    args = [
        *LM_TINY,
        "attention=general",
        "optim=sgd",
        "optim.lr=1",
        "optim.momentum=0",
        "optim.averaging=nt_asgd",
        "optim.nonmono=0",
        "trainer.grad_clip=0.25",
    ]
    run_cli(args, tmp_path)
    run_dir = only_run_dir(tmp_path / "outputs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    first = metrics["history"][0]
    assert {"train/ppl", "val/loss", "val/ppl", "perf/tokens_per_s"} <= set(first)
    assert math.isclose(first["val/ppl"], math.exp(first["val/loss"]), rel_tol=1e-6)
    assert math.isclose(
        metrics["test"]["test/ppl"], math.exp(metrics["test"]["test/loss"]), rel_tol=1e-6
    )
    run_cli([f"resume={run_dir}", "trainer.max_epochs=3"], tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 3


@pytest.mark.data
def test_ptb_has_the_published_counts() -> None:
    folder = data_dir() / "ptb"
    if not (folder / "ptb.train.txt").is_file():
        pytest.skip(f"PTB not found under {folder}; get it with attnlstm-download ptb")
    task = build_task(LanguageModelTaskConfig(name="lm_ptb"), seed=0)
    corpus = task.corpus
    assert len(task.vocab) == 10_000
    assert [s.numel() for s in (corpus.train, corpus.valid, corpus.test)] == [
        929_589,
        73_760,
        82_430,
    ]


@pytest.mark.parametrize(
    "experiment",
    [
        "lm_ptb_small",
        pytest.param("lm_ptb_medium", marks=pytest.mark.slow),
        pytest.param("awd_lstm_ptb", marks=pytest.mark.slow),
        pytest.param("awd_lstm_wt2", marks=pytest.mark.slow),
    ],
)
def test_presets_run_end_to_end(experiment: str, tmp_path: Path) -> None:
    """Each preset trains (shrunk) on the fixture corpus standing in for PTB / WikiText-2."""
    data = tmp_path / "data"
    for folder, names in {
        "ptb": ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
        "wikitext-2": ("train.txt", "valid.txt", "test.txt"),
    }.items():
        (data / folder).mkdir(parents=True)
        for source, name in zip(("train.txt", "valid.txt", "test.txt"), names, strict=True):
            (data / folder / name).write_text((FIXTURE / source).read_text())
    args = [
        f"experiment={experiment}",
        "attention=general",
        f"data_dir={data}",
        "task.batch_size=2",
        "task.eval_batch_size=2",
        "task.bptt=6",
        "model.embedding_size=8",
        "model.hidden_size=8",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.progress_bar=false",
        "device=cpu",
    ]
    run_cli(args, tmp_path / "run")
    metrics = json.loads((only_run_dir(tmp_path / "run" / "outputs") / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 6
    assert math.isfinite(metrics["test"]["test/ppl"])


@pytest.mark.slow  # tests/test_cli_commands.py generates from a tiny run in the default suite
def test_generate_samples_words_from_a_checkpoint(tmp_path: Path) -> None:
    run_cli([*LM_TINY, "attention=dot", "trainer.max_epochs=1"], tmp_path)
    run_dir = only_run_dir(tmp_path / "outputs")
    import subprocess
    import sys

    def sample(*extra: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "attnlstm.cli.generate", str(run_dir), "--words", "30", *extra],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return result.stdout

    text = sample("--seed", "1")
    vocabulary = set(read_words(FIXTURE / "train.txt")) | {UNK}
    words = text.split()  # <eos> is printed as a line break
    assert 0 < len(words) <= 30
    assert set(words) <= vocabulary
    assert sample("--seed", "1") == text  # seeded
    assert sample("--seed", "2", "--temperature", "5") != text
    continued = sample("--prompt", "the cat", "--words", "3")
    assert continued.startswith("the cat")


def test_residual_combination_with_zero_weights_is_the_plain_model() -> None:
    torch.manual_seed(0)
    plain = LSTMLanguageModel(20, 8, 8, 2, tie_weights=True).eval()
    attentive = LSTMLanguageModel(
        20, 8, 8, 2, tie_weights=True, attention=make_attention("general", 8, 8), residual=True
    ).eval()
    attentive.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        attentive.combine.weight.zero_()
    words = torch.randint(0, 20, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(attentive(words).logits, plain(words).logits)
        attentive.combine.weight.fill_(0.1)
        assert not torch.allclose(attentive(words).logits, plain(words).logits)


def test_next_word_values_average_the_embeddings_of_the_following_words() -> None:
    """With all the weight on one earlier key j, the context is E[w_{j+1}]: check it by
    making the scores pick the previous position (a huge dot product with itself)."""
    model = small_lm("dot", window=1, next_word=True)
    words = torch.tensor([[3, 7, 5, 9]])
    captured: list[torch.Tensor] = []
    model.attention.register_forward_hook(lambda module, args, out: captured.append(out[0]))
    with torch.no_grad():
        model(words)
    # window 1: query t attends only to key t - 1, whose value is the word at t
    expected = model.embedding(words)[:, 1:]
    torch.testing.assert_close(captured[0][:, 1:], expected)
    assert torch.equal(captured[0][:, 0], torch.zeros_like(captured[0][:, 0]))  # no earlier key
