"""Sequence-to-sequence tasks: ``reverse`` and ``sort`` (synthetic) and ``translation``
(English-French sentence pairs).

Training is teacher-forced: the loss is the mean cross-entropy of every target token and the
final EOS. Every evaluation also decodes greedily; the test split decodes with beam search too
(``task.beam_size`` > 1). Metrics:

- ``loss``, ``acc``: cross-entropy and accuracy of the teacher-forced next-token predictions;
- ``exact``: the share of greedy outputs identical to one of the source's references;
- ``bleu``: corpus BLEU (sacrebleu, every reference of a source) of the greedy outputs, on the
  task's own tokens (``tokenize="none"``: the text is already tokenised, punctuation split
  off, by the normalisation); ``beam_exact`` / ``beam_bleu`` the same for beam search (test);
- synthetic tasks at test: ``exact_len_<lo>_<hi>`` per source-length bucket.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sacrebleu
import torch
from torch import Tensor, nn

from attnlstm.config import (
    Seq2SeqTaskConfig,
    SyntheticSeq2SeqTaskConfig,
    TranslationTaskConfig,
)
from attnlstm.contracts import SpecialTokens
from attnlstm.data.corpus import Vocabulary
from attnlstm.data.download import locate_files
from attnlstm.data.seq2seq import (
    BOS_ID,
    EOS_ID,
    IGNORE,
    PAD_ID,
    UNK_ID,
    Pair,
    Seq2SeqBatch,
    collate,
    make_vocabulary,
    read_sentence_pairs,
    split_by_source,
    synthetic_pairs,
    synthetic_vocabulary,
    tutorial_filter,
)
from attnlstm.errors import ConfigError
from attnlstm.tasks.base import AttentionMap, Meter, Monitor, Task, TaskSpec
from attnlstm.tasks.registry import register_task

#: batches per pool of training pairs sorted by length before being cut into batches
POOL_BATCHES = 50


@dataclass
class Seq2SeqResult:
    """An evaluation forward: teacher-forced ``logits`` (B, T, V) and ``attention`` (B, T, S),
    the greedy decoding, and the beam decoding when the batch asks for it. Decodings are the
    model's ``Decoded`` (tokens, lengths, attention, scores)."""

    logits: Tensor
    attention: Tensor | None
    greedy: Any
    beam: Any = None


def bucket_name(low: int, high: int) -> str:
    return f"exact_len_{low}_{high}"


class Seq2SeqMeter(Meter):
    """Loss and token accuracy (teacher-forced), exact match and BLEU (decoded)."""

    def __init__(
        self,
        target_vocab: Vocabulary,
        pairs: Sequence[Pair],
        buckets: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.target_vocab = target_vocab
        self.pairs = pairs
        self.buckets = list(buckets)
        self.loss_sum: Tensor | float = 0.0
        self.correct: Tensor | int = 0
        self.tokens = 0
        self.outputs: dict[str, list[str]] = {"greedy": [], "beam": []}
        self.exact: dict[str, int] = {"greedy": 0, "beam": 0}
        self.references: list[tuple[str, ...]] = []
        self.bucket_hits = [0] * len(self.buckets)
        self.bucket_total = [0] * len(self.buckets)

    def words(self, tokens: Tensor, length: int) -> tuple[str, ...]:
        return tuple(self.target_vocab.decode(tokens[:length].tolist()))

    def update(self, output: Any, batch: Seq2SeqBatch) -> None:
        logits, targets = output.logits, batch.target_output
        real = targets != IGNORE
        self.loss_sum = self.loss_sum + nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
        )
        self.correct = self.correct + ((logits.argmax(-1) == targets) & real).sum()
        self.tokens += batch.target_tokens
        pairs = [self.pairs[i] for i in batch.indices.tolist()]
        self.references.extend(tuple(" ".join(r) for r in p.references) for p in pairs)
        for kind in ("greedy", "beam"):
            decoded = getattr(output, kind, None)
            if decoded is None:
                continue
            tokens, lengths = decoded.tokens.cpu(), decoded.lengths.tolist()
            for row, pair in enumerate(pairs):
                words = self.words(tokens[row], lengths[row])
                hit = words in pair.references
                self.exact[kind] += hit
                self.outputs[kind].append(" ".join(words))
                if kind == "greedy":
                    self._count_bucket(len(pair.source), hit)

    def merge(self, other: Meter) -> None:
        """Sums, and the other share's outputs after this one's (corpus BLEU adds up n-gram
        counts over hypothesis-reference pairs: their order does not matter)."""
        assert isinstance(other, Seq2SeqMeter)
        self.loss_sum = self.loss_sum + other.loss_sum
        self.correct = self.correct + other.correct
        self.tokens += other.tokens
        self.references.extend(other.references)
        for kind in ("greedy", "beam"):
            self.outputs[kind].extend(other.outputs[kind])
            self.exact[kind] += other.exact[kind]
        self.bucket_hits = [a + b for a, b in zip(self.bucket_hits, other.bucket_hits, strict=True)]
        self.bucket_total = [
            a + b for a, b in zip(self.bucket_total, other.bucket_total, strict=True)
        ]

    def _count_bucket(self, length: int, hit: bool) -> None:
        for index, (low, high) in enumerate(self.buckets):
            if low <= length <= high:
                self.bucket_total[index] += 1
                self.bucket_hits[index] += hit

    def compute(self) -> dict[str, float]:
        tokens = max(self.tokens, 1)
        metrics = {
            "loss": float(self.loss_sum) / tokens,
            "acc": float(self.correct) / tokens,
        }
        for kind, prefix in (("greedy", ""), ("beam", "beam_")):
            outputs = self.outputs[kind]
            if not outputs:
                continue
            metrics[f"{prefix}exact"] = self.exact[kind] / len(outputs)
            metrics[f"{prefix}bleu"] = corpus_bleu(outputs, self.references)
        for (low, high), hits, total in zip(
            self.buckets, self.bucket_hits, self.bucket_total, strict=True
        ):
            if total:
                metrics[bucket_name(low, high)] = hits / total
        return metrics


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """sacrebleu's corpus BLEU (0-100) of space-separated tokens (``tokenize="none"``: the
    tasks' text is tokenised already), with a variable number of references per hypothesis."""
    streams = max((len(r) for r in references), default=1)
    reference_streams = [
        [refs[i] if i < len(refs) else None for refs in references] for i in range(streams)
    ]
    # force: the text is tokenised on purpose; without it sacrebleu logs "you forgot to
    # detokenize" at every evaluation (it changes nothing else)
    bleu = sacrebleu.corpus_bleu(list(hypotheses), reference_streams, tokenize="none", force=True)
    return float(bleu.score)


@register_task("translation", schema=TranslationTaskConfig, target="sequence", inputs="tokens")
@register_task("seq2seq", schema=SyntheticSeq2SeqTaskConfig, target="sequence", inputs="tokens")
class Seq2SeqTask(Task):
    """Source sequence in, target sequence out; see the module docstring."""

    metric_names = ("loss", "acc", "exact", "bleu")
    throughput_unit = "pairs"

    def __init__(
        self, cfg: Seq2SeqTaskConfig, seed: int, configured_data_dir: str | None = None
    ) -> None:
        self.cfg = cfg
        self.name = str(cfg.name)
        self.seed = seed
        self.synthetic = isinstance(cfg, SyntheticSeq2SeqTaskConfig)
        if isinstance(cfg, SyntheticSeq2SeqTaskConfig):
            vocab = synthetic_vocabulary(cfg.symbols)
            self.source_vocab = self.target_vocab = vocab
            make = self._synthetic
            train: list[Pair] = []
            valid, test = make(cfg.eval_size, cfg.data_seed), make(cfg.eval_size, cfg.data_seed + 1)
            self.monitor = Monitor("exact", "max")
        else:
            train, valid, test = self._read_translation(configured_data_dir)
            self.source_vocab = make_vocabulary((p.source for p in train), cfg.min_count)
            self.target_vocab = make_vocabulary((p.target for p in train), cfg.min_count)
            self.monitor = Monitor("bleu", "max")
        self.train_pairs = train
        self.eval_pairs = {"val": valid, "test": test}
        self.spec = TaskSpec(
            len(self.source_vocab),
            len(self.target_vocab),
            target="sequence",
            inputs="tokens",
            special=SpecialTokens(pad=PAD_ID, unk=UNK_ID, bos=BOS_ID, eos=EOS_ID),
        )
        self.generator = torch.Generator().manual_seed(seed)

    # -- data -------------------------------------------------------------------------------

    def _synthetic(self, count: int, seed: int) -> list[Pair]:
        cfg = self.cfg
        return synthetic_pairs(self.name, count, cfg.symbols, cfg.min_length, cfg.max_length, seed)

    def _read_translation(
        self, configured_data_dir: str | None
    ) -> tuple[list[Pair], list[Pair], list[Pair]]:
        cfg = self.cfg
        (path,) = locate_files(self.name, cfg.path, [cfg.file], configured_data_dir)
        try:
            english_french = read_sentence_pairs(path)
        except ValueError as error:
            raise ConfigError(f"task={self.name}: {error}") from None
        if str(cfg.filter) == "tutorial":
            english_french = [
                p for p in english_french if tutorial_filter(*p, max_length=cfg.filter_max_length)
            ]
        if str(cfg.source_language) == "fra":
            oriented = [(fr, en) for en, fr in english_french]
        else:
            oriented = english_french
        if len(oriented) < 10:
            raise ConfigError(
                f"task={self.name}: only {len(oriented)} sentence pairs in {path} after"
                f" task.filter={cfg.filter}"
            )
        return split_by_source(oriented, cfg.valid_fraction, cfg.test_fraction, cfg.split_seed)

    def encode(self, pairs: Sequence[Pair], indices: Sequence[int]) -> Seq2SeqBatch:
        """Pairs as a padded batch (tokens outside the vocabularies become ``<unk>``)."""
        sources = [self.source_vocab.encode(p.source, UNK_ID) for p in pairs]
        targets = [self.target_vocab.encode(p.target, UNK_ID) for p in pairs]
        return collate(sources, targets, indices)

    def _length_sorted_batches(self, order: list[int], pairs: Sequence[Pair]) -> list[list[int]]:
        size, pool_size = self.cfg.batch_size, self.cfg.batch_size * POOL_BATCHES
        batches: list[list[int]] = []
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start : start + pool_size], key=lambda i: len(pairs[i].source))
            batches.extend(pool[i : i + size] for i in range(0, len(pool), size))
        return batches

    def train_batches(self, epoch: int) -> Iterator[Seq2SeqBatch]:
        if self.synthetic:
            # fresh pairs every epoch, the same ones again when a run resumes at this epoch
            count = self.cfg.batches_per_epoch * self.cfg.batch_size
            pairs = self._synthetic(count, (self.seed + 1) * 1_000_003 + epoch)
            order = list(range(len(pairs)))
            batches = self._length_sorted_batches(order, pairs)
            random.Random(epoch).shuffle(batches)
        else:
            pairs = self.train_pairs
            order = torch.randperm(len(pairs), generator=self.generator).tolist()
            batches = self._length_sorted_batches(order, pairs)
            shuffled = torch.randperm(len(batches), generator=self.generator).tolist()
            batches = [batches[i] for i in shuffled]
        for indices in batches:
            yield self.encode([pairs[i] for i in indices], indices)

    def num_train_batches(self) -> int:
        if self.synthetic:
            return self.cfg.batches_per_epoch
        size, pool_size = self.cfg.batch_size, self.cfg.batch_size * POOL_BATCHES
        full_pools, rest = divmod(len(self.train_pairs), pool_size)
        return full_pools * POOL_BATCHES + -(-rest // size)

    def eval_batches(self, split: Literal["val", "test"]) -> Iterator[Seq2SeqBatch]:
        pairs = self.eval_pairs[split]
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].source))
        size = self.cfg.eval_batch_size
        for start in range(0, len(order), size):
            indices = order[start : start + size]
            batch = self.encode([pairs[i] for i in indices], indices)
            batch.beam = split == "test" and self.cfg.beam_size > 1
            yield batch

    # -- model, loss, metrics ---------------------------------------------------------------

    def max_decode_length(self, source_steps: int) -> int:
        return math.ceil(self.cfg.max_decode_ratio * source_steps) + self.cfg.max_decode_extra

    def forward(self, model: nn.Module, batch: Seq2SeqBatch) -> Any:
        output = model(batch.source, batch.source_lengths, batch.target_input)
        if model.training:
            return output
        limit = self.max_decode_length(batch.source.size(1))
        greedy = model.greedy(batch.source, batch.source_lengths, limit)
        beam = None
        if batch.beam:
            beam = model.beam_search(
                batch.source,
                batch.source_lengths,
                limit,
                self.cfg.beam_size,
                self.cfg.length_penalty,
            )
        return Seq2SeqResult(output.logits, output.attention, greedy, beam)

    def loss_count(self, batch: Seq2SeqBatch) -> int:
        """The loss averages over the real target tokens."""
        return batch.target_tokens

    def loss(self, output: Any, batch: Seq2SeqBatch) -> Tensor:
        """Mean cross-entropy over the batch's target tokens (EOS included)."""
        logits = output.logits
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch.target_output.reshape(-1)
        )

    def new_meter(self, split: str = "val") -> Meter:
        buckets: list[tuple[int, int]] = []
        if self.synthetic and split == "test":
            edges = sorted(self.cfg.length_buckets)
            for index, low in enumerate(edges):
                high = edges[index + 1] - 1 if index + 1 < len(edges) else self.cfg.max_length
                buckets.append((low, high))
        return Seq2SeqMeter(self.target_vocab, self.eval_pairs[split], buckets)

    def is_solved(self, metrics: dict[str, float]) -> bool:
        target = self.cfg.solved_exact
        return target is not None and metrics.get("exact", 0.0) >= target

    def attention_maps(self, output: Any, batch: Seq2SeqBatch) -> list[AttentionMap] | None:
        """Source x output heatmaps of the greedy decoding (rows: output tokens, EOS
        included when produced)."""
        greedy = getattr(output, "greedy", None)
        if greedy is None or greedy.attention is None:
            return []
        maps = []
        tokens = greedy.tokens.cpu()
        for row, index in enumerate(batch.indices.tolist()):
            pair = self.eval_pairs["val"][index]
            length = int(greedy.lengths[row])
            steps = min(length + 1, tokens.size(1))  # the EOS row too, when there is one
            labels = self.target_vocab.decode(tokens[row, :steps].tolist())
            source_length = int(batch.source_lengths[row])
            weights = greedy.attention[row, :steps, :source_length].float().cpu()
            title = " ".join(pair.source)
            maps.append(AttentionMap(weights, labels, list(pair.source), title))
        return maps

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "source_vocab": self.source_vocab.state_dict(),
            "target_vocab": self.target_vocab.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        vocabularies = {"source_vocab": self.source_vocab, "target_vocab": self.target_vocab}
        for key, vocab in vocabularies.items():
            if state.get(key) not in (None, vocab.state_dict()):
                raise ConfigError(
                    f"the checkpoint's {key.replace('_', ' ')}ulary differs from this data's;"
                    " resume with the same data file and task settings"
                )
