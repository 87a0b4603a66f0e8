"""SegCapNode: camera frames + plain-language commands in, answers and masks out.

A lifecycle (managed) node, thin over the core pipeline and the worker (docs/design.md §5):
configure reads the parameters and loads the model (slow); activate subscribes, serves and
starts the worker; deactivate stops taking work; cleanup releases the model. With the
parameter autostart:=true the node configures and activates itself (an unmanaged start).
The frame ring, command queue, worker thread and continuous mode are ros_segcap/worker.py;
this node wires topics, parameters and QoS to it: convert -> core -> convert -> publish.
Service and action calls are answered asynchronously (coroutine callbacks awaiting a future
the worker thread completes), so pending calls never hold an executor thread: parameters and
/diagnostics answer while calls wait. The process entry (main, signals, shutdown) is node.py.
"""
from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any, Callable, Optional

from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from ros_segcap.core.options import in_scope, pipeline_values
from ros_segcap.ros import convert, messages
from ros_segcap.ros.modes import Modes, is_tracked
from ros_segcap.ros.messages import NO_INTERFACES, STATUS_CANCELLED, STATUS_OK, status_result
from ros_segcap.ros.params import (NodeConfig, apply_changes, declare_parameters,
                                   image_qos, read_parameters)
from ros_segcap.ros.publish import ResultPublisher
from ros_segcap.ros.transport import DropMeter, transport_fix
from ros_segcap.worker import STATUS_STOPPING, Frame, Request, Worker

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
THROTTLE_S = 5.0
STALE_S = 5.0  # no frame for this long: diagnostics warn (publish.py)
LIVE_PIPELINE = tuple(o for o in in_scope('pipeline') if o.live)


def make_pipeline(config: Any) -> Any:
    """Open the core pipeline from the node config (image_size is checked, not ignored)."""
    from ros_segcap.runtime import PipelineConfig, open_pipeline

    pipeline = open_pipeline(PipelineConfig(**pipeline_values(vars(config))))
    size = pipeline.model.config.image_size
    if config.image_size and config.image_size != size:
        raise ValueError(f'image_size={config.image_size}: model {config.model} has a fixed '
                         f'input size of {size}; set image_size to 0 or {size}')
    warm_up = getattr(pipeline.model, 'warm_up', None)
    if warm_up is not None:
        warm_up()  # e.g. the decoder's weights now, not at the first command
    return pipeline


class SegCapNode(LifecycleNode):
    """The ROS 2 node; see the module docstring and docs/design.md §5."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('segcap_node', **kwargs)
        declare_parameters(self)
        self.autostart = bool(self.get_parameter('autostart').value)
        self.failure = ''  # why the last configure failed
        self._config = NodeConfig()
        self._pipeline: Any = None
        self._modes: Optional[Modes] = None
        self._worker: Optional[Worker] = None
        self._out: Optional[ResultPublisher] = None
        self._inputs: list[Callable[[], Any]] = []  # destroy the active state's inputs
        self._pending = 0  # service and action calls waiting for their answer
        self._pending_lock = threading.Lock()
        self._namesakes = 1  # nodes with this node's name, as last seen in the graph
        self._drops = DropMeter()  # frames lost on the way, from the image stamps
        self._interfaces, why = messages.load_interfaces()
        if self._interfaces is None:
            self.get_logger().warning(NO_INTERFACES.format(why=why))
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ----- lifecycle transitions ----------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read the parameters and load the model; FAILURE (with the reason) on a bad one."""
        try:
            config = read_parameters(self)
            self._pipeline = make_pipeline(config)
        except Exception as exc:  # noqa: BLE001 - bad parameter or model: one line
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            self.failure = ' '.join(str(reason).split())
            if not self.autostart:  # unmanaged: main() prints it and exits 1
                self.get_logger().error(f'configure failed: {self.failure}')
            return FAILURE
        self._config = config
        self._worker = Worker(
            process=self._process, publish=self._publish, publish_status=self._publish_status,
            frame_buffer=config.frame_buffer, queue_size=config.queue_size,
            stamp=lambda: self.get_clock().now().to_msg(), warn=self._warn)
        self._worker.sticky = is_tracked
        self._modes = Modes(self._pipeline, config)
        self._set_live(config)
        self._out = ResultPublisher(self, self._interfaces, self._pipeline)
        self.get_logger().info(f'configured: model {config.model} on {config.device}')
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe, serve and start the worker."""
        self._create_inputs()
        self._worker.start()
        self._check_namesakes()
        topic = 'image/compressed' if self._config.compressed else 'image'
        self.get_logger().info(f'ready: model {self._config.model} on {self._config.device}, '
                               f'reading {self.resolve_topic_name(topic)}')
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking work: stop the worker (answering what waits), drop the inputs."""
        self._worker.stop()
        self._destroy_inputs()
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the pipeline (the model) and the publishers."""
        self._release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything, whatever the state."""
        self.close()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Clean up after a failed transition; the node returns to unconfigured."""
        self.close()
        return SUCCESS

    def stop_work(self) -> None:
        """Stop the worker: cancel the running request, answer every waiting one."""
        if self._worker is not None:
            self._worker.stop()

    @property
    def pending(self) -> int:
        """Service and action calls still waiting for their answer."""
        with self._pending_lock:
            return self._pending

    def close(self) -> None:
        """Stop the worker (a running generation is cancelled), release the model."""
        if self._worker is not None:
            self._worker.stop()
        self._destroy_inputs()
        self._release()

    def _release(self) -> None:
        if self._out is not None:
            self._out.destroy()
        self._out, self._worker, self._pipeline, self._modes = None, None, None, None

    # ----- wiring -------------------------------------------------------------------------

    def _create_inputs(self) -> None:
        cfg, it = self._config, self._interfaces
        image_type = CompressedImage if cfg.compressed else Image
        topic = 'image/compressed' if cfg.compressed else 'image'
        command_qos = QoSProfile(depth=cfg.command_qos_depth,
                                 reliability=ReliabilityPolicy.RELIABLE)
        subscriptions = [
            (image_type, topic, self._on_image, image_qos(cfg)),
            (String, 'command', self._on_command, command_qos),
            (PointStamped, 'image_mouse_left', self._on_prompt, 10),
        ] + ([(it.PromptMsg, 'segcap/prompt', self._on_prompt, 10)] if it else [])
        self._drops = DropMeter()
        for args in subscriptions:
            sub = self.create_subscription(*args)
            self._inputs.append(partial(self.destroy_subscription, sub))
        timer = self.create_timer(cfg.diagnostics_period, self._on_diagnostics)
        self._inputs.append(partial(self.destroy_timer, timer))
        if it is not None:
            self._create_servers(it)

    def _create_servers(self, it: Any) -> None:
        group = ReentrantCallbackGroup()  # both wait (without a thread) for the worker
        service = self.create_service(it.SegmentSrv, 'segcap/segment', self._on_service,
                                      callback_group=group)
        action = ActionServer(self, it.SegmentAction, 'segcap/segment_stream', self._on_goal,
                              goal_callback=lambda _: GoalResponse.ACCEPT,
                              cancel_callback=lambda _: CancelResponse.ACCEPT,
                              callback_group=group)
        self._inputs += [partial(self.destroy_service, service), action.destroy]

    def _destroy_inputs(self) -> None:
        while self._inputs:
            self._inputs.pop()()

    # ----- inputs (callbacks only store and enqueue) --------------------------------------

    def _on_image(self, msg: Any) -> None:
        error = convert.image_error(msg, self._max_pixels())
        if error:
            self._worker.count('bad_images')
            self.get_logger().warning(f'bad image: {error}', throttle_duration_sec=THROTTLE_S)
        self._worker.add_frame(msg.header, msg, error)
        self._drops.add(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)

    def _on_command(self, msg: String) -> None:
        self._worker.command(msg.data)

    def _on_prompt(self, msg: Any) -> None:
        """Hold a click / visual prompt for the next command (or run it now with its text)."""
        if isinstance(msg, PointStamped) or not msg.text.strip():
            self._worker.hold_prompt(msg)
        else:
            self._worker.submit(self._worker.request(msg.text, msg))

    async def _on_service(self, request: Any, response: Any) -> Any:
        req = self._worker.request(request.command, self._given_prompt(request.prompt))
        if request.image.height and request.image.width:
            error = convert.image_error(request.image, self._max_pixels())
            req.frame = Frame(self._worker.new_key(), request.image.header, request.image,
                              error)
        response.result = await self._answer(req)
        return response

    async def _on_goal(self, goal_handle: Any) -> Any:
        feedback_type = self._interfaces.SegmentAction.Feedback
        text: list[str] = []

        def on_text(piece: str) -> bool:  # in the worker thread
            text.append(piece)
            goal_handle.publish_feedback(feedback_type(text=''.join(text), delta=piece))
            return not goal_handle.is_cancel_requested

        goal = goal_handle.request
        req = self._worker.request(goal.command, self._given_prompt(goal.prompt))
        req.on_text, req.is_cancelled = on_text, lambda: goal_handle.is_cancel_requested
        result = await self._answer(req)
        if result.status == STATUS_CANCELLED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif result.status == STATUS_OK:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return self._interfaces.SegmentAction.Result(result=result)

    async def _answer(self, req: Request) -> Any:
        """Submit `req` and wait for its answer without holding an executor thread."""
        answered: Future = Future()
        executor = self.executor

        def reply(answer: Any) -> None:  # in the worker thread, or here when refused at once
            answered.set_result(answer)
            if executor is not None:
                executor.wake()  # resume the waiting callback now
        req.reply = reply
        with self._pending_lock:
            self._pending += 1
        try:
            self._worker.submit(req)
            answer = await answered
        finally:
            with self._pending_lock:
                self._pending -= 1
        if answer is None:  # the status could not be published (shutting down)
            answer = self._out.message(req, status_result(STATUS_STOPPING))
        return answer

    @staticmethod
    def _given_prompt(prompt: Any) -> Any:
        return None if prompt is None or prompt.type == prompt.NONE else prompt

    # ----- the worker's callables (worker thread) -----------------------------------------

    def _process(self, req: Request) -> tuple[Any, Any]:
        """Run one request: convert -> core; never raises."""
        from ros_segcap.core.types import InputError

        if self._worker.cancelled(req):
            return status_result(STATUS_CANCELLED), None
        rgb = None
        try:
            t0 = time.perf_counter()
            rgb = convert.message_to_rgb(req.frame.msg, req.frame.error, self._max_pixels())
            prompt = messages.prompt_from_msg(req.prompt)
            convert_ms = (time.perf_counter() - t0) * 1000.0
            result = self._modes.run(req, rgb, prompt, self._on_text(req),
                                     self._out.on_mask(req.command))
            result.timing.add('ros_convert', convert_ms)
            if result.status == STATUS_CANCELLED and self._worker.stopping:
                result.status = STATUS_STOPPING
        except InputError as exc:
            result = status_result('bad input: ' + ' '.join(str(exc).split()))
            self._warn(f'command {req.command[:80]!r}: {result.status}')
        except Exception as exc:  # noqa: BLE001 - the node never dies on one command
            self._worker.count('errors')
            result = status_result(f'error: {type(exc).__name__}: ' + ' '.join(str(exc).split()))
            self.get_logger().error(f'command {req.command[:80]!r} failed: {exc!r}',
                                    throttle_duration_sec=THROTTLE_S)
        result.timing.add('queue_wait', req.wait_ms)
        return result, rgb

    def _on_text(self, req: Request) -> Callable[[str], bool]:
        def on_text(piece: str) -> bool:
            if self._worker.cancelled(req):
                return False
            return req.on_text(piece) if req.on_text else True
        return on_text

    def _publish(self, req: Request, result: Any, rgb: Any) -> Any:
        return self._out.publish(req, result, rgb, self._config.publish_overlay)

    def _publish_status(self, req: Request, status: str) -> Any:
        return self._out.publish(req, status_result(status), None, False)

    # ----- timers and parameters ----------------------------------------------------------

    def _on_diagnostics(self) -> None:
        worker, drops = self._worker, self._drops
        snapshot = worker.snapshot()
        lost, sent = drops.recent_percent(), drops.source_hz()
        warning = ''
        if drops.known and lost > self._config.drop_warn_percent:
            warning = (f'{lost:.0f}% of the image frames are lost on the way (the source sends '
                       f'{sent:.1f} Hz, judged from the header stamps); {transport_fix()}')
        elif not snapshot[1] or time.monotonic() - snapshot[1][-1] > STALE_S:
            warning = self._silent_publishers()
        if warning:
            self.get_logger().warning(warning, throttle_duration_sec=THROTTLE_S)
        self._out.diagnostics(snapshot, worker.queue_depth(), self._config,
                              {'frames lost (%)': lost, 'source rate (Hz)': sent}, warning)
        self._check_namesakes()

    def _silent_publishers(self) -> str:
        """Say so when the image topic has publishers but no frame of theirs arrives."""
        topic = self.resolve_topic_name('image/compressed' if self._config.compressed
                                        else 'image')
        count = self.count_publishers(topic)
        return (f'{count} publisher(s) on {topic} but no frame arrives; {transport_fix()}'
                if count else '')

    def _check_namesakes(self) -> None:
        """Warn when another node has this node's name: every command would be answered twice."""
        me = (self.get_name(), self.get_namespace())
        count = self.get_node_names_and_namespaces().count(me)
        if count > 1 and count != self._namesakes:
            self.get_logger().warning(
                f'{count - 1} other node(s) named {self.get_fully_qualified_name()} are running: '
                'each command will be answered by every one of them; give each node its own '
                'name or namespace')
        self._namesakes = count

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        configured = self._pipeline is not None
        config, reason = apply_changes(self._config, params, configured)
        for opt in LIVE_PIPELINE if configured else ():
            old, new = getattr(self._config, opt.name), getattr(config, opt.name)
            if not reason and new != old:
                reason = self._pipeline.set_option(opt.pipeline_key, new) or ''
        if reason:
            self.get_logger().warning(f'parameter change refused: {reason}')
            return SetParametersResult(successful=False, reason=reason)
        self._config = config
        self._set_live(config)
        return SetParametersResult(successful=True)

    def _set_live(self, config: Any) -> None:
        if self._worker is not None:
            self._worker.continuous = config.continuous
            self._worker.continuous_rate = config.continuous_rate
            self._worker.panoptic = config.mode == 'panoptic'
        if self._modes is not None:
            self._modes.set_live(config)

    def _max_pixels(self) -> int:
        return int(self._config.max_image_megapixels * 1e6)

    def _warn(self, text: str) -> None:
        self.get_logger().warning(text, throttle_duration_sec=THROTTLE_S)
