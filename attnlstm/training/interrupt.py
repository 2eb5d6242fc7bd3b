"""Stop a run at a safe point when the user presses Ctrl-C (or the scheduler sends SIGTERM).

A ``KeyboardInterrupt`` raised wherever the main thread happens to be can land inside
TensorBoard's event-writer lock or a checkpoint write, and the clean-up that follows may then
hang. So the first signal only sets a flag; the training loop looks at it between updates and
stops there, through the same path as before (``status: interrupted``, a resume hint). A second
Ctrl-C stops at once, the old way.

SIGUSR2 is what submitit (Slurm) sends before a time limit or a preemption; its own handler
requeues the job and ends the process. When such a handler is installed, the first USR2 too
only sets the flag: the loop saves a checkpoint at the current update and writes
``metrics.json``, and then the signal is handed on to submitit's handler, which requeues (the
requeued job resumes from that checkpoint).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType

from attnlstm.sigint import Interrupted, announce_stop, take_start_up_interrupt

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: signals taken only to be handed on, after the stop, to the Python handler that had them
_CHAINED = (signal.SIGUSR2,) if hasattr(signal, "SIGUSR2") else ()


class StopRequested(KeyboardInterrupt):
    """Raised by :meth:`StopRequest.check` between updates: the model, optimiser and loop
    state are consistent, so a checkpoint taken now resumes exactly (a plain
    ``KeyboardInterrupt``, from a second Ctrl-C, may land anywhere)."""


class StopRequest:
    """Context manager that turns SIGINT / SIGTERM into a flag checked by :meth:`check`."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}
        self._pending: int | None = None  # a chained signal to hand on at exit

    def __enter__(self) -> StopRequest:
        if take_start_up_interrupt():  # a Ctrl-C whose exception Python dropped: honour it
            self.requested = True
            log.warning("SIGINT received during start-up: stopping before the first update")
        # Signal handlers can only be installed from the main thread; elsewhere (a notebook's
        # worker thread, say) the default behaviour stays.
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            for sig in _CHAINED:  # only where a Python handler (submitit's) waits for it
                if callable(signal.getsignal(sig)):
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        pending, self._pending = self._pending, None
        if pending is not None:  # the run is saved: now the handler it was meant for
            signal.raise_signal(pending)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise Interrupted  # second Ctrl-C: stop now
        first = not self.requested
        self.requested = True
        if signum in _CHAINED:
            self._pending = signum
        if first:
            announce_stop()
        name = signal.Signals(signum).name
        log.warning(
            "%s received: stopping after the current update (Ctrl-C again to stop now)", name
        )

    def check(self) -> None:
        """Raise :class:`StopRequested` (a ``KeyboardInterrupt``) if a stop was requested."""
        if self.requested:
            raise StopRequested
