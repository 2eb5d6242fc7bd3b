"""Word-level language modelling: ``lm_ptb``, ``lm_wikitext2`` and ``lm`` (any folder).

Each split is one stream of word ids cut into parallel rows (``batchify``) and read in BPTT
segments, left to right, as pytorch/examples' ``word_language_model`` and awd-lstm-lm do. The
model's state (LSTM states and attention memory) is carried from one segment to the next by
:meth:`LanguageModelTask.forward`, detached by the model, and reset at the start of every
training epoch and every evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnlstm.config import LanguageModelTaskConfig
from attnlstm.data.corpus import Corpus, batchify
from attnlstm.data.download import locate_files
from attnlstm.errors import ConfigError
from attnlstm.tasks.base import Meter, Monitor, Task, TaskSpec
from attnlstm.tasks.registry import register_task

#: the corpus behind each named task: folder and file names under the data directory
CORPORA: dict[str, tuple[str, str, str, str]] = {
    "lm_ptb": ("ptb", "ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    "lm_wikitext2": ("wikitext-2", "train.txt", "valid.txt", "test.txt"),
}


@dataclass
class TokenBatch:
    """One BPTT segment: inputs and next-word targets (B, T) int64; ``weight`` scales the
    segment's loss (length / bptt for awd-lstm-lm's randomised lengths, else 1)."""

    inputs: Tensor
    targets: Tensor
    weight: float = 1.0
    lengths: None = None  # every row is full: nothing is padded

    def __len__(self) -> int:
        return self.targets.numel()  # tokens: the trainer's throughput counts these

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(
            self.inputs.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            self.weight,
        )

    def select(self, count: int) -> TokenBatch:
        return TokenBatch(self.inputs[:count], self.targets[:count], self.weight)


def token_nll(output: Any, targets: Tensor, reduction: Literal["mean", "sum"]) -> Tensor:
    """The negative log-likelihood of the targets y (B, T), summed or averaged over the B * T
    tokens: -sum_k log p(y_k). From the output's ``target_log_probs`` (B, T) where the model
    gives them (an adaptive softmax, which builds no B x T x V scores), else the
    cross-entropy of its ``logits`` (B, T, V): the same quantity, so perplexities compare."""
    target_log_probs = getattr(output, "target_log_probs", None)
    if target_log_probs is not None:
        nll = -target_log_probs.reshape(-1)
        return nll.mean() if reduction == "mean" else nll.sum()
    logits = output.logits
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction
    )


class PerplexityMeter(Meter):
    """Token-weighted mean negative log-likelihood (nats) and its exponential."""

    def __init__(self) -> None:
        self.total_nll: Tensor | float = 0.0
        self.tokens = 0

    def update(self, output: Any, batch: TokenBatch) -> None:
        nll = token_nll(output, batch.targets, "sum")
        self.total_nll = self.total_nll + nll  # a tensor sum: one host sync, in compute()
        self.tokens += batch.targets.numel()

    def merge(self, other: Meter) -> None:
        assert isinstance(other, PerplexityMeter)
        self.total_nll = self.total_nll + other.total_nll
        self.tokens += other.tokens

    def compute(self) -> dict[str, float]:
        loss = float(self.total_nll) / max(self.tokens, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0))}


def resolve_corpus_files(cfg: LanguageModelTaskConfig, configured_dir: str | None) -> list[Path]:
    """The train/valid/test files of ``cfg``; a clear error naming where it looked if absent."""
    name = str(cfg.name)
    if name in CORPORA:
        folder_name, *files = CORPORA[name]
    else:
        folder_name, files = cfg.path, [cfg.train_file, cfg.valid_file, cfg.test_file]
    return locate_files(name, str(folder_name), list(files), configured_dir)


@register_task("language_model", schema=LanguageModelTaskConfig, target="tokens", inputs="tokens")
class LanguageModelTask(Task):
    """Next-word prediction on a text corpus; metrics: loss (nats per token) and perplexity."""

    monitor = Monitor("loss", "min")
    metric_names = ("loss", "ppl")
    throughput_unit = "tokens"

    def __init__(
        self, cfg: LanguageModelTaskConfig, seed: int, configured_data_dir: str | None = None
    ) -> None:
        self.cfg = cfg
        self.name = str(cfg.name)
        train, valid, test = resolve_corpus_files(cfg, configured_data_dir)
        # auto: decided by the runner from the model (attnlstm.train); left here, the ids
        # every run before the option had
        by_frequency = str(cfg.vocab_order) == "frequency"
        self.corpus = Corpus.from_files(train, valid, test, cfg.max_train_tokens, by_frequency)
        self.vocab = self.corpus.vocab
        vocab_size = len(self.vocab)
        self.spec = TaskSpec(vocab_size, vocab_size, target="tokens", inputs="tokens")
        self.train_data = self._rows(self.corpus.train, "train", train, "batch_size")
        self.eval_data = {
            "val": self._rows(self.corpus.valid, "valid", valid, "eval_batch_size"),
            "test": self._rows(self.corpus.test, "test", test, "eval_batch_size"),
        }
        self.generator = torch.Generator().manual_seed(seed)
        self._state: dict[str, Any] = {}
        self._train_nll: Tensor | float = 0.0
        self._train_tokens = 0

    # -- data -------------------------------------------------------------------------------

    def _rows(self, stream: Tensor, split: str, path: Path, key: str) -> Tensor:
        """``stream``, the ids of the ``split`` file ``path``, cut into ``task.<key>`` rows
        (:func:`batchify`); a ConfigError naming the file when it is empty, or too short for
        that many rows of two tokens or more (only then is lowering ``task.<key>`` a fix)."""
        rows = int(getattr(self.cfg, key))
        try:
            return batchify(stream, rows)  # rows x N
        except ValueError as error:
            if rows < 1:  # the config checks refuse this first; kept right all the same
                raise ConfigError(f"task.{key}={rows}: {error}") from None
        from attnlstm.data.corpus import EOS  # the line-end token: counted apart from words

        tokens = stream.numel()
        if not bool((stream != self.vocab.ids[EOS]).any()):  # no word at all
            content = "is empty" if tokens == 0 else "holds only blank lines"
            raise ConfigError(
                f"the {split} file {path} {content}; every split of a language model needs"
                " text (put the split's text there, or point task.path at a complete corpus)"
            )
        limit = self.cfg.max_train_tokens if split == "train" else None
        if limit is not None and tokens == limit:  # the file is longer: the limit cut it
            what = f"task.max_train_tokens={limit} keeps {tokens} tokens of the train file {path}"
            fix = f"raise task.max_train_tokens to at least {2 * rows}"
        else:
            what = f"the {split} file {path} has {tokens} tokens (line ends included)"
            fix = f"give it at least {2 * rows} tokens"
        raise ConfigError(
            f"{what}, too few for task.{key}={rows} rows of at least 2 tokens each; {fix}, or"
            f" lower task.{key}"
        )

    def _segments(self, data: Tensor, lengths: Iterator[int] | None = None) -> Iterator[TokenBatch]:
        position, last = 0, data.size(1) - 1
        while position < last:
            length = self.cfg.bptt if lengths is None else next(lengths)
            length = min(length, last - position)
            weight = length / self.cfg.bptt if lengths is not None else 1.0
            yield TokenBatch(
                data[:, position : position + length],
                data[:, position + 1 : position + 1 + length],
                weight,
            )
            position += length

    def _random_lengths(self) -> Iterator[int]:
        """awd-lstm-lm: bptt with probability 0.95, else bptt / 2; then N(that, 5), >= 5."""
        while True:
            draw = torch.rand((), generator=self.generator).item()
            base = self.cfg.bptt if draw < 0.95 else self.cfg.bptt / 2
            length = base + 5.0 * torch.randn((), generator=self.generator).item()
            yield max(5, int(length))

    def train_batches(self, epoch: int) -> Iterator[TokenBatch]:
        self._state["train"] = None  # each epoch starts from a zero state, as the peers
        self._train_nll, self._train_tokens = 0.0, 0
        lengths = self._random_lengths() if self.cfg.variable_bptt else None
        yield from self._segments(self.train_data, lengths)

    def num_train_batches(self) -> int:
        return math.ceil((self.train_data.size(1) - 1) / self.cfg.bptt)

    def eval_batches(self, split: Literal["val", "test"]) -> Iterator[TokenBatch]:
        self._state["eval"] = None
        yield from self._segments(self.eval_data[split])

    # -- model, loss, metrics ---------------------------------------------------------------

    def forward(self, model: nn.Module, batch: TokenBatch) -> Any:
        """Run one segment, continuing from the previous segment's (detached) state. The
        targets go in too: a model with an adaptive softmax then scores only them."""
        key = "train" if model.training else "eval"
        output = model(batch.inputs, self._state.get(key), targets=batch.targets)
        self._state[key] = output.state
        return output

    def loss(self, output: Any, batch: TokenBatch) -> Tensor:
        """weight * mean negative log-likelihood of the targets (:func:`token_nll`) + the
        model's AR/TAR penalty."""
        nll = token_nll(output, batch.targets, "mean")
        if torch.is_grad_enabled():  # training: keep the epoch's unregularised perplexity
            # a tensor sum: no host sync per step; read once at the end of the epoch
            self._train_nll = self._train_nll + nll.detach() * batch.targets.numel()
            self._train_tokens += batch.targets.numel()
        return batch.weight * nll + output.regularization

    def train_epoch_metrics(self) -> dict[str, float]:
        loss = float(self._train_nll) / max(self._train_tokens, 1)
        return {"ppl": math.exp(min(loss, 700.0))}

    def new_meter(self, split: str = "val") -> Meter:
        return PerplexityMeter()

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "vocab": self.vocab.state_dict()}

    def train_stream_state(self) -> dict[str, Any]:
        """The hidden state handed to the next segment (its fields as a dict: the model's
        state class is not the task's to import) and the epoch's perplexity sums."""
        hidden = self._state.get("train")
        return {
            "hidden": None if hidden is None else dict(vars(hidden)),
            "nll": self._train_nll,
            "tokens": self._train_tokens,
        }

    def load_train_stream_state(self, state: dict[str, Any]) -> None:
        """The language model accepts its state as the dict of its fields."""
        self._state["train"] = state.get("hidden")
        self._train_nll = state.get("nll", 0.0)
        self._train_tokens = state.get("tokens", 0)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if state.get("vocab", {}).get("words") not in (None, self.vocab.words):
            raise ConfigError(
                "the checkpoint's vocabulary differs from this corpus's; resume with the same"
                " data files"
            )
