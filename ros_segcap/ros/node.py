"""segcap_node: camera frames + plain-language commands in, answers and masks out.

Thin over the core pipeline (DESIGN.md §5). Threads: image callbacks only store the frame in
a ring; a command takes the newest frame at its arrival and waits in a bounded queue served
by one worker thread (convert -> core -> convert -> publish). Frame keys are unique per
frame, so several commands on one frame encode it once (the core caches encoder outputs).
"""
from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import fields
from typing import Any, Callable, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.logging import LoggingSeverity
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from ros_segcap.core.overlay import draw_overlay, label_image
from ros_segcap.core.pipeline import Pipeline, PipelineConfig
from ros_segcap.core.types import InputError, SegCapResult
from ros_segcap.ros import convert, messages
from ros_segcap.ros.messages import (STATUS_CANCELLED, STATUS_DROPPED, STATUS_NO_IMAGE,
                                     STATUS_OK, Envelope, Frame, Request, status_result)
from ros_segcap.ros.params import (PIPELINE_OPTIONS, NodeConfig, apply_changes,
                                   declare_parameters, image_qos, use_default_dds_profile)
from ros_segcap.ros.sigint import raise_while

THROTTLE_S = 5.0
# Results are kept until every reader has them: a burst of 'dropped' statuses from a command
# flood must not push older results out of the writer's history before a slow reader acks.
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


class SegCapNode(Node):
    """The ROS 2 node; see the module docstring and DESIGN.md §5."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('segcap_node', **kwargs)
        self._config: NodeConfig = declare_parameters(self)
        self._pipeline = self._make_pipeline(self._config)
        self._interfaces, why = messages.load_interfaces()
        self._keys = itertools.count(1)
        self._ring: deque[Frame] = deque(maxlen=self._config.frame_buffer)
        self._queue: queue.Queue[Request] = queue.Queue(maxsize=self._config.queue_size)
        self._stats: Counter[str] = Counter()
        self._image_times: deque[float] = deque(maxlen=120)
        self._stage_ms: dict[str, float] = {}
        self._lock = threading.Lock()
        self._pending_prompt: Any = None
        self._last_command: Optional[str] = None
        self._last_continuous = (0.0, 0)  # (monotonic time, frame key)
        self._closing = threading.Event()
        self._create_publishers()
        self._create_subscriptions()
        if self._interfaces is not None:
            self._create_servers()
        else:
            self.get_logger().warning(messages.NO_INTERFACES.format(why=why))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(0.05, self._on_continuous_tick)
        self.create_timer(self._config.diagnostics_period, self._on_diagnostics)
        self._worker = threading.Thread(target=self._serve, name='segcap_worker', daemon=True)
        self._worker.start()
        topic = 'image/compressed' if self._config.compressed else 'image'
        self.get_logger().info(f'ready: model {self._config.model} on {self._config.device}, '
                               f'reading {self.resolve_topic_name(topic)}')

    # ----- setup --------------------------------------------------------------------------

    def _make_pipeline(self, config: NodeConfig) -> Pipeline:
        """Build the core pipeline from the node config (image_size is checked, not ignored)."""
        wanted = {f.name: getattr(config, f.name) for f in fields(PipelineConfig)
                  if hasattr(config, f.name)}
        wanted['cache_frames'] = config.frame_buffer
        pipeline = Pipeline(PipelineConfig(**wanted))
        size = pipeline.model.config.image_size
        if config.image_size and 'image_size' not in wanted and config.image_size != size:
            raise ValueError(f'image_size={config.image_size}: model {config.model} has a fixed '
                             f'input size of {size}; set image_size to 0 or {size}')
        if pipeline.model.llm.decode_path != 'reference':
            pipeline.model.llm.fast()  # the decoder's weights now, not at the first command
        return pipeline

    def _create_publishers(self) -> None:
        it = self._interfaces
        self._pub_result = self.create_publisher(*(
            (it.ResultMsg, 'segcap/result') if it else (String, 'segcap/result_json')), RELIABLE)
        self._pub_mask = self.create_publisher(Image, 'segcap/mask', 10)
        self._pub_overlay = self.create_publisher(Image, 'segcap/overlay', 10)
        self._pub_caption = self.create_publisher(String, 'segcap/caption', 10)
        self._pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

    def _create_subscriptions(self) -> None:
        cfg = self._config
        if cfg.compressed:
            self.create_subscription(CompressedImage, 'image/compressed', self._on_image,
                                     image_qos(cfg))
        else:
            self.create_subscription(Image, 'image', self._on_image, image_qos(cfg))
        command_qos = QoSProfile(depth=cfg.command_qos_depth,
                                 reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(String, 'command', self._on_command, command_qos)
        self.create_subscription(PointStamped, 'image_mouse_left', self._on_prompt, 10)
        if self._interfaces is not None:
            self.create_subscription(self._interfaces.PromptMsg, 'segcap/prompt',
                                     self._on_prompt, 10)

    def _create_servers(self) -> None:
        group = ReentrantCallbackGroup()  # both block until the worker answers
        self.create_service(self._interfaces.SegmentSrv, 'segcap/segment', self._on_service,
                            callback_group=group)
        self._action = ActionServer(
            self, self._interfaces.SegmentAction, 'segcap/segment_stream', self._on_goal,
            goal_callback=lambda _: GoalResponse.ACCEPT,
            cancel_callback=lambda _: CancelResponse.ACCEPT, callback_group=group)

    # ----- inputs (callbacks only store and enqueue) --------------------------------------

    def _on_image(self, msg: Any) -> None:
        try:
            if isinstance(msg, Image):
                convert.check_image(msg, self._max_pixels())
            else:
                convert.check_compressed(msg)
            error = ''
        except InputError as exc:
            error = str(exc)
            self._count('bad_images')
            self.get_logger().warning(f'bad image: {error}', throttle_duration_sec=THROTTLE_S)
        frame = Frame(next(self._keys), msg.header, None if error else msg, error)
        with self._lock:
            self._ring.append(frame)
            self._image_times.append(time.monotonic())

    def _on_command(self, msg: String) -> None:
        with self._lock:
            prompt, self._pending_prompt = self._pending_prompt, None
            if msg.data.strip():
                self._last_command = msg.data
        req = self._request(msg.data, prompt)
        if req.frame is not None:  # continuous mode starts from the next frame
            self._last_continuous = (time.monotonic(), req.frame.key)
        self._submit(req)

    def _on_prompt(self, msg: Any) -> None:
        """Hold a click / visual prompt for the next command (or run it now with its text)."""
        if isinstance(msg, PointStamped) or not msg.text.strip():
            with self._lock:
                self._pending_prompt = msg
            return
        self._submit(self._request(msg.text, msg))

    def _on_service(self, request: Any, response: Any) -> Any:
        req = self._request(request.command, request.prompt)
        if request.image.height and request.image.width:
            try:
                convert.check_image(request.image, self._max_pixels())
                error = ''
            except InputError as exc:
                error = str(exc)
            req.frame = Frame(next(self._keys), request.image.header, request.image, error)
        response.result = self._submit_and_wait(req)
        return response

    def _on_goal(self, goal_handle: Any) -> Any:
        feedback_type = self._interfaces.SegmentAction.Feedback
        text: list[str] = []

        def on_text(piece: str) -> bool:
            text.append(piece)
            goal_handle.publish_feedback(feedback_type(text=''.join(text), delta=piece))
            return not goal_handle.is_cancel_requested

        req = self._request(goal_handle.request.command, goal_handle.request.prompt)
        req.on_text, req.is_cancelled = on_text, lambda: goal_handle.is_cancel_requested
        result = self._submit_and_wait(req)
        if result.status == STATUS_CANCELLED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif result.status == STATUS_OK:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return self._interfaces.SegmentAction.Result(result=result)

    def _request(self, command: str, prompt: Any) -> Request:
        """Make a request on the newest frame at this moment (its arrival)."""
        with self._lock:
            frame = self._ring[-1] if self._ring else None
        return Request(command, frame, self.get_clock().now().to_msg(), prompt)

    def _submit(self, req: Request) -> None:
        """Queue a request, or answer at once when it cannot run."""
        self._count('continuous' if req.continuous else 'commands')
        if not req.command.strip():
            self._finish(req, status_result('bad input: empty command: say what to segment '
                                            'or ask a question'))
        elif req.frame is None:
            self._finish(req, status_result(STATUS_NO_IMAGE))
        else:
            try:
                self._queue.put_nowait(req)
            except queue.Full:
                if not req.continuous:
                    self._count('dropped')
                    self._finish(req, status_result(STATUS_DROPPED))

    def _submit_and_wait(self, req: Request) -> Any:
        """Submit a service/action request and block until its result message is ready."""
        done = threading.Event()
        box: list[Any] = []
        req.reply = lambda msg: (box.append(msg), done.set())
        if req.prompt is not None and req.prompt.type == req.prompt.NONE:
            req.prompt = None
        self._submit(req)
        while not done.wait(0.1):
            if self._closing.is_set():
                self._finish(req, status_result('error: the node is shutting down'))
        return box[0]

    # ----- the worker ---------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                req = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            waited_ms = (time.monotonic() - req.queued) * 1000.0
            result, rgb = self._process(req)
            result.timing.add('queue_wait', waited_ms)
            try:
                self._finish(req, result, rgb)
            except Exception as exc:  # noqa: BLE001 - answer anyway; the worker must live on
                self.get_logger().error(f'publishing a result failed: {exc!r}',
                                        throttle_duration_sec=THROTTLE_S)
                self._finish(req, status_result(f'error: {type(exc).__name__}: {exc}'))

    def _process(self, req: Request) -> tuple[SegCapResult, Any]:
        """Run one request: convert -> core; never raises."""
        if req.is_cancelled():
            return status_result(STATUS_CANCELLED), None
        rgb = None
        try:
            t0 = time.perf_counter()
            rgb = self._frame_rgb(req.frame)
            prompt = messages.prompt_from_msg(req.prompt)
            convert_ms = (time.perf_counter() - t0) * 1000.0
            result = self._pipeline.run(rgb, req.command, prompt, frame_key=req.frame.key,
                                        on_text=self._on_text(req), on_mask=self._on_mask(req))
            result.timing.add('ros_convert', convert_ms)
        except InputError as exc:
            result = status_result('bad input: ' + ' '.join(str(exc).split()))
            self.get_logger().warning(f'command {req.command[:80]!r}: {result.status}',
                                      throttle_duration_sec=THROTTLE_S)
        except Exception as exc:  # noqa: BLE001 - the node never dies on one command
            self._count('errors')
            result = status_result(f'error: {type(exc).__name__}: ' + ' '.join(str(exc).split()))
            self.get_logger().error(f'command {req.command[:80]!r} failed: {exc!r}',
                                    throttle_duration_sec=THROTTLE_S)
        return result, rgb

    def _on_text(self, req: Request) -> Callable[[str], bool]:
        def on_text(piece: str) -> bool:
            if self._closing.is_set():
                return False
            return req.on_text(piece) if req.on_text else not req.is_cancelled()
        return on_text

    def _on_mask(self, req: Request) -> Optional[Callable[[int, Any], None]]:
        """Log each mask at debug level as soon as its [SEG] is decoded; None if not logged.

        Segment.action feedback has no mask field, and masks go out once, with the result.
        Without a callback the core skips thresholding each mask early (a full-frame pass).
        """
        logger = self.get_logger()
        if not logger.is_enabled_for(LoggingSeverity.DEBUG):
            return None

        def on_mask(index: int, _mask: Any) -> None:
            logger.debug(f'command {req.command[:40]!r}: mask {index} ready')
        return on_mask

    def _frame_rgb(self, frame: Frame) -> Any:
        if frame.error:
            raise InputError(frame.error)
        if isinstance(frame.msg, Image):
            return convert.image_to_rgb(frame.msg, self._max_pixels())
        return convert.compressed_to_rgb(frame.msg, self._max_pixels())

    def _finish(self, req: Request, result: SegCapResult, rgb: Any = None) -> None:
        """Publish a result (and its images) and hand it to a waiting service/action."""
        header = req.frame.header if req.frame is not None else Header()
        env = Envelope(header, req.command, req.arrival, self._pipeline.encode_count)
        if self._interfaces is not None:
            msg = messages.result_to_msg(result, env, self._interfaces.ResultMsg)
        else:
            msg = String(data=messages.result_to_json(result, env))
        self._pub_result.publish(msg)
        if rgb is not None and result.status in (STATUS_OK, STATUS_CANCELLED):
            self._publish_images(result, rgb, header)
        with self._lock:
            self._stats['results'] += 1
            self._stage_ms = dict(result.timing.ms, total=result.timing.total) \
                if result.timing.ms else self._stage_ms
        if req.reply is not None:
            req.reply(msg)

    def _publish_images(self, result: SegCapResult, rgb: Any, header: Header) -> None:
        self._pub_caption.publish(String(data=result.answer))
        height, width = rgb.shape[:2]
        if self._pub_mask.get_subscription_count():
            labels = label_image(result, height, width)
            self._pub_mask.publish(convert.numpy_to_image(labels, 'mono8', header))
        if self._config.publish_overlay and self._pub_overlay.get_subscription_count():
            overlay = draw_overlay(rgb, result)
            self._pub_overlay.publish(convert.numpy_to_image(overlay, 'rgb8', header))

    # ----- timers and parameters ----------------------------------------------------------

    def _on_continuous_tick(self) -> None:
        """Re-run the last command on a new frame, at most continuous_rate times a second."""
        cfg, now = self._config, time.monotonic()
        with self._lock:
            frame = self._ring[-1] if self._ring else None
            command = self._last_command
        last_time, last_key = self._last_continuous
        if not cfg.continuous or command is None or frame is None or frame.key == last_key:
            return
        if now - last_time < 1.0 / cfg.continuous_rate or not self._queue.empty():
            return
        self._last_continuous = (now, frame.key)
        self._submit(Request(command, frame, self.get_clock().now().to_msg(), continuous=True))

    def _on_diagnostics(self) -> None:
        with self._lock:
            stats, stages = dict(self._stats), dict(self._stage_ms)
            times = list(self._image_times)
        now = time.monotonic()
        rate = messages.rate_hz(times, now)
        values: dict[str, Any] = {
            'model': self._config.model, 'image rate (Hz)': float(rate),
            'queue depth': self._queue.qsize(), 'queue size': self._config.queue_size,
            'encoder runs': self._pipeline.encode_count,
            **{k: stats.get(k, 0)
               for k in ('commands', 'results', 'dropped', 'bad_images', 'errors', 'continuous')},
            **{f'latency {stage} (ms)': float(ms) for stage, ms in stages.items()}}
        stale = not times or now - times[-1] > 5.0
        warning = 'no image received for 5 s' if stale else ''
        self._pub_diag.publish(messages.diagnostics(
            f'{self.get_name()}: segcap', self.get_fully_qualified_name(),
            self.get_clock().now().to_msg(), values, warning))

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        config, reason = apply_changes(self._config, params)
        for name in PIPELINE_OPTIONS:
            if not reason and getattr(config, name) != getattr(self._config, name):
                reason = self._pipeline.set_option(name, getattr(config, name)) or ''
        if reason:
            self.get_logger().warning(f'parameter change refused: {reason}')
            return SetParametersResult(successful=False, reason=reason)
        self._config = config
        return SetParametersResult(successful=True)

    def _max_pixels(self) -> int:
        return int(self._config.max_image_megapixels * 1e6)

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def close(self) -> None:
        """Stop the worker (a running generation is cancelled) and wait for it."""
        self._closing.set()
        self._worker.join(timeout=10.0)


def main(args: Optional[list[str]] = None) -> int:
    """Run segcap_node until Ctrl-C or shutdown; return the exit code."""
    use_default_dds_profile()
    loading = threading.Event()
    loading.set()
    raise_while(loading)  # Ctrl-C interrupts the model load; later rclpy's shutdown ends spin
    rclpy.init(args=args)
    try:
        node = SegCapNode()
        loading.clear()
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return 0
    except Exception as exc:  # noqa: BLE001 - bad parameter or model: one line, exit 1
        if not rclpy.ok():  # Ctrl-C while loading: rclpy shut the context down under us
            return 0
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f'segcap_node: could not start: {reason}', file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    try:
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
