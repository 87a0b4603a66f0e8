"""sensor_msgs/Image <-> numpy, message glue and node parameters (in process, no DDS)."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy is not installed (scripts/setup.sh installs it)')
cv2 = pytest.importorskip('cv2')

from geometry_msgs.msg import PointStamped  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from ros_segcap.core.types import InputError, SegCapResult, Timing  # noqa: E402
from ros_segcap.ros import convert, messages  # noqa: E402
from ros_segcap.ros.params import NodeConfig, apply_changes  # noqa: E402

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # odd width: exercises step padding


def raw_image(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False
              ) -> Image:
    """Build an Image by hand (independently of convert), with `pad` junk bytes per row."""
    h, w = pixels.shape[:2]
    dtype = np.dtype('>u2' if bigendian else '<u2') if pixels.dtype == np.uint16 else np.uint8
    rows = pixels.astype(dtype).reshape(h, -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                step=rows.shape[1])
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize('pad', [0, 3])
@pytest.mark.parametrize('encoding,make', [
    ('rgb8', lambda c: c),
    ('bgr8', lambda c: c[..., ::-1]),
    ('rgba8', lambda c: np.dstack([c, np.full(c.shape[:2], 9, np.uint8)])),
    ('bgra8', lambda c: np.dstack([c[..., ::-1], np.full(c.shape[:2], 9, np.uint8)])),
])
def test_colour_encodings_to_rgb(encoding, make, pad):
    msg = raw_image(np.ascontiguousarray(make(RGB)), encoding, pad)
    np.testing.assert_array_equal(convert.image_to_rgb(msg), RGB)


@pytest.mark.parametrize('pad', [0, 5])
def test_mono8_to_rgb(pad):
    grey = RGB[..., 0].copy()
    rgb = convert.image_to_rgb(raw_image(grey, 'mono8', pad))
    assert rgb.shape == (5, 7, 3)
    np.testing.assert_array_equal(rgb[..., 1], grey)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
@pytest.mark.parametrize('bigendian', [False, True])
@pytest.mark.parametrize('pad', [0, 2])
def test_16bit_is_read_with_its_endianness_and_scaled(encoding, bigendian, pad):
    depth = np.array([[1000, 2000, 3000], [4000, 5000, 6000]], np.uint16)
    msg = raw_image(depth, encoding, pad, bigendian)
    np.testing.assert_array_equal(convert.image_to_numpy(msg), depth)
    rgb = convert.image_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[0, 0, 0] == 0 and rgb[1, 2, 0] == 255 and rgb[0, 2, 0] == 102  # 2000/5000*255


def test_rgb8_read_is_zero_copy():
    msg = raw_image(RGB, 'rgb8')
    view = convert.image_to_rgb(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))


def test_build_is_fast_and_round_trips():
    big = RNG.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)  # 3 MB
    start = time.perf_counter()
    msg = convert.numpy_to_image(big, 'rgb8', Header(frame_id='cam'))
    assert time.perf_counter() - start < 0.1  # an ndarray assignment takes ~300 ms
    assert (msg.height, msg.width, msg.step, msg.header.frame_id) == (1024, 1024, 3072, 'cam')
    np.testing.assert_array_equal(convert.image_to_rgb(msg), big)
    depth = RNG.integers(0, 65535, (4, 6), dtype=np.uint16)
    np.testing.assert_array_equal(
        convert.image_to_numpy(convert.numpy_to_image(depth, '16UC1')), depth)
    with pytest.raises(ValueError, match='rgb8 needs'):
        convert.numpy_to_image(depth, 'rgb8')


@pytest.mark.parametrize('change,match', [
    (dict(encoding='yuv422'), 'unsupported image encoding'),
    (dict(height=0, width=0, step=0, data=b''), 'zero size'),
    (dict(data=bytes(10)), 'less than height\\*step'),
    (dict(step=5), 'step 5 is less than'),
    (dict(height=6000, width=8000, step=24000), '8000x6000 \\(48.0 MP\\), more than'),
])
def test_bad_images_raise_one_line_input_errors(change, match):
    msg = raw_image(RGB, 'rgb8')
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(InputError, match=match) as info:
        convert.image_to_rgb(msg)
    assert '\n' not in str(info.value)


def test_size_limit_is_configurable():
    msg = raw_image(RGB, 'rgb8')
    with pytest.raises(InputError, match='limit of 0.0 MP'):
        convert.image_to_rgb(msg, max_pixels=20)
    assert convert.image_to_rgb(msg, max_pixels=35).shape == (5, 7, 3)


@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_compressed_round_trip(fmt):
    smooth = np.dstack([np.tile(np.arange(0, 64, 2, dtype=np.uint8), (24, 1))] * 3)
    msg = convert.rgb_to_compressed(smooth, fmt)
    assert isinstance(msg, CompressedImage) and msg.format == fmt
    decoded = convert.compressed_to_rgb(msg)
    assert decoded.shape == smooth.shape
    assert np.abs(decoded.astype(int) - smooth).max() <= (0 if fmt == 'png' else 8)


@pytest.mark.parametrize('fmt,data,match', [
    ('bmp', b'BM', 'unsupported compressed format'),
    ('jpeg', b'', 'no data'),
    ('png', b'not a png at all', 'cannot be decoded'),
])
def test_bad_compressed_images(fmt, data, match):
    msg = CompressedImage(format=fmt)
    msg.data = data
    with pytest.raises(InputError, match=match):
        convert.compressed_to_rgb(msg)


@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_a_compressed_bomb_is_refused_from_its_header_never_decoded(fmt, monkeypatch):
    from rosutil import jpeg_bomb
    from test_image_header import png_bomb
    msg = CompressedImage(format=fmt)
    msg.data = png_bomb(16000, 16000) if fmt == 'png' else jpeg_bomb(16000, 16000)
    decoded = []
    monkeypatch.setattr(cv2, 'imdecode', lambda *args: decoded.append(args))
    error = convert.image_error(msg)  # at arrival, in the subscription callback
    assert error.startswith('compressed image is 16000x16000 = 256.0 MP; the limit is 40.0 MP')
    with pytest.raises(InputError, match='16000x16000 = 256.0 MP.*max_image_megapixels'):
        convert.compressed_to_rgb(msg)
    assert not decoded, 'the bomb was decoded'


def test_a_truncated_jpeg_is_refused():
    whole = convert.rgb_to_compressed(RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    msg = CompressedImage(format='jpeg')
    msg.data = bytes(whole.data)[:len(whole.data) // 2]
    with pytest.raises(InputError, match='truncated JPEG'):
        convert.compressed_to_rgb(msg)


def test_masks_both_ways():
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    msg = convert.mask_to_image(mask)
    assert msg.encoding == 'mono8' and set(np.frombuffer(msg.data, np.uint8)) == {0, 255}
    np.testing.assert_array_equal(convert.image_to_mask(msg, 4, 6), mask)
    with pytest.raises(InputError, match='mask prompt is 6x4 but the image is 7x5'):
        convert.image_to_mask(msg, 5, 7)


def test_click_becomes_a_point_prompt():
    click = PointStamped()
    click.point.x, click.point.y = 12.0, 34.0
    prompt = messages.prompt_from_msg(click)
    assert prompt.kind == 'point' and prompt.point == (12.0, 34.0)
    assert messages.prompt_from_msg(None) is None


def test_visual_prompt_messages():
    interfaces, why = messages.load_interfaces()
    if interfaces is None:
        pytest.skip(f'ros_segcap_msgs is not built ({why}); run scripts/build_msgs.py')
    msg = interfaces.PromptMsg()
    assert messages.prompt_from_msg(msg) is None  # NONE = no prompt
    msg.type, msg.box = msg.BOX, [1.0, 2.0, 3.0, 4.0]
    assert messages.prompt_from_msg(msg).box == (1.0, 2.0, 3.0, 4.0)
    msg.type, msg.mask = msg.MASK, convert.mask_to_image(np.eye(3, dtype=bool))
    np.testing.assert_array_equal(messages.prompt_from_msg(msg).mask, np.eye(3, dtype=bool))
    msg.type = 9
    with pytest.raises(InputError, match='type 9'):
        messages.prompt_from_msg(msg)


def test_result_message_and_json():
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    result = SegCapResult(answer='the cup', phrases=['cup'], masks=[mask], scores=[0.9],
                          boxes=[(2, 1, 4, 2)], timing=Timing({'vision': 5.0, 'llm': 7.0}))
    header = Header(frame_id='cam')
    header.stamp.sec = 42
    env = messages.Envelope(header, 'segment the cup', header.stamp, 3)
    text = messages.result_to_json(result, env)
    assert '"status": "ok"' in text and '"boxes": [[2, 1, 4, 2]]' in text
    interfaces, _ = messages.load_interfaces()
    if interfaces is None:
        return
    msg = messages.result_to_msg(result, env, interfaces.ResultMsg)
    assert msg.header.stamp.sec == 42 and msg.command == 'segment the cup'
    assert (msg.boxes[0].x_offset, msg.boxes[0].width, msg.boxes[0].height) == (2, 3, 2)
    assert msg.total_ms == pytest.approx(12.0) and msg.encoder_runs == 3
    np.testing.assert_array_equal(convert.image_to_mask(msg.masks[0], 4, 6), mask)


def test_parameter_changes_apply_live_or_are_refused_with_the_reason():
    config = NodeConfig()
    new, reason = apply_changes(config, [Parameter('mask_threshold', value=0.7),
                                         Parameter('continuous', value=True)])
    assert reason == '' and new.mask_threshold == 0.7 and new.continuous
    same, reason = apply_changes(config, [Parameter('model', value='other')])
    assert same is config and 'model cannot change while the node is configured' in reason
    unconfigured, reason = apply_changes(config, [Parameter('model', value='other')], False)
    assert reason == '' and unconfigured.model == 'other'
    same, reason = apply_changes(config, [Parameter('image_qos', value='fast')], False)
    assert same is config and 'must be one of' in reason


def test_build_msgs_rewrites_the_wheel_include_dirs_once(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / 'scripts' / 'build_msgs.py'
    spec = importlib.util.spec_from_file_location('build_msgs', path)
    build_msgs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_msgs)
    export = tmp_path / 'share' / 'std_msgs' / 'cmake' / 'export_pyExport.cmake'
    export.parent.mkdir(parents=True)
    original = ('INTERFACE_INCLUDE_DIRECTORIES "/opt/python/cp311-cp311/include/python3.11;'
                '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"\n')
    export.write_text(original)
    assert build_msgs.fix_cmake_exports(tmp_path) == 1
    py_include, np_include = build_msgs.python_include_dirs()
    assert export.read_text() == f'INTERFACE_INCLUDE_DIRECTORIES "{py_include};{np_include}"\n'
    assert export.with_name(export.name + '.segcap-orig').read_text() == original
    assert build_msgs.fix_cmake_exports(tmp_path) == 0  # idempotent
    if messages.load_interfaces()[0] is not None:  # already built: up to date, a no-op
        start = time.perf_counter()
        assert build_msgs.main([]) == 0 and time.perf_counter() - start < 5.0
