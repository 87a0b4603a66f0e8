"""Ctrl-C for the package's ROS processes: stop at a safe point, never inside rclpy's C++ code.

rclpy.init installs a C signal handler that shuts the context down (spinning then ends with
ExternalShutdownException, `rclpy.ok()` turns False) and then chains to Python's handler,
which by default raises KeyboardInterrupt wherever the main thread happens to be. When that
is inside rclpy's `take_message` or `publish`, pybind11 turns the KeyboardInterrupt into an
uncaught "RuntimeError: Unable to convert call argument" and the process exits with code 1
(seen in CI). `raise_while` replaces Python's handler, before rclpy.init, with one that
raises only while a flag is set: while a model loads, say, when nothing spins yet.
segcap_node goes further (StopSignals): it takes SIGINT and SIGTERM itself, so that it can
answer its pending calls before the context goes.
"""
from __future__ import annotations

import signal
import sys
import threading


def raise_while(flag: threading.Event) -> None:
    """Before rclpy.init: SIGINT raises KeyboardInterrupt only while `flag` is set."""
    def handler(signum: int, frame) -> None:
        if flag.is_set():
            raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)


class StopSignals:
    """SIGINT and SIGTERM for segcap_node, installed first thing in main (before the imports).

    The first signal asks the process to stop: `requested` is set, and while `interrupt` is set
    (the model loads; nothing spins) it raises KeyboardInterrupt too. rclpy.init is told not to
    install its own handlers, so the context stays up until the node has answered every call
    that waits; main shuts it down last. Later signals are ignored (SIG_IGN, which Python
    also keeps while the interpreter finalizes; a Python handler would be reset to the default
    there, and a second Ctrl-C would kill the process with -2). The orderly stop is bounded
    by timeouts, so it needs no second Ctrl-C.

    A KeyboardInterrupt raised where Python cannot pass it on (inside a weakref callback or a
    finalizer, such as the import system's module-lock cleanup) would be printed as "Exception
    ignored ... Traceback"; after a stop request it is dropped silently instead, and the
    stop happens at the next check of `requested`.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.interrupt = threading.Event()

    def install(self) -> 'StopSignals':
        """Handle SIGINT and SIGTERM from now on (main thread only); return self."""
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, self._handle)
            previous = sys.unraisablehook

            def unraisable(info) -> None:
                if not (info.exc_type is KeyboardInterrupt and self.requested.is_set()):
                    previous(info)
            sys.unraisablehook = unraisable
        return self

    def _handle(self, signum: int, frame) -> None:
        self.requested.set()
        for other in (signal.SIGINT, signal.SIGTERM):
            signal.signal(other, signal.SIG_IGN)
        if self.interrupt.is_set():
            raise KeyboardInterrupt
