"""Ctrl-C in a long run (`train`, `tune`): finish the step, save, and say where.

Inside `save_on_interrupt()`, the first SIGINT only raises a flag. The loop reads it after each
step, saves what a resume needs, and raises `Interrupted` (a KeyboardInterrupt, so code that
catches those still does), which says where the run was saved. A second Ctrl-C stops at once.
Python takes SIGINT in the main thread only; elsewhere nothing changes.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator

logger = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C after its step `step` (of `total`), saved in `out` (None: nothing saved)."""

    def __init__(self, message: str, *, step: int, total: int, out: Path | None) -> None:
        super().__init__(message)
        self.step, self.total, self.out = step, total, out


@contextlib.contextmanager
def save_on_interrupt() -> Iterator[Callable[[], bool]]:
    """Yields `requested()`: True once Ctrl-C was pressed (the loop should save and raise `Interrupted`)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pressed: list[bool] = []

    def handler(signum: int, frame: object) -> None:
        if pressed:  # the second Ctrl-C: stop now, saving nothing more
            raise KeyboardInterrupt
        pressed.append(True)
        logger.warning("Ctrl-C: finishing this step, then saving the run (press Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)
