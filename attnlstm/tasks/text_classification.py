"""Text classification (``task=sst2``, ``task=text_classification``): one class per text.

The model reads token ids (B, T) with their lengths and predicts class scores (B, C)
(``prediction``); the loss is the mean cross-entropy, the metrics are accuracy and the macro
F1 (the unweighted mean over classes of 2 P R / (P + R)). The data: see
:class:`attnlstm.config.TextClassificationTaskConfig` and :mod:`attnlstm.data.text_classification`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnlstm.batch import SequenceBatch
from attnlstm.config import TextClassificationTaskConfig
from attnlstm.contracts import SpecialTokens
from attnlstm.data.corpus import Vocabulary
from attnlstm.data.download import locate_files
from attnlstm.data.text_classification import (
    PAD_ID,
    UNK_ID,
    LabelledText,
    TextFileError,
    delimiter_for,
    make_vocabulary,
    read_labelled_texts,
    subword_ids,
)
from attnlstm.errors import ConfigError
from attnlstm.tasks.base import AttentionMap, Meter, Monitor, Task, TaskSpec
from attnlstm.tasks.registry import register_task

#: batches per pool of training texts sorted by length before being cut into batches
POOL_BATCHES = 50

#: a text as the task keeps it: word ids, label id, its words' subword ids (T, K) or None
Encoded = tuple[list[int], int, Tensor | None]


def word_ids(inputs: Tensor) -> Tensor:
    """The word ids (B, T) of a batch's inputs: (B, T) itself, or column 0 of (B, T, 1 + K)."""
    return inputs[..., 0] if inputs.dim() == 3 else inputs


class ClassificationMeter(Meter):
    """Mean loss, accuracy and macro F1 over the texts of one evaluation."""

    def __init__(self, num_classes: int) -> None:
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)  # gold x pred
        self.loss_sum = 0.0

    def update(self, output: Any, batch: SequenceBatch) -> None:
        logits = output.prediction.float()
        targets = batch.targets
        self.loss_sum += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
        predicted = logits.argmax(dim=-1)
        classes = self.confusion.size(0)
        pairs = (targets.cpu() * classes + predicted.cpu()).bincount(minlength=classes**2)
        self.confusion += pairs.view(classes, classes)

    def merge(self, other: Meter) -> None:
        assert isinstance(other, ClassificationMeter)
        self.confusion += other.confusion
        self.loss_sum += other.loss_sum

    def compute(self) -> dict[str, float]:
        total = int(self.confusion.sum())
        true_positive = self.confusion.diag().double()
        predicted = self.confusion.sum(dim=0).double()
        gold = self.confusion.sum(dim=1).double()
        # F1 = 2 TP / (gold + predicted); a class never gold nor predicted counts as 0
        f1 = 2 * true_positive / (gold + predicted).clamp(min=1)
        return {
            "loss": self.loss_sum / max(total, 1),
            "acc": float(true_positive.sum()) / max(total, 1),
            "macro_f1": float(f1.mean()),
        }


@register_task(
    "text_classification", schema=TextClassificationTaskConfig, target="value", inputs="tokens"
)
class TextClassificationTask(Task):
    """Labelled texts in, one class per text out."""

    metric_names = ("loss", "acc", "macro_f1")
    monitor = Monitor("acc", "max")
    throughput_unit = "texts"
    classifies = True

    def __init__(
        self, cfg: TextClassificationTaskConfig, seed: int, data_dir: str | None = None
    ) -> None:
        self.cfg = cfg
        self.name = str(cfg.name)
        files = [cfg.train_file, cfg.valid_file, cfg.test_file]
        paths = locate_files(self.name, cfg.path, files, data_dir)
        splits = []
        for path in paths:
            try:
                splits.append(
                    read_labelled_texts(
                        path,
                        cfg.label_column,
                        cfg.text_column,
                        delimiter_for(path.name, cfg.delimiter),
                        cfg.header,
                        cfg.lowercase,
                        cfg.unescape_ptb,
                    )
                )
            except TextFileError as error:
                raise ConfigError(f"task={self.name}: {error}") from None
        train, valid, test = splits
        self.classes = sorted({example.label for example in train})
        if len(self.classes) < 2:
            raise ConfigError(
                f"task={self.name}: the training file {paths[0]} has one label only"
                f" ({self.classes[0]!r}); check task.label_column"
            )
        for split, examples, path in (("valid", valid, paths[1]), ("test", test, paths[2])):
            unknown = sorted({e.label for e in examples} - set(self.classes))
            if unknown:
                raise ConfigError(
                    f"task={self.name}: the {split} file {path} has labels the training file"
                    f" lacks: {', '.join(unknown[:5])}"
                )
        self.vocab = make_vocabulary((e.tokens for e in train), cfg.min_count)
        self._subword_cache: dict[str, list[int]] = {}
        self.spec = TaskSpec(
            len(self.vocab),
            len(self.classes),
            target="value",
            inputs="tokens",
            special=SpecialTokens(pad=PAD_ID, unk=UNK_ID, bos=None, eos=None),
            subword_buckets=cfg.subword_buckets,
        )
        self.train_data = self._encode(train)
        self.eval_data = {
            "val": self._batches(self._encode(valid), list(range(len(valid)))),
            "test": self._batches(self._encode(test), list(range(len(test)))),
        }
        self.generator = torch.Generator().manual_seed(seed)

    # -- data -------------------------------------------------------------------------------

    def _encode(self, examples: Sequence[LabelledText]) -> list[Encoded]:
        """Each text as (word ids, label id, its words' subword ids (T, K) or None), K being
        the most n-grams any of its words has, 0 after a word's own."""
        label_ids = {label: index for index, label in enumerate(self.classes)}
        limit = self.cfg.max_tokens
        encoded = []
        for example in examples:
            tokens = example.tokens[:limit]
            subwords = None
            if self.cfg.subword_buckets > 0:
                ngrams = [self._subwords_of(token) for token in tokens]
                width = max(len(ids) for ids in ngrams)
                # int32 halves the memory of the whole training set's subwords
                subwords = torch.tensor(
                    [ids + [0] * (width - len(ids)) for ids in ngrams], dtype=torch.int32
                )
            encoded.append((self.vocab.encode(tokens, UNK_ID), label_ids[example.label], subwords))
        return encoded

    def _subwords_of(self, word: str) -> list[int]:
        """:func:`subword_ids` of ``word`` under this task's settings, computed once per word."""
        ids = self._subword_cache.get(word)
        if ids is None:
            cfg = self.cfg
            ids = subword_ids(word, cfg.subword_buckets, cfg.subword_min_n, cfg.subword_max_n)
            self._subword_cache[word] = ids
        return ids

    def _collate(self, examples: Sequence[Encoded]) -> SequenceBatch:
        """Token ids (B, T), or with subwords (B, T, 1 + K): the word id, then its K n-gram
        ids (K: the most any word of the batch has), 0 beyond them and beyond each text."""
        lengths = torch.tensor([len(ids) for ids, _, _ in examples], dtype=torch.long)
        longest = int(lengths.max())
        if self.cfg.subword_buckets > 0:
            # every text was encoded with its subwords (_encode), and none is empty
            width = 1 + max(subs.size(1) for _, _, subs in examples)  # type: ignore[union-attr]
            tokens = torch.full((len(examples), longest, width), PAD_ID, dtype=torch.long)
            for row, (ids, _, subs) in enumerate(examples):
                tokens[row, : len(ids), 0] = torch.tensor(ids, dtype=torch.long)
                tokens[row, : len(ids), 1 : 1 + subs.size(1)] = subs  # type: ignore[union-attr]
        else:
            tokens = torch.full((len(examples), longest), PAD_ID, dtype=torch.long)
            for row, (ids, _, _) in enumerate(examples):
                tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        targets = torch.tensor([label for _, label, _ in examples], dtype=torch.long)
        return SequenceBatch(tokens, targets, lengths)

    def _batches(
        self, examples: Sequence[Encoded], order: list[int], size: int | None = None
    ) -> list[SequenceBatch]:
        """Batches of ``size`` examples taken in ``order``, sorted by length within pools of
        POOL_BATCHES batches (less padding, same examples)."""
        size = size or self.cfg.eval_batch_size
        pool_size = size * POOL_BATCHES
        batches = []
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start : start + pool_size], key=lambda i: len(examples[i][0]))
            batches.extend(
                self._collate([examples[i] for i in pool[j : j + size]])
                for j in range(0, len(pool), size)
            )
        return batches

    def train_batches(self, epoch: int) -> Iterator[SequenceBatch]:
        order = torch.randperm(len(self.train_data), generator=self.generator).tolist()
        batches = self._batches(self.train_data, order, self.cfg.batch_size)
        shuffled = torch.randperm(len(batches), generator=self.generator).tolist()
        for index in shuffled:
            batch = batches[index]
            if self.cfg.word_dropout > 0:
                # the word ids only: a dropped word keeps its subwords
                words = word_ids(batch.inputs)
                drop = torch.rand(words.shape, generator=self.generator)
                dropped = words.masked_fill(
                    (drop < self.cfg.word_dropout) & (words != PAD_ID), UNK_ID
                )
                if batch.inputs.dim() == 3:
                    batch.inputs = torch.cat([dropped.unsqueeze(-1), batch.inputs[..., 1:]], -1)
                else:
                    batch.inputs = dropped
            yield batch

    def num_train_batches(self) -> int:
        return -(-len(self.train_data) // self.cfg.batch_size)

    def eval_batches(self, split: Literal["val", "test"]) -> list[SequenceBatch]:
        return self.eval_data[split]

    # -- loss and metrics -------------------------------------------------------------------

    def loss(self, output: Any, batch: SequenceBatch) -> Tensor:
        """Mean cross-entropy, targets smoothed by ``task.label_smoothing`` in training."""
        smoothing = self.cfg.label_smoothing if output.prediction.requires_grad else 0.0
        return nn.functional.cross_entropy(
            output.prediction, batch.targets, label_smoothing=smoothing
        )

    def new_meter(self, split: str = "val") -> Meter:
        return ClassificationMeter(len(self.classes))

    def attention_maps(self, output: Any, batch: SequenceBatch) -> list[AttentionMap] | None:
        """One heatmap per text: its pooling weights over its words (the words the model read,
        ``<unk>`` for unknown ones, label the x axis), the row labelled with the text's gold
        and predicted class."""
        maps = super().attention_maps(output, batch)
        if not maps:
            return maps
        weights = maps[0].weights  # (B, T), on the CPU
        tokens = word_ids(batch.inputs.cpu())
        lengths = batch.lengths if batch.lengths is not None else (tokens != PAD_ID).sum(dim=1)
        gold = batch.targets.cpu().tolist()
        predicted = output.prediction.detach().argmax(dim=-1).cpu().tolist()
        texts = []
        for row, length in enumerate(lengths.tolist()):
            texts.append(
                AttentionMap(
                    weights[row : row + 1, :length],
                    [f"gold {self.classes[gold[row]]}\npred {self.classes[predicted[row]]}"],
                    self.vocab.decode(tokens[row, :length].tolist()),
                    title=f"{self.name}: attention over the words of text {row}",
                    x_label="word",
                    y_label="",
                    colour_max=None,
                )
            )
        return texts

    def _subword_settings(self) -> dict[str, int]:
        """What turns a word into its subword ids (empty without subwords): a model trained
        on one hashing cannot read another's."""
        cfg = self.cfg
        if cfg.subword_buckets <= 0:
            return {}
        return {
            "buckets": cfg.subword_buckets,
            "min_n": cfg.subword_min_n,
            "max_n": cfg.subword_max_n,
        }

    def state_dict(self) -> dict[str, Any]:
        state = {
            "generator": self.generator.get_state(),
            "vocab": self.vocab.state_dict(),
            "classes": list(self.classes),
        }
        if self.cfg.subword_buckets > 0:
            state["subwords"] = self._subword_settings()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if state.get("classes", self.classes) != self.classes:
            raise ConfigError(
                f"the checkpoint's classes {state['classes']} differ from these files'"
                f" {self.classes}; resume with the same data and task settings"
            )
        if state.get("subwords", {}) != self._subword_settings():
            raise ConfigError(
                f"the checkpoint's subword settings {state.get('subwords') or 'none'} differ"
                f" from these task settings' {self._subword_settings() or 'none'}"
                " (task.subword_buckets, task.subword_min_n, task.subword_max_n); resume with"
                " the run's settings"
            )
        if state.get("vocab", {}).get("words") not in (None, self.vocab.words):
            raise ConfigError(
                "the checkpoint's vocabulary differs from these files'; resume with the same"
                " data and task settings"
            )


__all__ = ["ClassificationMeter", "TextClassificationTask", "Vocabulary"]
