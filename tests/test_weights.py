"""Weights I/O: bit-exact round trips (full and partial), fp16, pickle refusal, bad keys."""
from __future__ import annotations

import json
import os
from pathlib import Path
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from ros_segcap.models.segcap import weights
from ros_segcap.models.segcap.assets import AssetError
from ros_segcap.models.segcap.weights import (
    CONFIG_FILE, NEW_ROWS_KEY, WEIGHTS_FILE, is_full, load_model, model_state, save_model,
)

pytestmark = pytest.mark.usefixtures('cached_tokenizer')


def _fresh_tiny(seed: int = 1):
    torch.manual_seed(seed)
    return load_model('tiny-random')


def assert_same_state(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), f'{k} differs'


def test_full_round_trip(tmp_path: Path) -> None:
    """tiny-random is stored whole and comes back bit-exact, with its trained flag."""
    model = _fresh_tiny()
    assert is_full(model.config)
    model.trained = True
    save_model(model, tmp_path / 'm', meta={'note': 'test'})
    info = json.loads((tmp_path / 'm' / CONFIG_FILE).read_text())
    assert info['full'] is True and info['config']['name'] == 'tiny-random'
    assert info['note'] == 'test'
    loaded = load_model(str(tmp_path / 'm'))
    assert loaded.trained is True and loaded.config == model.config
    assert_same_state(model, loaded)
    other = _fresh_tiny(seed=2)  # the comparison can fail: another seed differs
    assert not torch.equal(other.decoder.query_feat.weight, model.decoder.query_feat.weight)


def test_lora_round_trip(tmp_path: Path) -> None:
    pytest.importorskip('peft')
    from ros_segcap.models.segcap.lora import apply_lora

    model = _fresh_tiny()
    apply_lora(model, r=4, alpha=8)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_B' in n:
                p.normal_()  # peft starts B at zero; make the adapters matter
    save_model(model, tmp_path / 'lora')
    loaded = load_model(str(tmp_path / 'lora'))
    assert loaded.lora_info == model.lora_info
    assert_same_state(model, loaded)


@pytest.fixture(scope='module')
def segcap_tiny():
    """segcap-tiny with its asset backbone and LLM (skips when the asset wheels are missing)."""
    try:
        return load_model('segcap-tiny')
    except AssetError as exc:
        pytest.skip(str(exc))


def test_partial_round_trip(segcap_tiny, tmp_path: Path) -> None:
    """segcap-tiny stores only what training changes (LoRA, not the LLM); the rest comes
    from the assets."""
    model = segcap_tiny
    assert not is_full(model.config)
    first_new = model.llm.seg_id
    with torch.no_grad():
        emb = model.llm.lm.get_input_embeddings().weight
        emb[first_new:] = torch.randn(emb.shape[0] - first_new, emb.shape[1])
    save_model(model, tmp_path / 'p')
    stored = load_file(str(tmp_path / 'p' / WEIGHTS_FILE))
    frozen = [k for k in stored if k.startswith(('backbone.', 'llm.')) and k != NEW_ROWS_KEY]
    assert not [k for k in frozen if '.lora_' not in k]  # only LoRA adapters of the LLM
    assert stored[NEW_ROWS_KEY].shape == (emb.shape[0] - first_new, emb.shape[1])
    n_stored = sum(v.numel() for v in stored.values())
    assert n_stored < 0.2 * sum(v.numel() for v in model.state_dict().values())
    loaded = load_model(str(tmp_path / 'p'))
    assert_same_state(model, loaded)


def test_fp16_save(tmp_path: Path) -> None:
    model = _fresh_tiny()
    save_model(model, tmp_path / 'h', dtype=torch.float16)
    stored = load_file(str(tmp_path / 'h' / WEIGHTS_FILE))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    loaded = load_model(str(tmp_path / 'h'))
    want = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert v.dtype == want[k].dtype
        if v.is_floating_point():
            assert torch.equal(v, want[k].half().to(v.dtype)), k
    drift = (loaded.decoder.query_feat.weight - model.decoder.query_feat.weight).detach()
    drift = drift.abs().max()
    assert 0 < float(drift) < 1e-2  # really rounded, and only that


def _pickle_dir(tmp_path: Path, model, payload) -> Path:
    d = tmp_path / 'pk'
    d.mkdir()
    info = {'format': 1, 'config': model.config.to_dict(), 'trained': False, 'full': True}
    (d / CONFIG_FILE).write_text(json.dumps(info))
    torch.save(payload, d / 'model.pt')
    return d


def test_pickle_refused_then_weights_only(tmp_path: Path, monkeypatch) -> None:
    model = _fresh_tiny()
    d = _pickle_dir(tmp_path, model, model_state(model))
    with pytest.raises(ValueError, match='allow_pickle'):
        load_model(str(d))
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(weights.torch, 'load', spy)
    loaded = load_model(str(d), allow_pickle=True)
    assert calls and all(c.get('weights_only') is True for c in calls)
    assert_same_state(model, loaded)


class NotATensor:
    """An arbitrary object: a weights_only unpickler must refuse to build it."""


def test_pickle_with_objects_is_refused_even_when_allowed(tmp_path: Path) -> None:
    model = _fresh_tiny()
    d = _pickle_dir(tmp_path, model, {'x': NotATensor()})
    with pytest.raises(ValueError, match='refused by the weights-only unpickler') as caught:
        load_model(str(d), allow_pickle=True)
    assert 'NotATensor' in str(caught.value) and '\n' not in str(caught.value)


def test_unknown_and_misshapen_keys(tmp_path: Path) -> None:
    model = _fresh_tiny()
    save_model(model, tmp_path / 'u')
    path = tmp_path / 'u' / WEIGHTS_FILE
    good = load_file(str(path))
    save_file({**good, 'decoder.not_a_layer.weight': torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match=r'unknown keys.*decoder\.not_a_layer\.weight'):
        load_model(str(tmp_path / 'u'))
    bad = dict(good)
    bad['decoder.class_head.bias'] = torch.zeros(3)
    save_file(bad, str(path))
    with pytest.raises(ValueError, match=r'decoder\.class_head\.bias.*shape'):
        load_model(str(tmp_path / 'u'))


def test_missing_weights_and_directory(tmp_path: Path) -> None:
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / CONFIG_FILE).write_text(json.dumps(
        {'config': _fresh_tiny().config.to_dict(), 'full': True}))
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_model(str(tmp_path / 'empty'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_model(str(tmp_path / 'nope'))


def test_reconfigure_carries_weights_into_a_grown_config(tmp_path: Path) -> None:
    """training.reconfigure: fine_pool added to a model trained without it."""
    from ros_segcap.models.segcap.model import SegCapModel
    from training.reconfigure import main as reconfigure_main

    torch.manual_seed(3)
    old = SegCapModel(load_model('tiny-random').config.replace(fine_pool=False), pretrained=False)
    old.trained = True
    save_model(old, tmp_path / 'old')
    reconfigure_main(['--init', str(tmp_path / 'old'), '--set', 'fine_pool=true',
                      '--out', str(tmp_path / 'new')])
    new = load_model(str(tmp_path / 'new'))
    assert new.config.fine_pool and new.trained
    grown = new.state_dict()
    for k, v in old.state_dict().items():
        assert torch.equal(grown[k], v), k
    extra = sorted(set(grown) - set(old.state_dict()))
    assert extra == ['projectors.pool_proj.bias', 'projectors.pool_proj.weight']
    assert not grown['projectors.pool_proj.weight'].any()
    with pytest.raises(SystemExit, match='unknown config keys'):
        reconfigure_main(['--init', str(tmp_path / 'old'), '--set', 'no_such_key=1',
                          '--out', str(tmp_path / 'bad')])


def test_reconfigure_drops_a_part_whose_shape_changes(tmp_path: Path) -> None:
    """--drop: colour_from_pool gives the colour head another input; the rest carries over."""
    from ros_segcap.models.segcap.model import SegCapModel
    from training.reconfigure import main as reconfigure_main

    torch.manual_seed(4)
    config = load_model('tiny-random').config.replace(word_anchor=True)
    old = SegCapModel(config, pretrained=False)
    with torch.no_grad():
        old.projectors.colour_head.weight.normal_()
    save_model(old, tmp_path / 'old')
    args = ['--init', str(tmp_path / 'old'), '--set', 'colour_from_pool=true']
    with pytest.raises(SystemExit, match='colour_head.weight: stored shape'):
        reconfigure_main(args + ['--out', str(tmp_path / 'bad')])
    reconfigure_main(args + ['--drop', 'projectors.colour_head', '--out', str(tmp_path / 'new')])
    new = load_model(str(tmp_path / 'new'))
    assert new.config.colour_from_pool
    head = new.projectors.colour_head.weight
    assert head.shape == (len(config.colour_names), config.backbone_channels[0])
    assert not head.any()  # its new (zero) init
    kept = new.state_dict()
    for k, v in old.state_dict().items():
        if not k.startswith('projectors.colour_head'):
            assert torch.equal(kept[k], v), k


def test_the_registered_segcap_tiny_is_what_ships():
    """The registry builds the architecture of the shipped weights, option for option."""
    import json
    from pathlib import Path

    import ros_segcap
    from ros_segcap.models.segcap.config import SegCapConfig, get_config
    shipped = Path(ros_segcap.__file__).parent / 'weights' / 'segcap-tiny' / 'config.json'
    stored = SegCapConfig.from_dict(json.loads(shipped.read_text())['config'])
    assert stored == get_config('segcap-tiny')


def test_partial_format_needs_every_stored_tensor(tmp_path: Path) -> None:
    """A 'full: false' directory holds the trained parts and the new token rows; each is
    required, the backbone and LLM (from their assets) are not."""
    model = _fresh_tiny()
    save_model(model, tmp_path / 'p', full=False)
    path = tmp_path / 'p' / WEIGHTS_FILE
    good = load_file(str(path))
    assert NEW_ROWS_KEY in good and not any(k.startswith('backbone.') for k in good)
    assert set(good) == set(model_state(model, full=False))
    load_model(str(tmp_path / 'p'))  # complete: loads
    for key in (NEW_ROWS_KEY, 'decoder.class_head.bias'):
        save_file({k: v for k, v in good.items() if k != key}, str(path))
        with pytest.raises(ValueError, match=f'1 missing tensors.*{key}'):
            load_model(str(tmp_path / 'p'))
    save_file({**good, NEW_ROWS_KEY: good[NEW_ROWS_KEY][:1]}, str(path))  # would broadcast
    with pytest.raises(ValueError, match=f'{NEW_ROWS_KEY}: stored shape'):
        load_model(str(tmp_path / 'p'))


def test_missing_ok_keeps_the_init_of_new_parts() -> None:
    model = _fresh_tiny()
    state = model_state(model)
    before = model.decoder.class_head.bias.detach().clone()
    del state['decoder.class_head.bias']
    with pytest.raises(ValueError, match='missing tensors'):
        weights.load_state(model, state)
    weights.load_state(model, state, missing_ok=True)
    assert torch.equal(model.decoder.class_head.bias, before)


def test_written_files_get_the_umask_mode(tmp_path: Path) -> None:
    """Not mkstemp's 0600: a node running as another user must read the model."""
    old = os.umask(0o022)
    try:
        save_model(_fresh_tiny(), tmp_path / 'm')
    finally:
        os.umask(old)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        assert stat.S_IMODE((tmp_path / 'm' / name).stat().st_mode) == 0o644, name
    assert sorted(p.name for p in (tmp_path / 'm').iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


def test_meta_only_and_test_only_names(monkeypatch) -> None:
    from ros_segcap.models.segcap import config
    from ros_segcap.models.segcap.family import FAMILY

    big = config.get_config('tiny-random').replace(name='tiny-meta')
    monkeypatch.setitem(config._REGISTRY, 'tiny-meta', big)
    monkeypatch.setitem(config._USE, 'tiny-meta', 'meta')
    with pytest.raises(ValueError, match='tiny-meta is a shape check.*meta device'):
        load_model('tiny-meta')
    with pytest.raises(ValueError, match='shape check'):
        FAMILY.build('tiny-meta')
    meta = FAMILY.build('tiny-meta', device='meta')
    assert {p.device.type for p in meta.parameters()} == {'meta'}
    assert 'test-only' in weights.weights_warning('tiny-random')
    assert weights.weights_warning('tiny-meta') is None  # its loader says why
