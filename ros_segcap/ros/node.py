"""segcap_node's process: signals first, then the imports, the node, spinning, an orderly stop.

The node itself is SegCapNode (segcap_node.py). This module imports only the standard library
at its top, so that main() takes SIGINT and SIGTERM before the slow imports (rclpy, torch,
the model): a Ctrl-C or SIGTERM at any moment exits 0. On a signal while spinning the worker
stops (the running request is cancelled, waiting ones are answered 'cancelled: the node is
stopping ...'), the executor spins until every pending service and action call has its
answer, and only then do the node and the context go.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Optional

from ros_segcap.ros.sigint import StopSignals
from ros_segcap.ros.transport import use_large_frame_transport

DRAIN_S = 5.0  # longest wait, at shutdown, for the pending calls to get their answers
FLUSH_S = 0.3  # then the time the answers (and action results) get to leave
SPIN_S = 0.1  # how often the spin loop looks at the stop request


def main(args: Optional[list[str]] = None) -> int:
    """Run segcap_node until Ctrl-C, SIGTERM or shutdown; return the exit code."""
    signals = StopSignals().install()  # first of all: a signal during the imports is no error
    try:
        return run(args, signals)
    except KeyboardInterrupt:  # the one interrupt raced the end of the load: still a stop
        return 0


def run(args: Optional[list[str]], signals: StopSignals) -> int:
    """Import, start the node (autostart) and spin it; return the exit code."""
    use_large_frame_transport()  # before rclpy.init: Fast DDS reads it once
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from ros_segcap.ros.segcap_node import SegCapNode

    if signals.requested.is_set():
        return 0
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node: Any = None
    try:
        signals.interrupt.set()  # a signal interrupts the model load
        try:
            node = SegCapNode()
            why = start(node) if node.autostart else ''
        except Exception as exc:  # noqa: BLE001 - e.g. a parameter of the wrong type: one line
            why = ' '.join(str(exc).split()) or type(exc).__name__
        signals.interrupt.clear()
        if signals.requested.is_set():  # the load was interrupted: why says nothing then
            return 0
        if why:
            print(f'segcap_node: could not start: {why}', file=sys.stderr)
            return 1
        spin(node, signals)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signals.interrupt.clear()
        finish(node)


def start(node: Any) -> str:
    """Configure and activate an autostart node; return '' or why it could not start."""
    from ros_segcap.ros.segcap_node import SUCCESS

    if node.trigger_configure() != SUCCESS:
        return node.failure or 'configure failed'
    if node.trigger_activate() != SUCCESS:
        return 'activate failed'
    return ''


def spin(node: Any, signals: StopSignals) -> None:
    """Spin until a stop signal; then answer every pending call before returning."""
    from rclpy.executors import MultiThreadedExecutor

    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        while not signals.requested.is_set() and node.context.ok():
            executor.spin_once(timeout_sec=SPIN_S)
        node.stop_work()  # cancels the running request, answers the waiting ones
        drain = time.monotonic() + DRAIN_S
        while node.pending and time.monotonic() < drain and node.context.ok():
            executor.spin_once(timeout_sec=0.05)
        flush = time.monotonic() + FLUSH_S
        while time.monotonic() < flush and node.context.ok():
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown(timeout_sec=1.0)


def finish(node: Any) -> None:
    """Release the node (if any) and rclpy."""
    import rclpy

    if node is not None:
        node.close()
        node.destroy_node()
    rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
