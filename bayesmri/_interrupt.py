"""SIGINT / SIGTERM as one exception, with the signal remembered.

The samplers catch ``KeyboardInterrupt`` to return the chains they have (``diagnostics["interrupted"]``),
so an exception alone cannot tell a caller that the user asked to stop: the caller has to ask
:func:`pending`. The command line installs :func:`signals_as_interrupt` around every command; a loop
that calls code which may swallow ``KeyboardInterrupt`` calls :func:`raise_if_pending` after it.

Exit status follows the shell convention ``128 + signal number``: 130 for SIGINT, 143 for SIGTERM.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["Interrupted", "signals_as_interrupt", "pending", "raise_if_pending", "deferred"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # signals seen since the handlers were installed (first one first)


class Interrupted(KeyboardInterrupt):
    """The user stopped the run with ``signum``; ``exit_code`` is ``128 + signum``.

    A subclass of ``KeyboardInterrupt`` so that code written for Ctrl-C (the samplers' early stop, the
    trainer's final checkpoint) treats SIGTERM the same way.
    """

    def __init__(self, signum: int = signal.SIGINT, message: str | None = None):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name
        super().__init__(message or f"interrupted by {name}")


def pending() -> int | None:
    """The first signal received inside the current :func:`signals_as_interrupt` block, or ``None``."""
    return _received[0] if _received else None


def raise_if_pending(what: str = "") -> None:
    """Raise :class:`Interrupted` if a signal arrived (also one that a sampler swallowed)."""
    s = pending()
    if s is not None:
        raise Interrupted(s, f"interrupted by {signal.Signals(s).name}" + (f" {what}" if what else ""))


def _raising_handler(signum, frame):
    _received.append(signum)
    raise Interrupted(signum)


def _recording_handler(signum, frame):
    _received.append(signum)


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` and are recorded.

    Without it SIGTERM kills the process with no clean-up (staging folders, temporary files stay) and
    exit status -15. Outside the main thread (where Python cannot set handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    old = {s: signal.signal(s, _raising_handler) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        # a signal of a finished block must not stop later library calls of the same process
        # (``raise_if_pending`` in the method loop)
        _received.clear()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while the block runs (a commit of several renames), then raise.

    Used where stopping half way would leave a mix of old and new files. A signal that arrives inside
    the block is recorded and raised as :class:`Interrupted` once the block has finished.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    n0 = len(_received)
    old = {s: signal.signal(s, _recording_handler) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if len(_received) > n0:
        new = _received[n0]
        # Forward to whatever handler was installed before (ours raises Interrupted; the default
        # SIGINT handler raises KeyboardInterrupt; a default SIGTERM terminates). The exception is
        # marked ``deferred = True``: the block it waited for has completed.
        h = old[new]
        try:
            if callable(h):
                h(new, None)
            elif h == signal.SIG_DFL and new == signal.SIGINT:
                raise KeyboardInterrupt
            elif h == signal.SIG_DFL:
                signal.raise_signal(new)
        except KeyboardInterrupt as exc:
            exc.deferred = True
            raise
