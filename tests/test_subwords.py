"""Subword features of text classification (``task.subword_buckets``): the hashed character
n-grams, the batches that carry them, and the embedding that reads them."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from attnlstm.cli import evaluate
from attnlstm.config import SequenceModelConfig, TextClassificationTaskConfig
from attnlstm.contracts import SpecialTokens, TaskSpec
from attnlstm.data.text_classification import (
    UNK_ID,
    char_ngrams,
    read_labelled_texts,
    subword_ids,
)
from attnlstm.errors import ConfigError
from attnlstm.models import build_model
from attnlstm.models.common import EmbeddedTokens
from tests.conftest import only_run_dir, run_cli
from tests.test_text_classification import FIXTURE, _task


def test_char_ngrams_by_hand() -> None:
    assert char_ngrams("fun", 3, 4) == ["<fu", "fun", "un>", "<fun", "fun>"]
    assert char_ngrams("a", 3, 5) == ["<a>"]  # "<a>" is 3 characters; no 4- or 5-gram
    assert char_ngrams("ab", 2, 2) == ["<a", "ab", "b>"]


def test_subword_ids_are_crc32_buckets_from_one() -> None:
    ids = subword_ids("fun", 7, 3, 4)
    expected = [1 + zlib.crc32(g.encode()) % 7 for g in ["<fu", "fun", "un>", "<fun", "fun>"]]
    assert ids == expected
    assert all(1 <= i <= 7 for i in subword_ids("unfunny", 7, 2, 6))
    # the same in every process (Python's hash() is salted per process): CRC-32 of "<a>"
    # is 0x6FB782AB = 1874297515, and 1 + 1874297515 mod 1000 = 516
    assert subword_ids("a", 1000, 3, 3) == [516]


def test_batches_carry_each_words_ngrams_after_its_id() -> None:
    task = _task(subword_buckets=50)
    assert task.spec.subword_buckets == 50
    batch = task.eval_batches("test")[0]
    assert batch.inputs.dim() == 3
    test_texts = [e.tokens for e in read_labelled_texts(FIXTURE / "test.tsv", "0", "1", "\t")]
    checked = 0
    for row in range(len(batch)):
        length = int(batch.lengths[row])
        words = batch.inputs[row, :length, 0].tolist()
        # the text this row holds (sorted by length inside a pool): find it by its word ids
        text = next(t for t in test_texts if task.vocab.encode(t, UNK_ID) == words)
        for column, word in enumerate(text):
            ngrams = subword_ids(word, 50, 3, 5)
            row_ids = batch.inputs[row, column, 1:].tolist()
            assert row_ids[: len(ngrams)] == ngrams
            assert all(i == 0 for i in row_ids[len(ngrams) :])
            checked += 1
        assert (batch.inputs[row, length:] == 0).all()  # padding: no word, no n-gram
    assert checked > 0


def test_word_dropout_keeps_the_ngrams() -> None:
    plain = next(iter(_task(subword_buckets=50).train_batches(1)))
    dropped = next(iter(_task(subword_buckets=50, word_dropout=0.5).train_batches(1)))
    assert torch.equal(plain.inputs[..., 1:], dropped.inputs[..., 1:])
    changed = plain.inputs[..., 0] != dropped.inputs[..., 0]
    assert changed.any() and (dropped.inputs[..., 0][changed] == UNK_ID).all()


def test_without_subwords_batches_are_unchanged() -> None:
    assert _task().eval_batches("test")[0].inputs.dim() == 2
    assert _task().spec.subword_buckets == 0


def test_config_refuses_bad_subword_settings() -> None:
    with pytest.raises(ConfigError, match=r"task\.subword_buckets=-1 is not allowed"):
        TextClassificationTaskConfig(path="x", subword_buckets=-1)
    with pytest.raises(ConfigError, match=r"task\.subword_max_n=2 is not allowed"):
        TextClassificationTaskConfig(path="x", subword_min_n=3, subword_max_n=2)
    with pytest.raises(ConfigError, match=r"task\.subword_min_n=0 is not allowed"):
        TextClassificationTaskConfig(path="x", subword_min_n=0)


class _Identity(torch.nn.Module):
    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return inputs


def test_embedding_is_word_vector_plus_mean_ngram_vector_by_hand() -> None:
    torch.manual_seed(0)
    embed = EmbeddedTokens(6, 3, 0.0, 0, _Identity(), subword_buckets=9, unk=1)  # type: ignore[arg-type]
    words, grams = embed.embedding.weight, embed.subwords.weight  # type: ignore[union-attr]
    tokens = torch.tensor(
        [
            [[4, 2, 5, 0], [1, 7, 0, 0], [4, 2, 5, 0]],  # a word, an unknown one, the word again
            [[1, 3, 3, 8], [0, 0, 0, 0], [0, 0, 0, 0]],  # another unknown word, padding
        ]
    )
    out = embed(tokens, None)
    expected = torch.stack(
        [
            torch.stack(
                [
                    words[4] + (grams[2] + grams[5]) / 2,
                    words[1] + grams[7],
                    words[4] + (grams[2] + grams[5]) / 2,
                ]
            ),
            torch.stack([words[1] + (2 * grams[3] + grams[8]) / 3, torch.zeros(3), torch.zeros(3)]),
        ]
    )
    torch.testing.assert_close(out, expected)
    # gradients reach the n-gram vectors of unknown words
    out.sum().backward()
    assert embed.subwords.weight.grad[7].abs().sum() > 0  # type: ignore[union-attr]
    assert embed.subwords.weight.grad[6].abs().sum() == 0  # type: ignore[union-attr]


def test_embedding_refuses_the_other_input_shape() -> None:
    with_subwords = EmbeddedTokens(6, 3, 0.0, 0, _Identity(), subword_buckets=9, unk=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="subword_buckets > 0"):
        with_subwords(torch.tensor([[2, 3]]), None)
    plain = EmbeddedTokens(6, 3, 0.0, 0, _Identity())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="subword_buckets=0"):
        plain(torch.zeros(1, 2, 3, dtype=torch.long), None)


def test_text_alone_same_as_padded_with_subwords() -> None:
    torch.manual_seed(0)
    cfg = SequenceModelConfig(name="lstm_attn", hidden_size=6, head_size=5, embedding_size=4)
    spec = TaskSpec(
        20, 2, "value", "tokens", special=SpecialTokens(pad=0, unk=1), subword_buckets=30
    )
    model = build_model(cfg, OmegaConf.create({"method": "additive", "hidden_dim": None}), spec)
    model.eval()
    short = torch.tensor([[[4, 3, 9], [1, 5, 0], [6, 2, 2]]])
    padded = torch.zeros(2, 5, 4, dtype=torch.long)
    padded[0, :3, :3] = short[0]
    padded[1] = torch.tensor(
        [[7, 1, 2, 3], [1, 4, 4, 4], [9, 8, 0, 0], [10, 30, 0, 0], [1, 1, 0, 0]]
    )
    alone = model(short, torch.tensor([3])).prediction
    together = model(padded, torch.tensor([3, 5])).prediction
    torch.testing.assert_close(alone[0], together[0])


def test_spec_round_trip_and_old_checkpoints() -> None:
    spec = TaskSpec(20, 2, "value", "tokens", subword_buckets=30)
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    old = spec.to_dict()
    del old["subword_buckets"]  # a checkpoint written before subwords existed
    assert TaskSpec.from_dict(old).subword_buckets == 0


def test_train_and_evaluate_with_subwords_end_to_end(tmp_path: Path) -> None:
    run_cli(
        [
            "task=text_classification",
            f"task.path={FIXTURE}",
            "task.subword_buckets=64",
            "model=lstm_attn",
            "attention=feedforward",
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
    assert metrics["status"] == "completed"
    state = torch.load(run / "best.pt", weights_only=True)
    names = set(state["model"])
    assert any("subwords" in name for name in names)
    # the run folder rebuilds its model and its subword features: the test metrics again
    scores = evaluate.evaluate(run, "test")
    assert scores["acc"] == pytest.approx(metrics["test"]["test/acc"])
    assert scores["loss"] == pytest.approx(metrics["test"]["test/loss"], rel=1e-5)


def test_a_checkpoint_of_other_subword_settings_is_refused() -> None:
    """The n-gram range is not in the model's shape: the task state carries it, so resuming
    or evaluating with another range is refused rather than read wrongly."""
    trained = _task(subword_buckets=50)
    _task(subword_buckets=50).load_state_dict(trained.state_dict())  # the same: accepted
    for other in (
        _task(subword_buckets=50, subword_min_n=2),
        _task(subword_buckets=50, subword_max_n=6),
        _task(),
    ):
        with pytest.raises(ConfigError, match="subword settings"):
            other.load_state_dict(trained.state_dict())
    with pytest.raises(ConfigError, match="subword settings"):
        trained.load_state_dict(_task().state_dict())
    assert "subwords" not in _task().state_dict()  # words-only runs keep their old state
