"""OMGLlavaConfig: the sizes of an OMG-LLaVA model; defaults are the official 7B release.

Variants differ in sizes only (`tiny` for tests). The attributes the runtime and core.spec
read (name, image_size, mask_size, dim, num_queries, num_classes, token_grid,
pixel_token_dim, decoder_layers, backbone_channels, fine_pool) are fields or properties.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from .convnext import ConvNeXtConfig
from .decoder import HeadConfig
from .tokenizer import ADDED_AT, ADDED_TOKENS

# Official preprocessing (omg_llava_7b_finetune_8gpus.py image_processor, chat_omg_llava.py):
# xtuner expand2square centres the image in a square of its longer side, filled with
# int(mean * 255); CLIPImageProcessor resizes it to 1024 with PIL bicubic (resample=3; the
# centre crop of 1024 is then a no-op), /255, mean and std as written in the config.
PAD_RGB = (122, 116, 104)
PLACEMENT = 'centre'
INTERPOLATION = 'bicubic'
CLIP_MEAN = (0.4814, 0.4578, 0.4082)
CLIP_STD = (0.2686, 0.2613, 0.2757)

# integer field -> inclusive range (the official sizes are inside; typos are not)
INT_RANGES = {
    'image_size': (64, 2048), 'dim': (8, 1024), 'num_queries': (1, 1024),
    'decoder_layers': (1, 32), 'num_heads': (1, 64), 'ffn_dim': (8, 16384),
    'encoder_layers': (1, 16), 'encoder_ffn_dim': (8, 8192), 'encoder_points': (1, 16),
    'num_groups': (1, 256), 'clip_dim': (8, 4096), 'num_classes': (1, 4096),
    'text_templates': (1, 256), 'shuffle': (1, 4), 'llm_hidden': (8, 16384),
    'llm_layers': (1, 128), 'llm_heads': (1, 128), 'llm_kv_heads': (1, 128),
    'llm_ffn': (8, 65536), 'added_at': (8, 1 << 20), 'max_positions': (64, 1 << 20),
    'lora_rank': (1, 4096), 'lora_alpha': (1, 8192),
}
TUPLE_FIELDS = ('trunk_depths', 'trunk_dims')


@dataclass(frozen=True)
class OMGLlavaConfig:
    """Sizes of the vision trunk, the OMG-Seg head, the projectors and the LLM."""

    name: str = 'omg-llava-7b'
    image_size: int = 1024  # S: the padded square side
    trunk_depths: tuple[int, ...] = (3, 3, 27, 3)  # ConvNeXt-L stages
    trunk_dims: tuple[int, ...] = (192, 384, 768, 1536)
    dim: int = 256  # D: head width
    num_queries: int = 300
    decoder_layers: int = 9
    num_heads: int = 8
    ffn_dim: int = 2048
    encoder_layers: int = 6  # deformable pixel-decoder encoder
    encoder_ffn_dim: int = 1024
    encoder_points: int = 4
    num_groups: int = 32
    clip_dim: int = 768  # CLIP text embedding width
    num_classes: int = 133  # COCO panoptic
    text_templates: int = 17  # P: prompt templates per class in the text embeddings file
    seg_decoder_copy: bool = False  # the checkpoint has transformer_decoder_llm / mask_embed_llm
    shuffle: int = 2  # pixel shuffle of the stride-32 map
    llm_hidden: int = 4096
    llm_layers: int = 32
    llm_heads: int = 32
    llm_kv_heads: int = 8
    llm_ffn: int = 14336
    added_at: int = ADDED_AT  # InternLM2 vocabulary; [SEG] gets this id
    rope_theta: float = 1e6
    rope_scaling: Optional[float] = 2.0  # dynamic NTK factor (None: none)
    max_positions: int = 32768
    rms_eps: float = 1e-5
    lora_rank: int = 512  # of the finetune checkpoint (merged at conversion)
    lora_alpha: int = 256
    fine_pool: bool = False  # no stride-8 fine features in the OMG-LLaVA design

    def __post_init__(self) -> None:
        for key, (lo, hi) in INT_RANGES.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f'{self.name}: {key}={value!r} must be an int in {lo}..{hi}')
        if len(self.trunk_depths) != 4 or len(self.trunk_dims) != 4:
            raise ValueError(f'{self.name}: trunk_depths and trunk_dims need 4 stages')
        if self.image_size % (32 * self.shuffle):
            raise ValueError(f'{self.name}: image_size {self.image_size} must be a multiple '
                             f'of {32 * self.shuffle} (stride 32 x pixel shuffle)')
        if self.dim % self.num_groups or self.dim % self.num_heads or self.dim % 2:
            raise ValueError(f'{self.name}: dim {self.dim} must divide by num_groups '
                             f'{self.num_groups}, num_heads {self.num_heads} and 2')
        if self.llm_hidden % self.llm_heads or self.llm_heads % self.llm_kv_heads:
            raise ValueError(f'{self.name}: llm_hidden {self.llm_hidden}, llm_heads '
                             f'{self.llm_heads}, llm_kv_heads {self.llm_kv_heads} do not split')
        if self.fine_pool:
            raise ValueError(f'{self.name}: fine_pool is not part of the OMG-LLaVA design')

    # ----- what the runtime and core.spec read --------------------------------------------

    @property
    def mask_size(self) -> int:
        """Side of the mask grid: the stride-4 mask features."""
        return self.image_size // 4

    @property
    def token_grid(self) -> int:
        """Side of the pixel-token grid: S / 32 / shuffle (16 at 1024)."""
        return self.image_size // 32 // self.shuffle

    @property
    def pixel_token_dim(self) -> int:
        """Channels of one pixel token: shuffle^2 x the stride-32 width (6144)."""
        return self.trunk_dims[-1] * self.shuffle * self.shuffle

    @property
    def backbone_channels(self) -> tuple[int, ...]:
        return self.trunk_dims

    @property
    def prior_dim(self) -> int:
        """[query feature ; query position] (512)."""
        return 2 * self.dim

    @property
    def vocab_rows(self) -> int:
        """Embedding rows of the trained LLM: the vocabulary + [SEG] <p> </p> <region>."""
        return self.added_at + len(ADDED_TOKENS) - 1

    @property
    def pad_rgb(self) -> tuple[int, int, int]:
        return PAD_RGB

    @property
    def letterbox_placement(self) -> str:
        return PLACEMENT

    @property
    def resize_interpolation(self) -> str:
        return INTERPOLATION

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        return CLIP_MEAN

    @property
    def pixel_std(self) -> tuple[float, float, float]:
        return CLIP_STD

    def trunk(self) -> ConvNeXtConfig:
        return ConvNeXtConfig(depths=self.trunk_depths, dims=self.trunk_dims)

    def head(self) -> HeadConfig:
        return HeadConfig(in_channels=self.trunk_dims, dim=self.dim,
                          num_queries=self.num_queries, num_layers=self.decoder_layers,
                          num_heads=self.num_heads, ffn_channels=self.ffn_dim,
                          encoder_layers=self.encoder_layers,
                          encoder_ffn_channels=self.encoder_ffn_dim,
                          encoder_points=self.encoder_points, num_groups=self.num_groups,
                          clip_dim=self.clip_dim, llm_decoder=self.seg_decoder_copy)

    def llama_kwargs(self) -> dict[str, Any]:
        """transformers LlamaConfig keyword arguments of the converted LLM."""
        rope: dict[str, Any] = {'rope_type': 'default', 'rope_theta': float(self.rope_theta)}
        if self.rope_scaling:
            rope.update(rope_type='dynamic', factor=float(self.rope_scaling))
        return dict(vocab_size=self.vocab_rows, hidden_size=self.llm_hidden,
                    intermediate_size=self.llm_ffn, num_hidden_layers=self.llm_layers,
                    num_attention_heads=self.llm_heads, num_key_value_heads=self.llm_kv_heads,
                    head_dim=self.llm_hidden // self.llm_heads, hidden_act='silu',
                    max_position_embeddings=self.max_positions, rms_norm_eps=self.rms_eps,
                    rope_parameters=rope, tie_word_embeddings=False, attention_bias=False,
                    mlp_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=2)

    # ----- (de)serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Fields, plus the derived keys the engine manifest hashes (GRAPH_CONFIG_KEYS)."""
        out = dataclasses.asdict(self)
        out.update(backbone='convnext_large_d_320' if self.trunk_dims[-1] == 1536
                   else f'convnext-{"-".join(map(str, self.trunk_dims))}',
                   backbone_channels=list(self.trunk_dims), mask_stride=4,
                   class_names=self.num_classes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'OMGLlavaConfig':
        """The config of a config.json's "config" object; ValueError naming a bad key."""
        if not isinstance(data, dict):
            raise ValueError(f'a model config must be a JSON object, not {type(data).__name__}')
        known = {f.name for f in dataclasses.fields(cls)}
        derived = {'backbone', 'backbone_channels', 'mask_stride', 'class_names'}
        unknown = sorted(set(data) - known - derived)
        if unknown:
            raise ValueError(f'unknown config keys {unknown[:5]}; known keys: {sorted(known)}')
        values = {k: (tuple(v) if k in TUPLE_FIELDS else v) for k, v in data.items()
                  if k in known}
        return cls(**values)

    def replace(self, **changes: Any) -> 'OMGLlavaConfig':
        return dataclasses.replace(self, **changes)


OFFICIAL = OMGLlavaConfig()
TINY = OMGLlavaConfig(
    name='omg-llava-tiny-random', image_size=128, trunk_depths=(1, 1, 2, 1),
    trunk_dims=(16, 24, 32, 48), dim=32, num_queries=12, decoder_layers=3, num_heads=4,
    ffn_dim=64, encoder_layers=1, encoder_ffn_dim=64, encoder_points=2, num_groups=8,
    clip_dim=24, num_classes=5, text_templates=2, llm_hidden=64, llm_layers=2, llm_heads=4,
    llm_kv_heads=2, llm_ffn=128, added_at=400, max_positions=512, rope_scaling=None,
    lora_rank=4, lora_alpha=8)
