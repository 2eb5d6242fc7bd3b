"""Part-of-speech tagging: ``pos_ewt`` (UD English EWT), ``pos_toy`` (the PyTorch tutorial's
two sentences) and ``pos`` (any folder of CoNLL-U files).

Training batches are shuffled and bucketed: each pool of ``50 * batch_size`` shuffled sentences
is sorted by length and cut into batches, and the batches are shuffled, so a batch pads little
and the order still changes every epoch (seeded, so a resumed run sees the same batches).
Metrics: mean cross-entropy per word, token accuracy (padding excluded) and the accuracy on
words whose form never occurs in training; at test time also the accuracy of every gold tag.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnlstm.config import TaggingTaskConfig
from attnlstm.contracts import SpecialTokens
from attnlstm.data.conllu import ConlluError, TaggedSentence, read_conllu
from attnlstm.data.download import locate_files
from attnlstm.data.tagging import (
    IGNORE,
    PAD_ID,
    UNK_ID,
    EncodedSentence,
    TaggingBatch,
    TaggingVocab,
    collate,
    encode_sentence,
)
from attnlstm.errors import ConfigError
from attnlstm.tasks.base import Meter, Monitor, Task, TaskSpec
from attnlstm.tasks.registry import register_task

log = logging.getLogger(__name__)

#: PyTorch's "Sequence models and LSTM networks" tutorial: its whole training set
TOY_SENTENCES = (
    TaggedSentence(("The", "dog", "ate", "the", "apple"), ("DET", "NN", "V", "DET", "NN")),
    TaggedSentence(("Everybody", "read", "that", "book"), ("NN", "V", "DET", "NN")),
)
#: sentences per pool that is sorted by length before being cut into training batches
POOL_BATCHES = 50


class TaggingMeter(Meter):
    """Loss, accuracy and unseen-word accuracy over real words; with ``per_tag``, the accuracy
    of each gold tag too (``acc_<TAG>``); ``aux_acc`` when the batches have auxiliary tags."""

    def __init__(self, tag_names: Sequence[str], per_tag: bool = False) -> None:
        self.tag_names = list(tag_names)
        self.per_tag = per_tag
        self.loss_sum: Tensor | float = 0.0
        self.correct: Tensor | int = 0
        self.words = 0
        self.unseen_correct: Tensor | int = 0
        self.unseen_words: Tensor | int = 0
        self.tag_correct = torch.zeros(len(tag_names), dtype=torch.long)
        self.tag_total = torch.zeros(len(tag_names), dtype=torch.long)
        self.aux_correct: Tensor | int | None = None

    def update(self, output: Any, batch: TaggingBatch) -> None:
        logits, targets = output.logits, batch.targets  # B x T x K, B x T
        real = targets != IGNORE
        self.loss_sum = self.loss_sum + nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
        )
        hits = (logits.argmax(-1) == targets) & real
        unseen = batch.unseen & real
        # tensor sums: one host sync per evaluation, in compute()
        self.correct = self.correct + hits.sum()
        self.words += int(batch.lengths.sum())
        self.unseen_correct = self.unseen_correct + (hits & unseen).sum()
        self.unseen_words = self.unseen_words + unseen.sum()
        aux_logits = getattr(output, "aux_logits", None)
        if aux_logits is not None and batch.aux_targets is not None:
            aux_hits = (aux_logits.argmax(-1) == batch.aux_targets) & real
            self.aux_correct = (self.aux_correct or 0) + aux_hits.sum()
        if self.per_tag:
            gold = targets[real].cpu()
            size = len(self.tag_names)
            self.tag_total += torch.bincount(gold, minlength=size)
            self.tag_correct += torch.bincount(gold[hits[real].cpu()], minlength=size)

    def merge(self, other: Meter) -> None:
        assert isinstance(other, TaggingMeter)
        self.loss_sum = self.loss_sum + other.loss_sum
        self.correct = self.correct + other.correct
        self.words += other.words
        self.unseen_correct = self.unseen_correct + other.unseen_correct
        self.unseen_words = self.unseen_words + other.unseen_words
        self.tag_correct += other.tag_correct
        self.tag_total += other.tag_total
        if other.aux_correct is not None:
            self.aux_correct = (self.aux_correct or 0) + other.aux_correct

    def compute(self) -> dict[str, float]:
        words = max(self.words, 1)
        unseen = int(self.unseen_words)
        metrics = {
            "loss": float(self.loss_sum) / words,
            "acc": float(self.correct) / words,
            # no unseen word at all (e.g. the toy task): nothing to get wrong
            "unseen_acc": float(self.unseen_correct) / unseen if unseen else 1.0,
        }
        if self.aux_correct is not None:
            metrics["aux_acc"] = float(self.aux_correct) / words
        if self.per_tag:
            for name, hit, total in zip(
                self.tag_names, self.tag_correct.tolist(), self.tag_total.tolist(), strict=True
            ):
                if total:
                    metrics[f"acc_{name}"] = hit / total
            metrics["unseen_words"] = float(unseen)
        return metrics


def _mean_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
    """logits (B, T, K), targets (B, T) with :data:`IGNORE` at padding -> the mean over real
    words."""
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), label_smoothing=label_smoothing
    )


def resolve_treebank_files(cfg: TaggingTaskConfig, configured_dir: str | None) -> list[Path]:
    """The train/valid/test CoNLL-U files of ``cfg``; a clear error naming where it looked."""
    files = [cfg.train_file, cfg.valid_file, cfg.test_file]
    return locate_files(str(cfg.name), cfg.path, files, configured_dir)


@register_task("tagging", schema=TaggingTaskConfig, target="tags", inputs="tokens")
class TaggingTask(Task):
    """One tag per word of a sentence; the monitor is the validation accuracy."""

    monitor = Monitor("acc", "max")
    metric_names = ("loss", "acc", "unseen_acc")
    throughput_unit = "words"
    classifies = True

    def __init__(
        self, cfg: TaggingTaskConfig, seed: int, configured_data_dir: str | None = None
    ) -> None:
        aux_column = None if str(cfg.aux_tag_column) == "none" else str(cfg.aux_tag_column)
        self.cfg = cfg
        self.name = str(cfg.name)
        if self.name == "pos_toy":
            train = valid = test = list(TOY_SENTENCES)
        else:
            paths = resolve_treebank_files(cfg, configured_data_dir)
            try:
                train, valid, test = (
                    read_conllu(p, str(cfg.tag_column), aux_column) for p in paths
                )
            except ConlluError as error:
                raise ConfigError(f"task={self.name}: malformed CoNLL-U: {error}") from None
        for split, sentences in (("train", train), ("valid", valid), ("test", test)):
            if not sentences:
                raise ConfigError(f"task={self.name}: the {split} split has no sentences")
        self.vocab = TaggingVocab.from_sentences(train, cfg.min_count, cfg.lowercase)
        # a tag only the valid or test split uses is still a class (never learned, always an
        # error when gold), so that its words count in the accuracy instead of failing the run
        unseen_tags = {t for s in (*valid, *test) for t in s.tags if t not in self.vocab.tags}
        if unseen_tags:
            log.warning("tags not in the training split: %s", ", ".join(sorted(unseen_tags)))
            for tag in sorted(unseen_tags):
                self.vocab.tags.add(tag)
        aux_tags = self.vocab.aux_tags
        if aux_tags is not None:  # the same for the auxiliary column
            for tag in sorted(
                {t for s in (*valid, *test) for t in s.aux_tags or ()} - set(aux_tags.words)
            ):
                aux_tags.add(tag)
        self.spec = TaskSpec(
            input_size=len(self.vocab.words),
            output_size=len(self.vocab.tags),
            target="tags",
            inputs="tokens",
            char_vocab_size=len(self.vocab.chars),
            aux_output_size=0 if aux_tags is None else len(aux_tags),
            special=SpecialTokens(pad=PAD_ID, unk=UNK_ID),
        )
        self.drop_probability = self._word_drop_probability(train)
        self.train_data = self._encode(train, "train")
        self.eval_data = {"val": self._encode(valid, "valid"), "test": self._encode(test, "test")}
        self.generator = torch.Generator().manual_seed(seed)

    def _word_drop_probability(self, train: Sequence[TaggedSentence]) -> Tensor:
        """(V,) probability that training replaces each word id by ``<unk>``:
        1 - (1 - p) * (1 - alpha / (alpha + count(w))), p = ``word_dropout``; 0 for padding
        and ``<unk>``."""
        counts = torch.zeros(len(self.vocab.words))
        for sentence in train:
            ids = self.vocab.words.encode([self.vocab.normalize(w) for w in sentence.words], UNK_ID)
            counts += torch.bincount(torch.tensor(ids), minlength=counts.numel())
        keep = torch.full_like(counts, 1.0 - self.cfg.word_dropout)
        alpha = self.cfg.word_dropout_alpha
        if alpha > 0:
            keep = keep * (1.0 - alpha / (alpha + counts))
        probability = 1.0 - keep
        probability[:2] = 0.0  # padding and <unk>: nothing to drop
        return probability

    def _encode(self, sentences: Sequence[TaggedSentence], split: str) -> list[EncodedSentence]:
        try:
            return [
                encode_sentence(self.vocab, s.words, s.tags, self.cfg.max_word_chars, s.aux_tags)
                for s in sentences
            ]
        except ValueError as error:
            raise ConfigError(f"task={self.name}, {split} split: {error}") from None

    # -- data -------------------------------------------------------------------------------

    def train_batches(self, epoch: int) -> Iterator[TaggingBatch]:
        size = self.cfg.batch_size
        order = torch.randperm(len(self.train_data), generator=self.generator).tolist()
        batches: list[list[int]] = []
        pool_size = size * POOL_BATCHES
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start : start + pool_size], key=lambda i: len(self.train_data[i]))
            batches.extend(pool[i : i + size] for i in range(0, len(pool), size))
        for index in torch.randperm(len(batches), generator=self.generator).tolist():
            batch = collate([self.train_data[i] for i in batches[index]])
            if self.cfg.word_dropout > 0 or self.cfg.word_dropout_alpha > 0:
                draw = torch.rand(batch.words.shape, generator=self.generator)
                drop = draw < self.drop_probability[batch.words]  # padding: probability 0
                batch.words = batch.words.masked_fill(drop, UNK_ID)
            yield batch

    def num_train_batches(self) -> int:
        size, pool_size = self.cfg.batch_size, self.cfg.batch_size * POOL_BATCHES
        full_pools, rest = divmod(len(self.train_data), pool_size)
        return full_pools * POOL_BATCHES + -(-rest // size)

    def eval_batches(self, split: Literal["val", "test"]) -> Iterator[TaggingBatch]:
        sentences = sorted(self.eval_data[split], key=len)  # little padding; order is moot
        size = self.cfg.eval_batch_size
        for start in range(0, len(sentences), size):
            yield collate(sentences[start : start + size])

    # -- model, loss, metrics ---------------------------------------------------------------

    def forward(self, model: nn.Module, batch: TaggingBatch) -> Any:
        return model(batch.words, batch.chars, batch.char_lengths, batch.lengths)

    def loss(self, output: Any, batch: TaggingBatch) -> Tensor:
        """Mean cross-entropy over the real words of the batch, against targets smoothed by
        ``task.label_smoothing``; plus ``task.aux_weight`` times the same for the auxiliary
        tags when the model predicts them."""
        smoothing = self.cfg.label_smoothing
        loss = _mean_cross_entropy(output.logits, batch.targets, smoothing)
        aux_logits = getattr(output, "aux_logits", None)
        if aux_logits is not None and batch.aux_targets is not None:
            aux_loss = _mean_cross_entropy(aux_logits, batch.aux_targets, smoothing)
            loss = loss + self.cfg.aux_weight * aux_loss
        return loss

    def new_meter(self, split: str = "val") -> Meter:
        return TaggingMeter(self.vocab.tags.words, per_tag=split == "test")

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "vocab": self.vocab.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if state.get("vocab") not in (None, self.vocab.state_dict()):
            raise ConfigError(
                "the checkpoint's vocabulary differs from this treebank's; resume with the same"
                " data files and task.min_count / task.lowercase"
            )
