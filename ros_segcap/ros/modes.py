"""What a worker request runs on the core: a command, tracking, or a panoptic frame.

- kind 'panoptic' (parameter mode:=panoptic): Pipeline.panoptic, every object, no LLM;
- a command starting 'track ' (any mode), or any command while `continuous` is on: the
  core Tracker (the LLM answers once, later frames re-find the objects; a new command
  replaces the tracked set);
- otherwise, and for commands with a visual prompt: Pipeline.run.
The core is imported when first used, so importing the node stays free of torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from ros_segcap.worker import Request

if TYPE_CHECKING:
    import numpy as np

    from ros_segcap.core.tracker import TrackSettings
    from ros_segcap.core.types import SegCapResult, VisualPrompt


def track_settings(config: Any) -> TrackSettings:
    """The tracker's settings from the node config."""
    from ros_segcap.core.tracker import TrackSettings
    return TrackSettings(min_match=config.track_min_match,
                         reground_s=config.track_reground_s,
                         retry_lost_s=config.track_retry_lost_s)


def is_tracked(command: str) -> bool:
    """Tell whether a command is a 'track ...' command (re-run without continuous mode)."""
    from ros_segcap.core.tracker import track_command
    return track_command(command) is not None


class Modes:
    """Dispatch requests to Pipeline.run, the Tracker or Pipeline.panoptic."""

    def __init__(self, pipeline: Any, config: Any) -> None:
        from ros_segcap.core.tracker import Tracker
        self.pipeline = pipeline
        self.tracker = Tracker(pipeline, track_settings(config))
        self.continuous = bool(config.continuous)

    def set_live(self, config: Any) -> None:
        """Apply live parameters (continuous and the track_* options)."""
        self.tracker.settings = track_settings(config)
        self.continuous = bool(config.continuous)

    def run(self, req: Request, rgb: np.ndarray, prompt: Optional[VisualPrompt],
            on_text: Callable[[str], bool], on_mask: Any) -> SegCapResult:
        """Answer one request on its frame (the frame key names its encoder outputs)."""
        from ros_segcap.core.tracker import track_command
        key = req.frame.key
        if req.kind == 'panoptic':
            return self.pipeline.panoptic(rgb, frame_key=key)
        target = track_command(req.command)
        if prompt is not None or (target is None and not self.continuous):
            return self.pipeline.run(rgb, req.command, prompt, frame_key=key, on_text=on_text,
                                     on_mask=on_mask)
        wanted = target or req.command
        if not req.continuous or self.tracker.command != wanted:
            self.tracker.start(wanted)  # a new command replaces the tracked set
        return self.tracker.step(rgb, frame_key=key, on_text=on_text)
