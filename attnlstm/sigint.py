"""Ctrl-C before the training loop takes the signal: while torch and Hydra load, and while a
task makes its data.

Python's own handler raises ``KeyboardInterrupt`` wherever the main thread is, and CPython
handles two such places badly:

- an exception raised in a weakref callback or a ``__del__`` (the garbage collector, the
  import system's module-lock callback) is printed as "Exception ignored" and dropped, so the
  command would carry on and train as if the key had not been pressed;
- a bare ``KeyboardInterrupt`` that leaves code run by ``exec(<string>)`` (dataclasses and
  namedtuples build their methods that way, so importing such a module can be where Ctrl-C
  lands) marks the program as ended by an unhandled Ctrl-C even when an outer ``except``
  catches it, and ``python -m attnlstm`` then kills itself with SIGINT (status -2) instead of
  exiting with 130 (CPython's ``run_eval_code_obj`` and ``Py_RunMain``).

:class:`StartUpInterrupts` installs a handler that raises :class:`Interrupted` (a subclass,
which CPython does not mark) and remembers the signal until the training loop's
:class:`~attnlstm.training.interrupt.StopRequest` takes it. Standard library only: the
command installs it before it imports torch.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that stops at once: one during start-up, or a second one during training.
    Not a bare ``KeyboardInterrupt``, which CPython marks as unhandled when it leaves
    ``exec``'d code (see the module's docstring)."""


#: set by :func:`_start_up_handler`, taken by the training loop's next ``StopRequest``
_start_up_interrupt = threading.Event()
#: called at once when a stop is first asked for (a sweep's job in a joblib worker tells the
#: other jobs: attnlstm.sweep_stop); None: nothing to tell
on_stop_requested: Callable[[], None] | None = None


def announce_stop() -> None:
    """Run :data:`on_stop_requested`, if set (from a signal handler: quick, never raises)."""
    if on_stop_requested is not None:
        on_stop_requested()


def _start_up_handler(signum: int, frame: FrameType | None) -> None:
    """SIGINT before the training loop's handler: remember it, and stop at once."""
    _start_up_interrupt.set()
    raise Interrupted


def remember_start_up_interrupt() -> None:
    """Record a Ctrl-C for the training loop's next ``StopRequest`` without raising (a
    handler that must not raise: a sweep's job in a joblib worker, attnlstm.sweep_stop)."""
    _start_up_interrupt.set()
    announce_stop()


def take_start_up_interrupt() -> bool:
    """Whether a start-up Ctrl-C came since :class:`StartUpInterrupts` was entered, clearing
    the record: the exception :func:`_start_up_handler` raised may have been dropped (in a
    weakref callback or a ``__del__``), and the loop then stops before its first update."""
    taken = _start_up_interrupt.is_set()
    _start_up_interrupt.clear()
    return taken


class StartUpInterrupts:
    """Context manager for a command's whole life (``attnlstm-train``'s launcher): Ctrl-C
    raises :class:`Interrupted` instead of a bare ``KeyboardInterrupt`` and is remembered
    until the training loop's ``StopRequest`` takes it. Only Python's default handler is
    replaced: a SIGINT that the caller set to be ignored (``nohup``, a background job) stays
    ignored, and elsewhere than the main thread nothing changes."""

    def __init__(self) -> None:
        self._previous: object = None

    def __enter__(self) -> StartUpInterrupts:
        # only over Python's default: nested inside another, this one leaves it in charge
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            _start_up_interrupt.clear()
            self._previous = signal.signal(signal.SIGINT, _start_up_handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._previous = None
            _start_up_interrupt.clear()
