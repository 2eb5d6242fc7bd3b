"""Stop a run at a safe point when the user presses Ctrl-C (or the scheduler sends SIGTERM).

A ``KeyboardInterrupt`` raised wherever the main thread happens to be can land inside
TensorBoard's event-writer lock or a checkpoint write, and the clean-up that follows may then
hang. So the first signal only sets a flag; the training loop looks at it between updates and
stops there, through the same path as before (``status: interrupted``, a resume hint). A second
Ctrl-C stops at once, the old way.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(KeyboardInterrupt):
    """Raised by :meth:`StopRequest.check` between updates: the model, optimiser and loop
    state are consistent, so a checkpoint taken now resumes exactly (a plain
    ``KeyboardInterrupt``, from a second Ctrl-C, may land anywhere)."""


class StopRequest:
    """Context manager that turns SIGINT / SIGTERM into a flag checked by :meth:`check`."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        # Signal handlers can only be installed from the main thread; elsewhere (a notebook's
        # worker thread, say) the default behaviour stays.
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
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

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.requested = True
        name = signal.Signals(signum).name
        log.warning(
            "%s received: stopping after the current update (Ctrl-C again to stop now)", name
        )

    def check(self) -> None:
        """Raise :class:`StopRequested` (a ``KeyboardInterrupt``) if a stop was requested."""
        if self.requested:
            raise StopRequested
