"""Ctrl-C for the package's ROS processes: stop at a safe point, never inside rclpy's C++ code.

rclpy.init installs a C signal handler that shuts the context down (spinning then ends with
ExternalShutdownException, `rclpy.ok()` turns False) and then chains to Python's handler,
which by default raises KeyboardInterrupt wherever the main thread happens to be. When that
is inside rclpy's `take_message` or `publish`, pybind11 turns the KeyboardInterrupt into an
uncaught "RuntimeError: Unable to convert call argument" and the process exits with code 1
(seen in CI). `raise_while` replaces Python's handler, before rclpy.init, with one that
raises only while a flag is set: while a model loads, say, when nothing spins yet.
"""
from __future__ import annotations

import signal
import threading


def raise_while(flag: threading.Event) -> None:
    """Before rclpy.init: SIGINT raises KeyboardInterrupt only while `flag` is set."""
    def handler(signum: int, frame) -> None:
        if flag.is_set():
            raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
