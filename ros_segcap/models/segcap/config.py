"""Model configurations: frozen dataclasses and a registry of named builds.

`segcap-tiny` is the default runnable model (EfficientNet-Lite0 + SmolLM2-135M-Instruct,
512x512 input). `omg-llava-7b` holds the paper's sizes (ConvNeXt-L CLIP, 1024x1024, 9 decoder
layers, InternLM2-7B) and is only instantiated on the meta device to check shapes.
`tiny-random` is a small randomly initialised model for fast tests.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
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
# Colour words of the tabletop world (ros_segcap.world.palette.COLOUR_NAMES, same order).
TABLETOP_COLOURS = ('red', 'green', 'blue', 'yellow', 'orange', 'purple', 'pink', 'white',
                    'black')


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
    lora_rank: int = 16
    lora_alpha: int = 32

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f'unknown config keys {unknown}; known keys: {sorted(known)}')
        data = dict(data)
        for key in ('backbone_channels', 'class_names', 'colour_names'):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def replace(self, **changes: Any) -> 'SegCapConfig':
        return dataclasses.replace(self, **changes)


TINY_RANDOM_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=True, rms_norm_eps=1e-5)

_REGISTRY: dict[str, SegCapConfig] = {
    'segcap-tiny': SegCapConfig(name='segcap-tiny', fine_pool=True, token_norm=True,
                                word_anchor=True, place_anchor=True, seg_pointer=True,
                                proposals=8),
    'tiny-random': SegCapConfig(
        name='tiny-random', image_size=128, backbone_pretrained=False, dim=32,
        num_queries=8, decoder_layers=2, num_heads=4, ffn_dim=64, llm='random', llm_hidden=64,
        llm_config=TINY_RANDOM_LLM, max_object_tokens=8, fine_pool=True),
    'omg-llava-7b': SegCapConfig(
        name='omg-llava-7b', image_size=1024, backbone='convnext-large',
        backbone_pretrained=False, backbone_channels=(384, 768, 1536), dim=256,
        num_queries=300, class_names=tuple(f'class{i}' for i in range(133)), decoder_layers=9,
        ffn_dim=2048, mask_stride=4, llm='random', llm_hidden=4096,
        llm_config=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, vocab_size=92544,
                        max_position_embeddings=32768),
        max_object_tokens=300, fine_pool=True),
}


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str) -> SegCapConfig:
    """Return the registered config `name`; raises KeyError listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f'unknown model {name!r}; known models: {", ".join(model_names())}') \
            from None


def register(config: SegCapConfig) -> None:
    _REGISTRY[config.name] = config
