"""`segcap demo --track [pan|push|leave]`: the demo on a world sequence, tracking its target.

The sequence's frames are written to <out>/sequence/ (forward, then back, so the loop has no
jump) and the demo's camera plays them; the command is 'track <the target's phrase>', so
segcap_node answers once with the LLM and then follows the target on every frame it takes
(continuous_rate TRACK_RATE).
After the first answer the demo collects TRACK_RESULTS results and prints one line each:
frame stamp, ids, match scores and whether the LLM answered again.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACK_RESULTS = 10
TRACK_FRAMES = 24
TRACK_RATE = 30.0  # the node's continuous_rate: as many frames as it can take


@dataclass(frozen=True)
class Tracked:
    """One tracking result as the demo prints it."""

    stamp: float
    ids: tuple[int, ...]
    phrases: tuple[str, ...]
    match_scores: tuple[float, ...]
    regrounded: bool


def prepare(args: argparse.Namespace) -> None:
    """Write the sequence's frames, point the camera at them and set the track command."""
    import cv2

    from ros_segcap.world.sequence import make_sequence

    width, height = args.size
    seq = make_sequence(args.track, seed=args.track_seed, frames=TRACK_FRAMES, height=height,
                        width=width)
    folder = Path(args.out) / 'sequence'
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob('*.png'):
        old.unlink()
    order = list(range(len(seq))) + list(range(len(seq) - 2, 0, -1))
    for k, i in enumerate(order):
        bgr = cv2.cvtColor(seq.frames[i].image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(folder / f'{k:03d}.png'), bgr):
            raise OSError(f'could not write {folder / f"{k:03d}.png"}')
    args.images, args.video, args.bag = folder, None, None
    args.command = f'track {seq.phrase}'
    print(f'world sequence {args.track!r} (seed {args.track_seed}): {len(order)} frames in '
          f'{folder}; target {seq.phrase!r}', flush=True)


class TrackLog:
    """Collects the node's results for the track command (segcap/result)."""

    def __init__(self, node: Any, command_of: Any) -> None:
        from ros_segcap_msgs.msg import SegCapResult
        from rclpy.qos import QoSProfile

        self.items: list[Tracked] = []
        self._command_of = command_of
        node.create_subscription(SegCapResult, 'segcap/result', self._on_result,
                                 QoSProfile(depth=100))

    def _on_result(self, msg: Any) -> None:
        if msg.command != self._command_of() or msg.status != 'ok':
            return
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.items.append(Tracked(stamp, tuple(msg.ids), tuple(msg.phrases),
                                  tuple(msg.match_scores), bool(msg.regrounded)))


def report(log: TrackLog) -> None:
    """Print one line per tracking result."""
    if not log.items:
        print('tracking: no result yet')
        return
    t0 = log.items[0].stamp
    for r in log.items:
        objects = ', '.join(f'#{i} {p} (match {m:.2f})' if m > 0 else f'#{i} {p} (lost)'
                            for i, p, m in zip(r.ids, r.phrases, r.match_scores))
        how = 'LLM' if r.regrounded else 'vision only'
        print(f'  frame +{r.stamp - t0:6.2f} s  {how:<11} {objects or "(nothing tracked)"}')
    ids = {i for r in log.items for i in r.ids}
    print(f'tracking: {len(log.items)} results, ids {sorted(ids)}, '
          f'{sum(r.regrounded for r in log.items)} answered by the LLM')


def add_track_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --track and --track-seed to `segcap demo`."""
    parser.add_argument('--track', nargs='?', const='pan', default=None,
                        choices=('pan', 'push', 'leave'),
                        help='play a world sequence (default pan) and track its target '
                             '(replaces --command and the camera source)')
    parser.add_argument('--track-seed', type=int, default=0,
                        help='scene seed of the --track sequence')
