"""Model configurations: frozen dataclasses and a registry of named builds.

`segcap-tiny` is the default runnable model (EfficientNet-Lite0 + SmolLM2-135M-Instruct,
512x512 input). `tiny-random` is a small randomly initialised model for fast tests. A name
registered with use='meta' is a shape check, built only on the meta device. (The paper's
OMG-LLaVA 7B is its own family: ros_segcap.models.omg_llava.)

Every config is checked when it is made (`check_config`): a model directory's config.json
is user input, and an image_size of 100000 would otherwise try to allocate tens of GB.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import re
from typing import Any, Optional

from ros_segcap.core.options import DECODE_PATHS, option  # noqa: F401
from ros_segcap.core.tokens import (IMAGE_TOKEN, MARK_TOKEN, P_CLOSE, P_OPEN,  # noqa: F401
                                    REGION_TOKEN, SEG_TOKEN, SPECIAL_TOKENS)

# 'fast-q4': the lean forward, whose decode steps read the LLM's GGUF blocks (Q4_1 / Q8_0)
# with the C kernels: the same weight values as fp32, ~6x fewer bytes (fastlm.py); it falls
# back to 'fast' where the kernels cannot be built or the weights are not the GGUF's.
# 'fast': lean fp32 forward (same maths as the reference); 'reference': Hugging Face forward
# with a DynamicCache.
DEFAULT_DECODE_PATH = option('decode_path').default

# Panoptic vocabulary of the tabletop world, in the world's class-id order
# (ros_segcap.world.palette.CLASS_NAMES): stuff first, then one thing class per kind.
TABLETOP_CLASSES = ('background', 'table', 'cup', 'mug', 'bowl', 'bottle', 'can', 'ball', 'box',
                    'block', 'cone')
STUFF_NAMES = ('background', 'table')  # classes that are regions, not countable things
# Colour words of the tabletop world (ros_segcap.world.palette.COLOUR_NAMES, same order).
TABLETOP_COLOURS = ('red', 'green', 'blue', 'yellow', 'orange', 'purple', 'pink', 'white',
                    'black')

# Panoptic vocabulary and colour words of the varied world (ros_segcap.world.varied.VOCAB,
# same order): the vocabulary of segcap-tiny (training/recipes/segcap-tiny).
VARIED_CLASSES = ('background', 'table', 'cup', 'mug', 'bowl', 'plate', 'bottle', 'can', 'jar',
                  'box', 'ball', 'block', 'cone', 'banana', 'apple', 'orange', 'pear', 'book',
                  'phone', 'marker', 'sponge', 'teapot', 'vase')
VARIED_COLOURS = ('red', 'orange', 'yellow', 'green', 'blue', 'purple', 'pink', 'white',
                  'black', 'grey', 'brown')


@dataclass(frozen=True)
class SegCapConfig:
    """Every size of a SegCap model. Shapes in comments are for segcap-tiny."""

    name: str
    image_size: int = 512  # S: input side after pad-to-square + resize
    backbone: str = 'efficientnet-lite0'  # or 'convnext-large'
    backbone_pretrained: bool = True
    backbone_channels: tuple[int, int, int] = (40, 112, 1280)  # strides 8, 16, 32
    shuffle: int = 2  # space-to-depth ratio r of the pixel-centric tokens
    dim: int = 128  # D: decoder width
    num_queries: int = 32  # Nq learnable object queries
    class_names: tuple[str, ...] = TABLETOP_CLASSES  # K classes (+1 void in the head)
    decoder_layers: int = 6  # L
    num_heads: int = 8
    ffn_dim: int = 512
    mask_stride: int = 8  # stride of the mask features
    llm: str = 'smollm2-135m-instruct'  # asset name, or 'random' (uses llm_config)
    llm_hidden: int = 576  # H
    llm_config: Optional[dict[str, Any]] = None  # LlamaConfig kwargs for a random LLM
    system_prompt: str = 'You segment and describe images.'
    max_object_tokens: int = 32  # cap on object-centric tokens fed to the LLM
    # object tokens also get the stride-8 backbone features pooled under their mask (colour,
    # texture: the decoder queries carry the kind but hardly the colour). False = paper.
    fine_pool: bool = False
    # visual and region tokens are RMS-normalised with a learned per-dim gain that starts at
    # the text embeddings' RMS (projector outputs are otherwise 20-50x larger than word
    # embeddings). False = paper.
    token_norm: bool = False
    # object / region tokens also get the LLM's own word embeddings of their likely class
    # (decoder class probabilities) and colour (a small head on the token, colour_names):
    # a word-shaped anchor the frozen LLM already reads. False = paper.
    word_anchor: bool = False
    colour_names: tuple[str, ...] = TABLETOP_COLOURS
    # the colour head reads the stride-8 features pooled under the object's mask (needs
    # fine_pool) instead of the object token: colour is near-linear there. False = on the token.
    colour_from_pool: bool = False
    # object / region tokens also get the LLM's word embeddings of 'left', 'right', 'front'
    # and 'back', weighted by a learned map (zero at init) of their mask's centre and size:
    # where a thing is, in words the LLM reads. False = paper.
    place_anchor: bool = False
    # a [SEG] state selects one of the frame's object tokens (bilinear score against the
    # token plus its mask's centre and size) and its mask is that query's mask, instead of
    # becoming a new decoder query. False = paper.
    seg_pointer: bool = False
    # a centre heatmap on the mask features proposes up to N points; each becomes a
    # point-prompt query and, if the part of its mask around the point is a new object,
    # joins the frame's queries (proposals.py). 0 = paper.
    proposals: int = 0
    # plain requests ("segment the <colour> <kind>"): the best object's P(kind) x P(colour)
    # fixes the answer's first token when it is below the first value ("There is no ...") or
    # at least the second (the phrase and its [SEG]); needs word_anchor (presence.py).
    # (0, 0) = the LLM decides alone (paper).
    presence_check: tuple[float, float] = (0.0, 0.0)
    # a [SEG] whose phrase names one kind and at most one colour ("the red cup", "yellow
    # apple") takes the object of the best P(kind) x P(colour) among those the answer has
    # not taken, when that score is at least the first value and at least the second times
    # the runner-up's (presence.py); needs word_anchor and seg_pointer. (0, 0) = the LLM's
    # pointer alone (paper).
    plain_pick: tuple[float, float] = (0.0, 0.0)
    # 'segment <mark>' / 'segment <region>' with one visual prompt: the [SEG] takes the
    # prompt's own mask (the kept object a point falls on), and a second look also reads
    # such snapped points' kinds (model.visual_prompts). False = the [SEG] decides (paper).
    prompt_pick: bool = False
    # side of the crops of the second look (second_look.py): the kind of each kept object is
    # read again from a crop around its mask and joined to the decoder's. 0 = paper.
    second_look: int = 0
    lora_rank: int = 16
    lora_alpha: int = 32

    def __post_init__(self) -> None:
        for key in TUPLE_FIELDS:  # JSON gives lists
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        check_config(self)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def token_grid(self) -> int:
        """Side of the pixel-token grid: S / 32 / r."""
        return self.image_size // 32 // self.shuffle

    @property
    def pixel_token_dim(self) -> int:
        """4C: dim of one pixel-centric token after space-to-depth."""
        return self.backbone_channels[2] * self.shuffle * self.shuffle

    @property
    def mask_size(self) -> int:
        return self.image_size // self.mask_stride

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'SegCapConfig':
        """The config of a dict (a config.json); ValueError naming a bad key and its range."""
        if not isinstance(data, dict):
            raise ValueError(f'a model config must be a JSON object, not {type(data).__name__}')
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise ValueError(f'unknown config keys {unknown[:5]}; known keys: {sorted(known)}')
        if 'name' not in data:
            raise ValueError('the model config has no name')
        return cls(**data)

    def replace(self, **changes: Any) -> 'SegCapConfig':
        return dataclasses.replace(self, **changes)


TUPLE_FIELDS = ('backbone_channels', 'class_names', 'colour_names', 'presence_check',
                'plain_pick')
MAX_IMAGE_SIZE = 2048
BACKBONE_CHANNELS = {'efficientnet-lite0': (40, 112, 1280), 'convnext-large': (384, 768, 1536)}
# integer field -> inclusive range: large enough for the paper's sizes, small enough that a
# typo cannot ask this machine for tens of GB
INT_RANGES = {'image_size': (32, MAX_IMAGE_SIZE), 'shuffle': (1, 4), 'dim': (8, 4096),
              'num_queries': (1, 1024), 'decoder_layers': (1, 32), 'num_heads': (1, 64),
              'ffn_dim': (1, 16384), 'mask_stride': (4, 16), 'llm_hidden': (1, 8192),
              'max_object_tokens': (1, 1024), 'proposals': (0, 256), 'second_look': (0, 1024),
              'lora_rank': (1, 512),
              'lora_alpha': (1, 4096)}
BOOL_FIELDS = ('backbone_pretrained', 'fine_pool', 'token_norm', 'word_anchor', 'place_anchor',
               'seg_pointer', 'colour_from_pool', 'prompt_pick')
# LlamaConfig sizes a random LLM may have (llm_config); the 7B paper model is the upper end
LLM_RANGES = {'hidden_size': (8, 8192), 'intermediate_size': (1, 32768),
              'num_hidden_layers': (1, 80), 'num_attention_heads': (1, 128),
              'num_key_value_heads': (1, 128), 'vocab_size': (1, 262144),
              'max_position_embeddings': (1, 131072)}
NAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,99}')  # names engine files too


def _bad(key: str, value: Any, allowed: str) -> ValueError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + '...'
    return ValueError(f'model config {key}={shown}: {allowed}')


def _int(key: str, value: Any, low: int, high: int, multiple: int = 1) -> None:
    step = f'multiple of {multiple} ' if multiple > 1 else ''
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high \
            or value % multiple:
        raise _bad(key, value, f'must be an integer {step}in {low}..{high}')


def _names(key: str, value: Any, most: int) -> None:
    if not isinstance(value, tuple) or not 1 <= len(value) <= most or not all(
            isinstance(n, str) and 0 < len(n) <= 64 for n in value):
        raise _bad(key, value, f'must be a list of 1..{most} names of 1..64 characters')


def _check_llm(config: 'SegCapConfig') -> None:
    llm = config.llm_config
    if llm is None:
        return
    if not isinstance(llm, dict):
        raise _bad('llm_config', llm, 'must be null or an object of LlamaConfig sizes')
    for key, (low, high) in LLM_RANGES.items():
        if key in llm:
            _int(f'llm_config.{key}', llm[key], low, high)
    heads, kv = llm.get('num_attention_heads', 1), llm.get('num_key_value_heads', 1)
    if 'hidden_size' in llm and llm['hidden_size'] % heads:
        raise _bad('llm_config.hidden_size', llm['hidden_size'],
                   f'must be a multiple of num_attention_heads ({heads})')
    if heads % kv:
        raise _bad('llm_config.num_key_value_heads', kv,
                   f'must divide num_attention_heads ({heads})')
    if llm.get('hidden_size', config.llm_hidden) != config.llm_hidden:
        raise _bad('llm_hidden', config.llm_hidden,
                   f'must equal llm_config.hidden_size ({llm["hidden_size"]})')


def _check_presence(config: 'SegCapConfig') -> None:
    value = config.presence_check
    if not isinstance(value, tuple) or len(value) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
            for v in value) or value[0] > value[1]:
        raise _bad('presence_check', value, 'must be [absent_below, present_above] with '
                   '0 <= absent_below <= present_above <= 1')
    if any(value) and not config.word_anchor:
        raise _bad('presence_check', list(value), 'needs word_anchor (a colour head)')


def _check_plain_pick(config: 'SegCapConfig') -> None:
    pick = config.plain_pick
    if not isinstance(pick, tuple) or len(pick) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in pick) or not (
            0 <= pick[0] <= 1 and (pick == (0, 0) or pick[1] >= 1)):
        raise _bad('plain_pick', pick, 'must be [min_score, min_ratio] with 0 <= min_score <= 1 '
                   'and min_ratio >= 1, or [0, 0]')
    if pick[0] > 0 and not (config.word_anchor and config.seg_pointer):
        raise _bad('plain_pick', list(pick), 'needs word_anchor (a colour head) and seg_pointer')


def check_config(config: 'SegCapConfig') -> None:
    """Types and ranges of every field; ValueError naming the key, its value and the range."""
    if not isinstance(config.name, str) or not NAME_PATTERN.fullmatch(config.name):
        raise _bad('name', config.name, 'must be 1..100 letters, digits, ".", "_" or "-", '
                   'starting with a letter or digit')
    if config.backbone not in BACKBONE_CHANNELS:
        raise _bad('backbone', config.backbone, f'must be one of {sorted(BACKBONE_CHANNELS)}')
    if config.backbone_channels != BACKBONE_CHANNELS[config.backbone]:
        raise _bad('backbone_channels', config.backbone_channels,
                   f'must be {list(BACKBONE_CHANNELS[config.backbone])} for {config.backbone}')
    for key, (low, high) in INT_RANGES.items():
        if key != 'image_size':
            _int(key, getattr(config, key), low, high)
    _int('image_size', config.image_size, 32 * config.shuffle, MAX_IMAGE_SIZE,
         32 * config.shuffle)  # whole token grid after stride 32 and the shuffle
    if config.second_look and config.backbone != 'efficientnet-lite0':
        raise _bad('second_look', config.second_look,
                   'needs the efficientnet-lite0 backbone (it copies its stride-16 blocks)')
    if config.mask_stride not in (4, 8, 16):
        raise _bad('mask_stride', config.mask_stride, 'must be 4, 8 or 16')
    if config.dim % config.num_heads:
        raise _bad('dim', config.dim, f'must be a multiple of num_heads ({config.num_heads})')
    for key in BOOL_FIELDS:
        if not isinstance(getattr(config, key), bool):
            raise _bad(key, getattr(config, key), 'must be true or false')
    if config.colour_from_pool and not (config.fine_pool and config.word_anchor):
        raise _bad('colour_from_pool', True, 'needs fine_pool and word_anchor')
    _check_presence(config)
    _check_plain_pick(config)
    _names('class_names', config.class_names, 1024)
    _names('colour_names', config.colour_names, 64)
    for key in ('llm', 'system_prompt'):
        value = getattr(config, key)
        if not isinstance(value, str) or not 0 < len(value) <= 4096:
            raise _bad(key, value, 'must be a text of 1..4096 characters')
    _check_llm(config)


TINY_RANDOM_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=True, rms_norm_eps=1e-5)

_REGISTRY: dict[str, SegCapConfig] = {
    'segcap-tiny': SegCapConfig(name='segcap-tiny', class_names=VARIED_CLASSES,
                                colour_names=VARIED_COLOURS, fine_pool=True, token_norm=True,
                                word_anchor=True, colour_from_pool=True, place_anchor=True,
                                seg_pointer=True, proposals=8, presence_check=(0.01, 0.03),
                                plain_pick=(0.05, 1.0), prompt_pick=True, second_look=112),
    'tiny-random': SegCapConfig(
        name='tiny-random', image_size=128, backbone_pretrained=False, dim=32,
        num_queries=8, decoder_layers=2, num_heads=4, ffn_dim=64, llm='random', llm_hidden=64,
        llm_config=TINY_RANDOM_LLM, max_object_tokens=8, fine_pool=True),
}
# What a registered name is for: 'run' (the CLI and the node load it), 'test' (random weights,
# loadable for the test suite only), 'meta' (a shape check, built only on the meta device).
USES = ('run', 'test', 'meta')
_USE = {'segcap-tiny': 'run', 'tiny-random': 'test'}


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str) -> SegCapConfig:
    """Return the registered config `name`; raises KeyError listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f'unknown model {name!r}; known models: {", ".join(model_names())}') \
            from None


def model_use(name: str) -> Optional[str]:
    """'run', 'test' or 'meta' for a registered name (see USES), None for other names."""
    return _USE.get(name) if name in _REGISTRY else None


def check_loadable(name: str) -> None:
    """ValueError when the registered `name` may only be built on the meta device."""
    if model_use(name) == 'meta':
        raise ValueError(f"model {name} is a shape check of the paper's sizes, built only on "
                         'the meta device (model.build_meta_model): it has no weights and is '
                         'far too big for a CPU; for the real model convert the official '
                         'OMG-LLaVA release (segcap convert omg-llava ... --out DIR) and pass '
                         '--model DIR, or use segcap-tiny')


def register(config: SegCapConfig, *, use: str = 'run') -> None:
    """Add `config` under its name; use: what the name is for (one of USES)."""
    if use not in USES:
        raise ValueError(f'use={use!r}: must be one of {", ".join(USES)}')
    _REGISTRY[config.name] = config
    _USE[config.name] = use
