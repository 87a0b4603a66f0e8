"""The option table (ros_segcap/core/options.py): one definition, read by node, CLI and yaml."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from ros_segcap.core import options
from ros_segcap.core.options import OPTIONS, check, defaults, option

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / 'config' / 'segcap.yaml'


def test_the_module_is_a_leaf_that_imports_only_the_standard_library():
    probe = ('import sys\n'
             'import ros_segcap.core.options\n'
             'heavy = {"torch", "numpy", "rclpy", "cv2", "transformers"} & set(sys.modules)\n'
             'assert not heavy, heavy\n')
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_row_is_consistent():
    assert len({o.name for o in OPTIONS}) == len(OPTIONS)
    for opt in OPTIONS:
        assert opt.scopes and opt.scopes <= set(options.SCOPES), opt.name
        assert check(opt.name, opt.default) is None, opt.name
        assert (opt.lo is None) == (opt.hi is None), opt.name
        if opt.lo is not None:
            assert opt.type in (int, float) and opt.lo < opt.hi, opt.name


def test_check_gives_a_one_line_reason():
    assert check('temperature', 0.7) is None and check('temperature', 1) is None
    assert check('temperature', 2.5) == 'temperature=2.5 must be from 0 to 2'
    assert check('max_new_tokens', 0) == 'max_new_tokens=0 must be from 1 to 1024'
    assert check('max_new_tokens', 4.0) == 'max_new_tokens=4.0 must be of type int'
    assert check('refine_edges', 1) == 'refine_edges=1 must be of type bool'
    assert check('max_new_tokens', True) == 'max_new_tokens=True must be of type int'
    assert check('decode_path', 'fast-int8') == (
        "decode_path='fast-int8' must be one of fast-q4, fast, reference")
    with pytest.raises(KeyError, match="unknown option 'nope'; known options: model"):
        option('nope')


def test_scopes_defaults_and_live_names():
    node, cli = defaults('node'), defaults('cli')
    assert {'autostart', 'continuous', 'queue_size', 'frame_buffer'} <= set(node)
    assert 'autostart' not in cli and 'frame_buffer' not in cli
    assert {'model', 'backend', 'decode_path', 'refine_edges', 'allow_pickle'} <= set(cli)
    assert options.LIVE == options.live('node')
    assert options.live('pipeline') == ('max_new_tokens', 'temperature', 'mask_threshold',
                                        'refine_edges', 'check_presence', 'region_places')
    assert 'model' not in options.LIVE and 'continuous' in options.LIVE
    with pytest.raises(ValueError, match='unknown scope'):
        defaults('launch')


def test_pipeline_defaults_name_the_pipeline_config_fields():
    pipeline = pytest.importorskip('ros_segcap.runtime', reason='needs torch')
    wanted = defaults('pipeline')
    assert wanted['cache_frames'] == option('frame_buffer').default
    assert set(wanted) == {f.name for f in fields(pipeline.PipelineConfig)}
    config = pipeline.PipelineConfig(**wanted)
    assert all(getattr(config, k) == v for k, v in wanted.items())


def test_pipeline_values_renames_and_picks():
    values = dict(defaults('node'), frame_buffer=9, model='tiny-random')
    picked = options.pipeline_values(values)
    assert picked['cache_frames'] == 9 and picked['model'] == 'tiny-random'
    assert 'queue_size' not in picked and 'frame_buffer' not in picked


def test_params_file_is_written_from_the_table():
    assert PARAMS.read_text() == options.yaml_text(), (
        'config/segcap.yaml is out of date: python -m ros_segcap.core.options > '
        'config/segcap.yaml')
    values = yaml.safe_load(PARAMS.read_text())['/**']['ros__parameters']
    assert values == defaults('node')
    assert all(type(values[k]) is option(k).type for k in values)
    for line in PARAMS.read_text().splitlines():
        name = line.split(':')[0].strip()
        if name in values:
            assert line.endswith('[restart]') is not option(name).live, line


def test_the_image_size_limit_is_a_node_parameter_and_a_cli_flag():
    """max_image_megapixels: one option, one range, for the node and `segcap infer`."""
    opt = option('max_image_megapixels')
    assert {'node', 'cli'} <= opt.scopes and 'pipeline' not in opt.scopes
    assert defaults('cli')['max_image_megapixels'] == defaults('node')['max_image_megapixels']
    assert check('max_image_megapixels', 0.0) == (
        'max_image_megapixels=0.0 must be from 0.01 to 500')
