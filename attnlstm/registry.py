"""Registries: a name -> (class, config schema, capabilities) table per kind of component.

A component registers itself where it is defined, as AllenNLP's ``@Attention.register`` and
fairseq's ``@register_model`` do::

    MODELS = Registry("model")

    @MODELS.register("lstm_attn", schema=SequenceModelConfig, predicts="value")
    def build_lstm_attn(...): ...

Builders are look-ups (``MODELS.get(name).component``); compatibility checks read
``capabilities``; error messages list ``names()``. Nothing else keeps a list of names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from attnlstm.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: its name, the class or builder (``component``), its config
    schema (a dataclass in :mod:`attnlstm.config`, or None) and what it can do
    (``capabilities``, also readable as attributes)."""

    name: str
    component: T
    schema: type | None = None
    capabilities: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:
        # capabilities read as attributes: MODELS.get("lm").predicts
        try:
            return self.capabilities[key]
        except KeyError:
            raise AttributeError(key) from None


class Registry(Generic[T]):
    """Names of one kind of component (``kind``: ``attention``, ``model``, ``task``, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, *, schema: type | None = None, **capabilities: Any
    ) -> Callable[[T], T]:
        """Decorator: register the decorated class or function under ``name``."""

        def add(target: T) -> T:
            if name in self._entries and self._entries[name].component is not target:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, target, schema, dict(capabilities))
            return target

        return add

    def get(self, name: str) -> Entry[T]:
        """The entry of ``name``; :class:`ConfigError` listing the choices if there is none."""
        try:
            return self._entries[str(name)]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {str(name)!r}; choose one of {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return str(name) in self._entries

    def __len__(self) -> int:
        return len(self._entries)
