"""Frames in, commands queued, one worker thread answering them: the node's serving loop.

Knows nothing of ROS: frames and prompts are opaque objects, and the caller hands in the
callables that run a request and publish its result or a status. Image callbacks only store
the frame in a ring; a command takes the newest usable frame at its arrival (an unusable one,
a 0x0 image say, only when the ring holds nothing better, so its status says what is wrong;
`frame_buffer` bounds how old the frame can be) and waits in a bounded
queue (a full queue drops the command with a status, so slow processing never builds a
backlog). Frame keys are unique per frame, so several commands on one frame share its key and
the core encodes it once. In continuous mode the last command re-runs on new frames, at most
`continuous_rate` times a second; so does a command for which `sticky(command)` is true (a
'track ...' command) without continuous mode. In panoptic mode every new frame (at most
`continuous_rate` a second) becomes a request of kind 'panoptic', with or without commands.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

STATUS_NO_IMAGE = 'no image yet'
STATUS_DROPPED = 'dropped: queue full'
STATUS_EMPTY = 'bad input: empty command: say what to segment or ask a question'
STATUS_STOPPING = 'cancelled: the node is stopping (deactivated or shutting down)'
TICK_S = 0.05  # continuous mode looks for a new frame this often


@dataclass
class Frame:
    """A received frame; `key` is unique and names its encoder outputs in the core cache."""

    key: int
    header: Any  # the source header, carried to every output
    msg: Any  # the frame as received (None when unusable)
    error: str = ''  # why the frame cannot be used ('' = usable)


@dataclass
class Request:
    """One command waiting for the worker; `reply` gets the published answer."""

    command: str
    frame: Optional[Frame]
    arrival: Any  # the caller's stamp of its arrival
    prompt: Any = None  # a visual prompt message, or None
    on_text: Optional[Callable[[str], bool]] = None
    is_cancelled: Callable[[], bool] = lambda: False
    reply: Optional[Callable[[Any], None]] = None
    continuous: bool = False
    queued: float = field(default_factory=time.monotonic)
    started: float = 0.0  # when the worker took it (time.monotonic)
    kind: str = 'command'  # or 'panoptic': every object of the frame, no command

    @property
    def wait_ms(self) -> float:
        """Time spent in the queue, in milliseconds."""
        return max(0.0, self.started - self.queued) * 1000.0


# process(req) -> (result, extra); publish(req, result, extra) -> answer;
# publish_status(req, status) -> answer. The answer goes to req.reply when set.
Process = Callable[[Request], tuple[Any, Any]]
Publish = Callable[[Request, Any, Any], Any]
PublishStatus = Callable[[Request, str], Any]


class Worker:
    """Frame ring, bounded command queue, one worker thread and continuous mode."""

    def __init__(self, *, process: Process, publish: Publish, publish_status: PublishStatus,
                 frame_buffer: int = 4, queue_size: int = 4,
                 stamp: Callable[[], Any] = time.time,
                 warn: Callable[[str], None] = lambda text: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._process, self._publish, self._publish_status = process, publish, publish_status
        self._stamp, self._warn, self._clock = stamp, warn, clock
        self._keys = itertools.count(1)
        self._ring: deque[Frame] = deque(maxlen=frame_buffer)
        self._queue: queue.Queue[Request] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._closing.set()  # until start()
        self._thread: Optional[threading.Thread] = None
        self.stats: Counter[str] = Counter()
        self.image_times: deque[float] = deque(maxlen=120)
        self.continuous = False
        self.continuous_rate = 1.0  # Hz
        self.panoptic = False  # every new frame becomes a panoptic request
        self.sticky: Callable[[str], bool] = lambda command: False  # re-run without continuous
        self._pending_prompt: Any = None
        self._last_command: Optional[str] = None
        self._last_continuous = (0.0, 0)  # (clock time, frame key)

    # ----- inputs -------------------------------------------------------------------------

    def add_frame(self, header: Any, msg: Any, error: str = '') -> Frame:
        """Store a frame (with a new key) as the newest; `error` marks it unusable."""
        frame = Frame(next(self._keys), header, None if error else msg, error)
        with self._lock:
            self._ring.append(frame)
            self.image_times.append(self._clock())
        return frame

    def new_key(self) -> int:
        """Return a fresh frame key, e.g. for an image that came with a service request."""
        return next(self._keys)

    def newest(self) -> Optional[Frame]:
        """Return the newest usable frame, else the newest frame; None before the first."""
        with self._lock:
            usable = [frame for frame in self._ring if not frame.error]
            return usable[-1] if usable else self._ring[-1] if self._ring else None

    def request(self, command: str, prompt: Any = None) -> Request:
        """Make a request on the newest usable frame at this moment (its arrival)."""
        return Request(command, self.newest(), self._stamp(), prompt)

    def hold_prompt(self, prompt: Any) -> None:
        """Keep a visual prompt (a click, say) for the next command."""
        with self._lock:
            self._pending_prompt = prompt

    def command(self, text: str) -> Request:
        """Submit a command on the newest frame, with the held prompt; it becomes the last."""
        with self._lock:
            prompt, self._pending_prompt = self._pending_prompt, None
            if text.strip():
                self._last_command = text
        req = self.request(text, prompt)
        if req.frame is not None:  # continuous mode starts from the next frame
            self._last_continuous = (self._clock(), req.frame.key)
        self.submit(req)
        return req

    def submit(self, req: Request) -> None:
        """Queue a request, or answer at once when it cannot run."""
        self.count('continuous' if req.continuous else 'commands')
        if not req.command.strip():
            self._answer_status(req, STATUS_EMPTY)
        elif req.frame is None:
            self._answer_status(req, STATUS_NO_IMAGE)
        else:
            with self._lock:  # against stop(): queued requests are all answered
                stopping = self._closing.is_set()
                full = False
                if not stopping:
                    req.queued = self._clock()
                    try:
                        self._queue.put_nowait(req)
                    except queue.Full:
                        full = True
            if stopping:
                self._answer_status(req, STATUS_STOPPING)
            elif full and not req.continuous:
                self.count('dropped')
                self._answer_status(req, STATUS_DROPPED)

    def submit_and_wait(self, req: Request) -> Any:
        """Submit a request and block until its answer is published; return the answer.

        For callers without an event loop; the node answers asynchronously (req.reply).
        """
        done = threading.Event()
        box: list[Any] = []
        req.reply = lambda answer: (box.append(answer), done.set())
        self.submit(req)
        done.wait()
        return box[0]

    def cancelled(self, req: Request) -> bool:
        """Tell whether the request should stop: cancelled by its client, or stopping."""
        return self._closing.is_set() or req.is_cancelled()

    # ----- the worker thread --------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (again after stop())."""
        if self._thread is not None:
            return
        with self._lock:
            self._ring.clear()  # no frame from before a stop
        self._closing.clear()
        self._thread = threading.Thread(target=self._serve, name='segcap_worker', daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work, cancel a running request, join the thread, answer the queue."""
        with self._lock:
            self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        while True:
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                break
            self._answer_status(req, STATUS_STOPPING)

    @property
    def stopping(self) -> bool:
        """Tell whether the worker stops taking work (stop() was called, or no start() yet)."""
        return self._closing.is_set()

    @property
    def running(self) -> bool:
        """Tell whether the worker thread takes work."""
        return self._thread is not None and not self._closing.is_set()

    def queue_depth(self) -> int:
        """Return how many requests wait."""
        return self._queue.qsize()

    def _serve(self) -> None:
        while not self._closing.is_set():
            self.tick()
            try:
                req = self._queue.get(timeout=TICK_S)
            except queue.Empty:
                continue
            req.started = self._clock()
            result, extra = self._process(req)
            try:
                answer = self._publish(req, result, extra)
            except Exception as exc:  # noqa: BLE001 - answer anyway; the worker must live on
                self._warn(f'publishing a result failed: {exc!r}')
                self._answer_status(req, f'error: {type(exc).__name__}: {exc}')
                continue
            self.count('results')
            if req.reply is not None:
                req.reply(answer)

    def tick(self) -> Optional[Request]:
        """Re-run the last command on a new frame if continuous mode is due; return it."""
        now, frame = self._clock(), self.newest()
        with self._lock:
            command = self._last_command
        last_time, last_key = self._last_continuous
        kind = 'panoptic' if self.panoptic else 'command'
        if self.panoptic:
            command = 'panoptic'
        elif command is None or not (self.continuous or self.sticky(command)):
            return None
        if frame is None or frame.key == last_key:
            return None
        if now - last_time < 1.0 / self.continuous_rate or not self._queue.empty():
            return None
        self._last_continuous = (now, frame.key)
        req = Request(command, frame, self._stamp(), continuous=True, kind=kind)
        self.submit(req)
        return req

    # ----- answers and counts -------------------------------------------------------------

    def _answer_status(self, req: Request, status: str) -> None:
        """Publish a status and reply with it; the reply is None when publishing failed."""
        try:
            answer = self._publish_status(req, status)
        except Exception as exc:  # noqa: BLE001 - the worker thread must live on
            self._warn(f'publishing the status {status!r} failed: {exc!r}')
            answer = None
        self.count('results')
        if req.reply is not None:
            req.reply(answer)

    def count(self, key: str) -> None:
        """Add one to a statistic (commands, continuous, dropped, results, ...)."""
        with self._lock:
            self.stats[key] += 1

    def snapshot(self) -> tuple[dict[str, int], list[float]]:
        """Return (statistics, image arrival times) for diagnostics."""
        with self._lock:
            return dict(self.stats), list(self.image_times)
