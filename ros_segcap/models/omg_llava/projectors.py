"""OMG-LLaVA's two projectors, with the official parameter names.

Official source: omg_llava/model/modules/projector/modeling_projector.py (ProjectorModel_OMG_LLaVA
wrapping Naive_Proj under `model`) and xtuner's ProjectorModel for text -> vision. Keys:

- projector.model.query_proj (Linear 2D -> 4C: 512 -> 6144)
- projector.model.model.{0,2} (4C -> H, GELU, H -> H): object (query) tokens
- projector.model.model_feat.{0,2} (4C + 2D -> H, GELU, H -> H): pixel tokens with the prior
- projector.model.seperate_embed.weight [1, H] (sic): between pixel and object tokens
- projector_text2vision.model.{0,2} (H -> 2D, GELU, 2D -> 2D): [SEG] state -> query

visual_prompt_proj and add_cross_attn_layer are off in the 7B release, so their layers do not
exist here.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import OMGLlavaConfig


def mlp2(cin: int, hidden: int) -> nn.Sequential:
    """Linear -> GELU -> Linear (keys .0 and .2), xtuner's projector of depth 2."""
    return nn.Sequential(nn.Linear(cin, hidden), nn.GELU(), nn.Linear(hidden, hidden))


class NaiveProj(nn.Module):
    """The vision -> LLM projector (official Naive_Proj)."""

    def __init__(self, config: OMGLlavaConfig) -> None:
        super().__init__()
        c, q, h = config.pixel_token_dim, config.prior_dim, config.llm_hidden
        self.query_proj = nn.Linear(q, c)
        self.model = mlp2(c, h)
        self.model_feat = mlp2(c + q, h)
        self.seperate_embed = nn.Embedding(1, h)

    def pixel_tokens(self, tokens: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, 4C) and prior (B, T, 2D) -> (B, T, H)."""
        return self.model_feat(torch.cat([tokens, prior], -1))

    def object_tokens(self, queries: torch.Tensor) -> torch.Tensor:
        """[query feature ; query position] (N, 2D) -> (N, H)."""
        return self.model(self.query_proj(queries))


class VisionProjector(nn.Module):
    """Holds NaiveProj under `model`, as ProjectorModel_OMG_LLaVA does."""

    def __init__(self, config: OMGLlavaConfig) -> None:
        super().__init__()
        self.model = NaiveProj(config)


class Text2VisionProjector(nn.Module):
    """[SEG] hidden state (N, H) -> [query feature ; query position] (N, 2D)."""

    def __init__(self, config: OMGLlavaConfig) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Linear(config.llm_hidden, config.prior_dim), nn.GELU(),
                                   nn.Linear(config.prior_dim, config.prior_dim))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model(hidden)
