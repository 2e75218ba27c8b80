"""Catch SIGINT and SIGTERM during training, so the run is saved before the process exits.

Inside :func:`stop_requested_by_signals`, the first SIGINT (Ctrl-C) or SIGTERM (``kill``, a job
scheduler's time limit) only sets a flag; the training loop checks it at every step
(:class:`agents.callbacks.StopOnRequest`), leaves ``learn``, and the caller saves the model and
the run configuration. A second Ctrl-C quits at once without saving.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class StopRequest:
    """Set by the signal handlers.

    Attributes:
        requested: Whether a stop was asked for.
        signal_name: The signal that asked (``"SIGINT"`` or ``"SIGTERM"``).
    """

    requested: bool = False
    signal_name: str = ""


@contextmanager
def stop_requested_by_signals(message: str = "") -> Iterator[StopRequest]:
    """Within the block, SIGINT and SIGTERM set the yielded :class:`StopRequest` instead.

    Handlers can only be installed from the main thread; elsewhere the block runs unchanged.
    The previous handlers are restored on exit.

    Args:
        message: Printed on stderr when the first signal arrives.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signals}

    def handle(number: int, frame: Any) -> None:
        if stop.requested and number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: quit now
        stop.requested = True
        stop.signal_name = signal.Signals(number).name
        if message:
            print(message.format(signal=stop.signal_name), file=sys.stderr, flush=True)

    for s in signals:
        signal.signal(s, handle)
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
