"""OMG-LLaVA family: the official release's keys map onto the model at full size (meta device,
no memory), the tiny random model answers through the Pipeline with [SEG] masks, config
ranges, and the registry entry."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ros_segcap.core.guide import starts_with
from ros_segcap.core.spec import graph_specs
from ros_segcap.models import family, family_of
from ros_segcap.models.omg_llava import convert
from ros_segcap.models.omg_llava.config import OFFICIAL, OMGLlavaConfig, TINY
from ros_segcap.models.omg_llava.llm_convert import _layer_plan, _sizes, peft_key
from ros_segcap.models.omg_llava.model import build_meta
from ros_segcap.models.omg_llava.synthetic import internlm2_config, official_manifest, \
    tokenizer_for


def _map_release(config: OMGLlavaConfig, man: dict) -> tuple[dict, dict]:
    """(target -> shape, dropped 'source:key' -> why) from the manifest, as convert maps."""
    reader = SimpleNamespace(clip=man['clip'], omg=man['omg_seg'], pth=man['pth'],
                             llm_map=man['llm'])
    plan, dropped = convert.vision_plan(reader)
    s = _sizes(internlm2_config(config), config.vocab_rows)
    dropped.update(convert.check_llm_keys(reader, config, s))
    source = {'clip': man['clip'], 'omg_seg': man['omg_seg'], 'pth': man['pth'],
              'text': man['text']}
    targets = {t: source[src][key] for t, (src, key) in plan.items()}
    rows = config.vocab_rows
    targets.update({'llm.model.embed_tokens.weight': (rows, config.llm_hidden),
                    'llm.lm_head.weight': (rows, config.llm_hidden),
                    'llm.model.norm.weight': (config.llm_hidden,)})
    hd = s['head_dim']
    for i in range(config.llm_layers):
        for key, (target, shape) in _layer_plan(i, s).items():
            assert man['llm'][key] == shape, key
            if isinstance(target, tuple):
                cols = shape[1]
                for name, heads in zip(target, (s['heads'], s['kv_heads'], s['kv_heads'])):
                    assert name not in targets
                    targets['llm.' + name] = (heads * hd, cols)
            else:
                assert target not in targets
                targets['llm.' + target] = shape
    return targets, dropped


@pytest.mark.parametrize('dot_default', [False, True])
def test_official_release_maps_onto_the_full_size_model(dot_default: bool) -> None:
    start_mb = reset_peak_rss_mb()
    config = OFFICIAL.replace(seg_decoder_copy=True)  # finetuned_refseg.pth layout
    man = official_manifest(config, dot_default=dot_default)
    targets, dropped = _map_release(config, man)
    model = build_meta(config, tokenizer_for(config))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(targets) == set(expected), (sorted(set(expected) - set(targets))[:5],
                                           sorted(set(targets) - set(expected))[:5])
    bad = {k: (targets[k], expected[k]) for k in expected if targets[k] != expected[k]}
    assert not bad, list(bad.items())[:5]
    # every LLM tensor of the finetune is a LoRA factor of a base module or a full row table
    lora = [k for k in man['pth'] if '.lora_' in k]
    assert len(lora) == 2 * (5 * config.llm_layers + 1)
    assert all(peft_key(k).rsplit('.lora_', 1)[0] + '.weight' in man['llm'] for k in lora)
    assert {k.split(':')[0] for k in dropped} == {'clip', 'llm'}
    assert sum('inv_freq' in k for k in dropped) == config.llm_layers
    assert 'llm:output.weight' in dropped and 'llm:model.tok_embeddings.weight' in dropped
    state = {k: torch.empty(s, device='meta') for k, s in targets.items()}
    assert not model.load_state_dict(state, strict=True, assign=True).missing_keys
    n = sum(t.numel() for t in state.values())
    by = {p: sum(t.numel() for k, t in state.items() if k.startswith(p))
          for p in ('visual_encoder.backbone.', 'visual_encoder.panoptic_head.', 'projector',
                    'llm.')}
    assert 7.7e9 < by['llm.'] < 7.8e9 and 1.9e8 < by['visual_encoder.backbone.'] < 2.0e8
    assert 9.0e7 < by['projector'] < 9.4e7
    peak_mb = peak_rss_mb()
    print(f'official release: {len(targets)} tensors, {n / 1e9:.2f} B parameters mapped; '
          f'{len(dropped)} source tensors dropped; peak RSS {peak_mb:.0f} MB '
          f'({peak_mb - start_mb:+.0f} MB during the test)')
    assert peak_mb - start_mb < 1024  # the 7.7 B model never materialises


def _status_mb(field: str) -> float:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss_mb() -> float:
    """Reset this process's peak RSS (Linux clear_refs) and return the current RSS in MB."""
    try:
        Path('/proc/self/clear_refs').write_text('5')
    except OSError:
        pytest.skip('cannot reset the peak RSS here (no /proc/self/clear_refs)')
    return _status_mb('VmRSS')


def peak_rss_mb() -> float:
    """The peak RSS since reset_peak_rss_mb, in MB."""
    return _status_mb('VmHWM')


def test_official_config_sizes_and_spec() -> None:
    c = OFFICIAL
    sizes = (c.mask_size, c.token_grid, c.pixel_token_dim, c.vocab_rows)
    assert sizes == (256, 16, 6144, 92548)
    specs = graph_specs(c)
    shapes = {t.name: t.shape for t in specs['vision'].outputs}
    assert shapes['pixel_tokens'] == (1, 256, 6144)
    assert shapes['memory_2'] == (1, 128 * 128, 256)
    assert shapes['class_logits'] == (1, 300, 134)
    assert OMGLlavaConfig.from_dict(c.to_dict()) == c
    for bad in ({'dim': 250}, {'image_size': 1000}, {'llm_kv_heads': 5}, {'num_queries': 0},
                {'fine_pool': True}):
        with pytest.raises(ValueError):
            c.replace(**bad)
    with pytest.raises(ValueError, match='unknown config keys'):
        OMGLlavaConfig.from_dict({**c.to_dict(), 'colour': 1})


@pytest.fixture(scope='module')
def tiny():
    return family('omg_llava').build(TINY.name)


def test_registry_and_meta_only_name(tiny) -> None:
    fam = family('omg_llava')
    assert set(fam.names()) == {'omg-llava-7b', 'omg-llava-tiny-random'}
    assert family_of('omg-llava-tiny-random') is fam
    assert 'noise' in fam.weights_warning('omg-llava-tiny-random')
    with pytest.raises(ValueError, match='shape check'):
        fam.build('omg-llava-7b')
    assert tiny.trained is False and '{question}' in fam.chat_template(TINY)


def test_tiny_answers_with_seg_masks_through_the_pipeline(tiny) -> None:
    from ros_segcap.runtime import open_pipeline, PipelineConfig
    with torch.no_grad():  # make [SEG] the likeliest token, then <|im_end|> after it
        tiny.llm.lm_head.weight[tiny.seg_id] += 50 * tiny.llm.model.norm.weight.sign()
    pipe = open_pipeline(PipelineConfig(model=TINY.name, max_new_tokens=3,
                                        refine_edges=False), model=tiny)
    image = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    result = pipe.run(image, 'segment the cup', frame_key=7)
    assert '[SEG]' in result.raw_text
    assert result.masks and result.masks[0].shape == (90, 120)
    again = pipe.run(image, 'segment the cup', frame_key=7)  # prefix cache reused
    assert again.raw_text == result.raw_text and pipe.encode_count == 1


def test_padded_head_rows_are_never_sampled(tiny) -> None:
    embeds = tiny.embed_ids([1, 5, 6], None)[None]
    rows = TINY.vocab_rows
    head = tiny.llm.lm_head
    big = torch.nn.Linear(TINY.llm_hidden, rows + 8, bias=False)
    with torch.no_grad():
        big.weight[:rows] = head.weight
        big.weight[rows:] = 100 * tiny.llm.model.norm.weight.sign()  # padded rows win
    tiny.llm.lm_head = big
    try:
        out = tiny.generate(embeds, max_new_tokens=3, temperature=0.0)
    finally:
        tiny.llm.lm_head = head
    assert all(t < rows for t in out.token_ids)


def test_generate_follows_a_guide(tiny):
    embeds = tiny.embed_ids([1, 5, 6], None)[None]
    free = tiny.generate(embeds, max_new_tokens=2, temperature=0.0).token_ids
    other = 7 if free[0] != 7 else 8
    forced = tiny.generate(embeds, max_new_tokens=2, temperature=0.0,
                           guide=starts_with([other]))
    assert forced.token_ids[0] == other
    # no colour head to check presence with, no table class for places
    assert tiny.answer_guide(None, 'segment the red cup', None, None, None) is None
