"""`segcap demo --track`: the sequence it plays, the command it sends, what it prints."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

import rosutil as ru

if not ru.HAVE_RCLPY:
    pytest.skip(ru.WHY_NO_RCLPY, allow_module_level=True)

from ros_segcap.ros.camera import image_dir_frames  # noqa: E402
from ros_segcap.ros.demo_track import (TRACK_FRAMES, Tracked, add_track_arguments,  # noqa: E402
                                       prepare, report)
from ros_segcap.world.sequence import make_sequence  # noqa: E402


def test_prepare_plays_the_sequence_back_and_forth(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_track_arguments(parser)
    args = parser.parse_args(['--track', 'leave', '--track-seed', '1'])
    args.size, args.out, args.images, args.video, args.bag = (160, 120), tmp_path, None, 'x', None
    prepare(args)
    seq = make_sequence('leave', seed=1, frames=TRACK_FRAMES, height=120, width=160)
    assert args.command == f'track {seq.phrase}' and args.video is None
    frames = image_dir_frames(args.images)  # as the demo's camera reads them
    assert len(frames) == 2 * TRACK_FRAMES - 2
    assert np.array_equal(frames[0], seq.frames[0].image)
    assert np.array_equal(frames[TRACK_FRAMES - 1], seq.frames[-1].image)
    assert np.array_equal(frames[-1], seq.frames[1].image), 'the loop must not jump'
    assert parser.parse_args(['--track']).track == 'pan'
    assert parser.parse_args([]).track is None


def test_report_prints_one_line_per_result(capsys) -> None:
    class Log:
        items = [Tracked(10.0, (1,), ('the red cup',), (1.0,), True),
                 Tracked(10.5, (1,), ('the red cup',), (0.8,), False),
                 Tracked(11.0, (1,), ('the red cup',), (0.0,), True)]
    report(Log())
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert 'LLM' in lines[0] and 'vision only' in lines[1] and '(match 0.80)' in lines[1]
    assert '(lost)' in lines[2]
    assert lines[3] == 'tracking: 3 results, ids [1], 2 answered by the LLM'
