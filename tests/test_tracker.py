"""Tracking from a language command on world sequences with the shipped segcap-tiny.

The LLM answers on the first frame; later frames re-find the target from its [SEG] state.
A fake clock advances 0.1 s per frame (a 10 Hz camera), so the timed rules are exact.
"""
from __future__ import annotations

import numpy as np
import pytest

from ros_segcap.core.pipeline import mask_iou
from ros_segcap.core.tracker import Tracker, TrackSettings, match_score, track_command
from ros_segcap.models.segcap.weights import SHIPPED_DIR
from ros_segcap.world.sequence import HAND_ID, make_sequence

SHIPPED = SHIPPED_DIR / 'segcap-tiny'
needs_weights = pytest.mark.skipif(not (SHIPPED / 'model.safetensors').is_file(),
                                   reason='no shipped segcap-tiny weights in ros_segcap/weights')
FRAME_S = 0.1
# The pan sequence the tracking tests follow: seed 4, where the shipped model's first answer
# finds its target (on seeds 2 and 3 it starts with "There is no ..."; docs/tracking.md has the
# first-answer rate over seeds). These tests are about what tracking does with a found target.
PAN_SEED = 4


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope='module')
def pipeline():
    from ros_segcap.runtime import PipelineConfig, open_pipeline
    return open_pipeline(PipelineConfig(model='segcap-tiny'))


def follow(pipeline, seq, settings: TrackSettings, command: str = ''):
    """Track seq's target over its frames; return (results, tracker)."""
    clock = Clock()
    tracker = Tracker(pipeline, settings, clock=clock)
    tracker.start(command or seq.phrase)
    results = []
    for frame in seq.frames:
        clock.now = frame.index * FRAME_S
        results.append(tracker.step(frame.image, frame_key=(seq.kind, seq.seed, frame.index)))
    return results, tracker


def test_track_command_prefix():
    assert track_command('track the red cup') == 'the red cup'
    assert track_command('  Track  the red cup ') == 'the red cup'
    assert track_command('track ') is None
    assert track_command('the track of the red cup') is None
    assert track_command('keep segmenting the red cup') is None


def test_match_score_follows_motion_up_to_the_object_size():
    old = np.zeros((100, 200), bool)
    old[40:60, 50:70] = True  # a 20 x 20 square, box diagonal 28 px
    moved = np.roll(old, 15, axis=1)  # 15 px to the right: IoU 5/35 without motion
    assert match_score(moved, old) == 1.0
    far = np.roll(old, 100, axis=1)  # the same shape far away: another object
    assert match_score(far, old) == 0.0
    other = np.zeros_like(old)
    other[48:53, 20:100] = True  # a different shape (a thin bar) at the same place
    assert 0.0 < match_score(other, old) < 0.3
    assert match_score(np.zeros_like(old), old) == 0.0


def test_sequences_have_exact_identities():
    seq = make_sequence('leave', seed=0, frames=20)
    sizes = [int(f.mask(seq.target).sum()) for f in seq.frames]
    assert sizes[0] > 500 and sizes[-1] == sizes[0], 'the target starts and ends in view'
    assert min(sizes) == 0, 'the target leaves the view'
    push = make_sequence('push', seed=1, frames=12)
    assert all((f.panoptic == HAND_ID).any() for f in push.frames), 'the hand is in every frame'
    moved = [np.flatnonzero(f.mask(push.target).any(0)).mean() for f in push.frames]
    assert moved[-1] - moved[0] > 30, f'the pushed target moved {moved[-1] - moved[0]:.0f} px'
    pan = make_sequence('pan', seed=0, frames=6)
    assert not np.array_equal(pan.frames[0].image, pan.frames[-1].image)


@needs_weights
def test_ids_stay_while_the_camera_pans(pipeline):
    seq = make_sequence('pan', seed=PAN_SEED, frames=12)
    results, _ = follow(pipeline, seq, TrackSettings(reground_s=0))
    assert [r.regrounded for r in results] == [True] + [False] * 11, \
        'the LLM answered again though every match was strong'
    assert all(r.ids == [1] for r in results), [r.ids for r in results]
    ious = [mask_iou(r.masks[0], f.mask(seq.target)) for r, f in zip(results, seq.frames)]
    assert min(ious) > 0.8, f'tracked mask IoU with the truth: {np.round(ious, 2)}'
    assert all(r.match_scores[0] > 0.3 for r in results)


@needs_weights
def test_a_target_that_leaves_is_reported_lost_and_keeps_its_id(pipeline):
    """Six 'leave' sequences (seeds 0-5) of the first renderer's world, which segcap-tiny
    never trained on: while the target is out of view no mask is invented for it, and it
    keeps id 1. Each holds in at least 4 of the 6 (docs/tracking.md has the measured level:
    a re-ground can name a look-alike, and a first answer can miss the target)."""
    lost_kept, ids_kept, report = 0, 0, []
    for seed in range(6):
        seq = make_sequence('leave', seed=seed, frames=20)
        results, _ = follow(pipeline, seq, TrackSettings(reground_s=0, retry_lost_s=1.0))
        gone = [i for i, f in enumerate(seq.frames) if not f.mask(seq.target).any()]
        assert gone, 'the sequence must take the target out of view'
        invented = [i for i in gone if results[i].masks and
                    (results[i].masks[0].any() or results[i].match_scores[0] > 0)]
        lost_kept += not invented
        ids_kept += all(r.ids == [1] for r in results)
        report.append(f'seed {seed}: masks while gone on frames {invented}, '
                      f'ids {sorted({tuple(r.ids) for r in results})}')
    assert lost_kept >= 4 and ids_kept >= 4, '\n'.join(report)


@needs_weights
@pytest.mark.parametrize('retry_s, gap', [(0.0, 1), (0.5, 5)])
def test_a_lost_target_is_asked_for_every_retry_lost_s(pipeline, retry_s, gap):
    """While the target is out of view the LLM is asked again every retry_lost_s (0: on
    every frame), and when it comes back the next such answer finds it under its old id."""
    seq = make_sequence('leave', seed=2, frames=20)  # the first answer finds the target
    results, _ = follow(pipeline, seq, TrackSettings(reground_s=0, retry_lost_s=retry_s))
    lost = [i for i, r in enumerate(results) if not r.masks[0].any()]
    assert lost, 'the target must be lost while out of view'
    asked = []  # frames the LLM answered on, from the loss to the frame it is found again
    for i in range(lost[0] + 1, len(results)):
        asked += [i] if results[i].regrounded else []
        if results[i].masks[0].any():
            break
    assert len(asked) >= 2 and asked == list(range(lost[0] + gap, asked[-1] + 1, gap)), asked
    back = next(i for i, f in enumerate(seq.frames) if i > lost[0] and f.mask(seq.target).any())
    found = [i for i in range(back, len(results))
             if mask_iou(results[i].masks[0], seq.frames[i].mask(seq.target)) > 0.5]
    assert found and found[0] - back < gap + 1, (back, found)
    assert all(r.ids == [1] for r in results)


@needs_weights
def test_reground_every_n_seconds(pipeline):
    seq = make_sequence('pan', seed=PAN_SEED, frames=8)
    results, _ = follow(pipeline, seq, TrackSettings(reground_s=0.25))
    # the LLM answers at 0.0 s, 0.3 s, 0.6 s (frames 0, 3, 6) and only then
    assert [i for i, r in enumerate(results) if r.regrounded] == [0, 3, 6]
    assert all(r.ids == [1] for r in results)


@needs_weights
def test_a_new_command_replaces_the_tracked_set(pipeline):
    seq = make_sequence('pan', seed=PAN_SEED, frames=3)
    clock = Clock()
    tracker = Tracker(pipeline, TrackSettings(reground_s=0), clock=clock)
    tracker.start(seq.phrase)
    first = tracker.step(seq.frames[0].image, frame_key='a')
    other = next(f'the {o.colour} {o.kind}' for i, o in enumerate(seq.spec.objects)
                 if i != seq.target)
    tracker.start(other)
    second = tracker.step(seq.frames[1].image, frame_key='b')
    assert first.phrases == [seq.phrase]
    assert second.regrounded and seq.phrase not in second.phrases
    assert not set(first.ids) & set(second.ids), 'the old ids must not carry over'
