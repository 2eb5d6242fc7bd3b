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
)
from attnlstm.errors import ConfigError
from attnlstm.tasks.base import AttentionMap, Meter, Monitor, Task, TaskSpec
from attnlstm.tasks.registry import register_task

#: batches per pool of training texts sorted by length before being cut into batches
POOL_BATCHES = 50


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
        self.spec = TaskSpec(
            len(self.vocab),
            len(self.classes),
            target="value",
            inputs="tokens",
            special=SpecialTokens(pad=PAD_ID, unk=UNK_ID, bos=None, eos=None),
        )
        self.train_data = self._encode(train)
        self.eval_data = {
            "val": self._batches(self._encode(valid), list(range(len(valid)))),
            "test": self._batches(self._encode(test), list(range(len(test)))),
        }
        self.generator = torch.Generator().manual_seed(seed)

    # -- data -------------------------------------------------------------------------------

    def _encode(self, examples: Sequence[LabelledText]) -> list[tuple[list[int], int]]:
        label_ids = {label: index for index, label in enumerate(self.classes)}
        limit = self.cfg.max_tokens
        return [(self.vocab.encode(e.tokens[:limit], UNK_ID), label_ids[e.label]) for e in examples]

    def _collate(self, examples: Sequence[tuple[list[int], int]]) -> SequenceBatch:
        lengths = torch.tensor([len(ids) for ids, _ in examples], dtype=torch.long)
        tokens = torch.full((len(examples), int(lengths.max())), PAD_ID, dtype=torch.long)
        for row, (ids, _) in enumerate(examples):
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        targets = torch.tensor([label for _, label in examples], dtype=torch.long)
        return SequenceBatch(tokens, targets, lengths)

    def _batches(
        self, examples: Sequence[tuple[list[int], int]], order: list[int], size: int | None = None
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
                drop = torch.rand(batch.inputs.shape, generator=self.generator)
                real = batch.inputs != PAD_ID
                batch.inputs = batch.inputs.masked_fill(
                    (drop < self.cfg.word_dropout) & real, UNK_ID
                )
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
        tokens = batch.inputs.cpu()
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

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "vocab": self.vocab.state_dict(),
            "classes": list(self.classes),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if state.get("classes", self.classes) != self.classes:
            raise ConfigError(
                f"the checkpoint's classes {state['classes']} differ from these files'"
                f" {self.classes}; resume with the same data and task settings"
            )
        if state.get("vocab", {}).get("words") not in (None, self.vocab.words):
            raise ConfigError(
                "the checkpoint's vocabulary differs from these files'; resume with the same"
                " data and task settings"
            )


__all__ = ["ClassificationMeter", "TextClassificationTask", "Vocabulary"]
