"""The node's outputs: results, mask, overlay, caption and /diagnostics, from core results.

Created when segcap_node is configured and destroyed at cleanup. Every image output carries
the source frame's header. Once the node's context is shut down nothing is published (the
result message is still built and returned, for the caller that waits for it).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.exceptions import InvalidHandle
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.logging import LoggingSeverity
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from ros_segcap.core.overlay import draw_overlay, label_image
from ros_segcap.ros import convert, messages
from ros_segcap.ros.messages import STATUS_CANCELLED, STATUS_OK, Envelope
from ros_segcap.worker import Request

# Results are kept until every reader has them: a burst of 'dropped' statuses from a command
# flood must not push older results out of the writer's history before a slow reader acks.
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
RCLError = _rclpy.RCLError
STATS = ('commands', 'results', 'dropped', 'bad_images', 'errors', 'continuous')


class ResultPublisher:
    """Publishes what the worker answers; `interfaces` None means JSON results."""

    def __init__(self, node: Node, interfaces: Any, pipeline: Any) -> None:
        self._node, self._it, self._pipeline = node, interfaces, pipeline
        self._lock = threading.Lock()
        self._stage_ms: dict[str, float] = {}
        it = interfaces
        self._result = node.create_publisher(*(
            (it.ResultMsg, 'segcap/result') if it else (String, 'segcap/result_json')), RELIABLE)
        self._mask = node.create_publisher(Image, 'segcap/mask', 10)
        self._overlay = node.create_publisher(Image, 'segcap/overlay', 10)
        self._caption = node.create_publisher(String, 'segcap/caption', 10)
        self._diag = node.create_publisher(DiagnosticArray, '/diagnostics', 10)

    def destroy(self) -> None:
        """Destroy the publishers."""
        for publisher in (self._result, self._mask, self._overlay, self._caption, self._diag):
            self._node.destroy_publisher(publisher)

    def message(self, req: Request, result: Any) -> Any:
        """Build the result message of `req` (not published)."""
        env = Envelope(self._header(req), req.command, req.arrival,
                       self._pipeline.encode_count)
        if self._it is not None:
            return messages.result_to_msg(result, env, self._it.ResultMsg)
        return String(data=messages.result_to_json(result, env))

    @staticmethod
    def _header(req: Request) -> Header:
        return req.frame.header if req.frame is not None else Header()

    def publish(self, req: Request, result: Any, rgb: Any, overlay: bool) -> Any:
        """Publish a result (and its images when `rgb` is given); return the result message."""
        msg = self.message(req, result)
        if not self._node.context.ok():
            return msg  # shutting down: the publishers went with the context
        try:
            self._result.publish(msg)
            if rgb is not None and result.status in (STATUS_OK, STATUS_CANCELLED):
                self._publish_images(result, rgb, self._header(req), overlay)
        except (InvalidHandle, RCLError):
            if self._node.context.ok():
                raise
            return msg  # the context was shut down while publishing
        if result.timing.ms:
            with self._lock:
                self._stage_ms = dict(result.timing.ms, total=result.timing.total)
        return msg

    def _publish_images(self, result: Any, rgb: Any, header: Header, overlay: bool) -> None:
        self._caption.publish(String(data=result.answer))
        height, width = rgb.shape[:2]
        if self._mask.get_subscription_count():
            labels = label_image(result, height, width)
            self._mask.publish(convert.numpy_to_image(labels, 'mono8', header))
        if overlay and self._overlay.get_subscription_count():
            picture = draw_overlay(rgb, result)
            self._overlay.publish(convert.numpy_to_image(picture, 'rgb8', header))

    def on_mask(self, command: str) -> Optional[Callable[[int, Any], None]]:
        """Log each mask at debug level as soon as its [SEG] is decoded; None if not logged.

        Segment.action feedback has no mask field, and masks go out once, with the result.
        Without a callback the core skips thresholding each mask early (a full-frame pass).
        """
        logger = self._node.get_logger()
        if not logger.is_enabled_for(LoggingSeverity.DEBUG):
            return None

        def on_mask(index: int, _mask: Any) -> None:
            logger.debug(f'command {command[:40]!r}: mask {index} ready')
        return on_mask

    def diagnostics(self, snapshot: tuple[dict, list], queue_depth: int, config: Any,
                    frames: Optional[dict[str, float]] = None, warning: str = '') -> None:
        """Publish rates, counts, per-stage latency and a warning when frames stop.

        `frames` adds values about the image stream (frames lost, say); `warning` makes the
        status WARN with that message (after 'no image received for 5 s' when none came).
        """
        stats, times = snapshot
        with self._lock:
            stages = dict(self._stage_ms)
        now = time.monotonic()
        values: dict[str, Any] = {
            'model': config.model, 'image rate (Hz)': float(messages.rate_hz(times, now)),
            **(frames or {}),
            'queue depth': queue_depth, 'queue size': config.queue_size,
            'encoder runs': self._pipeline.encode_count,
            **{k: stats.get(k, 0) for k in STATS},
            **{f'latency {stage} (ms)': float(ms) for stage, ms in stages.items()}}
        stale = not times or now - times[-1] > 5.0
        node = self._node
        self._diag.publish(messages.diagnostics(
            f'{node.get_name()}: segcap', node.get_fully_qualified_name(),
            node.get_clock().now().to_msg(), values,
            '; '.join(t for t in ('no image received for 5 s' if stale else '', warning) if t)))
