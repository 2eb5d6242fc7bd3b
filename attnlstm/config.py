"""The config schema: every valid key, its type and its default.

The dataclasses below are registered in Hydra's ConfigStore; the YAML files under ``conf/``
only pick values. Because every group option starts from one of these schemas, a typo'd key, a
value of the wrong type or a choice outside an enum fails while the config is composed, before
any work, with OmegaConf naming the key (and, for enums, the valid values).

Checks that need more than one key (a model that cannot use the chosen attention, or cannot
solve the chosen task) live in :func:`attnlstm.models.check_compatible` and run at build time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover

    class StrEnum(str, Enum):
        """str(member) is its value, as 3.11's StrEnum."""

        def __str__(self) -> str:
            return str(self.value)


class AttentionMethod(StrEnum):
    """``attention=`` choices; ``none`` means the model uses no attention."""

    none = "none"
    dot = "dot"
    scaled_dot = "scaled_dot"
    general = "general"
    concat = "concat"
    additive = "additive"
    feedforward = "feedforward"


class SequenceModelName(StrEnum):
    """The sequence-to-value models."""

    lstm = "lstm"
    lstm_attn = "lstm_attn"
    ffattn = "ffattn"
    mean = "mean"


class Activation(StrEnum):
    none = "none"
    leaky_relu = "leaky_relu"


class PoolingImplementation(StrEnum):
    """How ``ffattn`` and ``mean`` pool over time: ``plain`` autograd, ``chunked`` (through
    time, recomputing in the backward pass; see attnlstm/models/long_pooling.py), or ``auto``
    (chunked where it is supported and the sequences are long)."""

    auto = "auto"
    plain = "plain"
    chunked = "chunked"


class LongMemoryProblem(StrEnum):
    addition = "addition"
    multiplication = "multiplication"


class DeviceType(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class OptimizerName(StrEnum):
    adam = "adam"
    sgd = "sgd"


class SchedulerName(StrEnum):
    none = "none"
    step = "step"
    cosine = "cosine"
    plateau = "plateau"


@dataclass
class LongMemoryTaskConfig:
    """The addition and multiplication problems (Hochreiter & Schmidhuber 1997, section 5.4-5.5),
    generated as Raffel & Ellis (2016) did.

    Fixed-length mode: every sequence has a length drawn uniformly from
    [min_length, ceil(1.1 min_length)) and batches are zero-padded to ceil(1.1 min_length).
    Variable-length mode: each training batch draws one length from [min_length, max_length];
    the fixed sets use ``eval_batch_size``-sequence batches at lengths evenly spaced over it.
    """

    name: LongMemoryProblem = LongMemoryProblem.addition
    min_length: int = 100  # T0
    max_length: int | None = None  # variable-length mode only
    variable_length: bool = False
    batch_size: int = 100
    batches_per_epoch: int = 1000  # an "epoch" is this many updates on fresh sequences
    eval_size: int = 1000  # sequences in the fixed, seeded test (and validation) set
    eval_batch_size: int = 100
    data_seed: int = 1234  # seeds the fixed sets; the training stream follows the run's seed
    separate_validation: bool = False  # False: validate on the test set each epoch, as the paper
    mask_padding: bool = True  # False reproduces the paper's unmasked zero padding exactly
    tolerance: float = 0.04  # a prediction is correct when |error| < tolerance


@dataclass
class SequenceModelConfig:
    """Sequence-to-value models: ``lstm``, ``lstm_attn``, ``ffattn`` and ``mean``.

    ``num_layers`` counts LSTM layers (``lstm``, ``lstm_attn``) or per-step dense layers
    (``ffattn``, ``mean``). ``head_size`` is the hidden width of the output MLP.
    """

    name: SequenceModelName = SequenceModelName.lstm_attn
    hidden_size: int = 100
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    head_size: int = 100
    output_activation: Activation = Activation.none
    pooling: PoolingImplementation = PoolingImplementation.auto  # ffattn and mean
    chunk_size: int = 4096  # steps per chunk of the chunked pooling


@dataclass
class AttentionConfig:
    method: AttentionMethod = AttentionMethod.feedforward
    # scorer width for concat / additive (default: key size) and a two-layer feedforward scorer
    # (default: the paper's single layer)
    hidden_dim: int | None = None


@dataclass
class DeviceConfig:
    type: DeviceType = DeviceType.auto
    index: int = 0


@dataclass
class OptimConfig:
    name: OptimizerName = OptimizerName.adam
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam
    momentum: float = 0.0  # sgd
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0
    scheduler: SchedulerName = SchedulerName.none
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.5  # step and plateau: decay factor
    patience: int = 2  # plateau: epochs without improvement before decaying
    min_lr: float = 0.0  # cosine and plateau


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    grad_clip: float | None = None  # clip the global gradient norm to this value
    early_stopping_patience: int | None = None  # epochs without a better validation monitor
    stop_when_solved: bool = True  # stop once the task says it is solved (e.g. 100% accuracy)
    log_every_n_steps: int = 1  # train/loss, train/lr, train/grad_norm
    progress_bar: bool = True  # shown only when the output is a terminal
    attention_images: int = 4  # validation examples whose attention weights are logged


@dataclass
class TrainConfig:
    """The root config (``conf/train.yaml``)."""

    task: Any = MISSING
    model: Any = MISSING
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    resume: str | None = None  # a run directory to continue
    data_dir: str | None = None  # datasets (default: $ATTNLSTM_DATA)


#: The schema each config group's options start from. They live in the ConfigStore under
#: ``schema/<group>`` (out of the way of the group's own option list) and an option's YAML
#: begins with ``defaults: [/schema/<group>@_here_: <name>]``.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "task": {"long_memory": LongMemoryTaskConfig},
    "model": {"sequence": SequenceModelConfig},
    "attention": {"attention": AttentionConfig},
    "device": {"device": DeviceConfig},
    "trainer": {"trainer": TrainerConfig},
    "optim": {"optim": OptimConfig},
}


def register_configs() -> None:
    """Register the root schema and the group schemas in Hydra's ConfigStore."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)
