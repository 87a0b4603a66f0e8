"""Projectors between the vision space and the LLM space.

pixel:        (4C + 2D) -> H -> H       pixel tokens with their perception prior
object:       2D -> 4C (query_proj), then 4C -> H -> H, shared by learnable and prompt queries;
              with fine_pool, + C8 -> 4C (pool_proj, zero at init) of the mask-pooled stride-8
              backbone features
separator:    one learned H-dim embedding between pixel and object tokens
text2vision:  H -> 2D -> 2D, split into (query feature, query position) for the decoder
place head:   with place_anchor, (centre x, centre y, sqrt area) -> weights (tanh) of the
              place words' embeddings added to object / region tokens (zero at init)
seg pointer:  with seg_pointer, H -> H for [SEG] states and H + 3 -> H for object tokens with
              their mask's (centre x, centre y, sqrt area); score = scaled dot product
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .config import SegCapConfig

PLACE_WORDS = ('left', 'right', 'front', 'back')  # place_anchor's words


def mlp2(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


def _zero_linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class Projectors(nn.Module):
    def __init__(self, config: SegCapConfig) -> None:
        super().__init__()
        c4, d2, h = config.pixel_token_dim, 2 * config.dim, config.llm_hidden
        self.dim = config.dim
        self.pixel = mlp2(c4 + d2, h, h)
        self.query_proj = nn.Linear(d2, c4)
        self.object = mlp2(c4, h, h)
        self.pool_proj = None
        if config.fine_pool:
            self.pool_proj = _zero_linear(config.backbone_channels[0], c4)
        self.separator = nn.Parameter(torch.zeros(h))
        nn.init.normal_(self.separator, std=0.02)
        self.text2vision = mlp2(h, d2, d2)
        self.token_gain = nn.Parameter(torch.ones(h)) if config.token_norm else None
        self.colour_from_pool = config.colour_from_pool
        self.colour_head = None  # word_anchor: token (or pooled fine features) -> colour logits
        if config.word_anchor:
            c_in = config.backbone_channels[0] if config.colour_from_pool else h
            self.colour_head = _zero_linear(c_in, len(config.colour_names))
        self.place_head = None  # place_anchor: (centre x, centre y, sqrt area) -> word weights
        if config.place_anchor:
            self.place_head = _zero_linear(3, len(PLACE_WORDS))
        self.seg_query = self.seg_key = self.seg_place = None
        if config.seg_pointer:
            self.seg_query = nn.Linear(h, h)
            self.seg_key = nn.Linear(h, h)
            self.seg_place = nn.Linear(3, h)

    def to_llm_scale(self, tokens: torch.Tensor) -> torch.Tensor:
        """With token_norm: RMS-normalise tokens (..., H) and apply the learned gain."""
        if self.token_gain is None:
            return tokens
        return tokens * torch.rsqrt(tokens.pow(2).mean(-1, keepdim=True) + 1e-6) * \
            self.token_gain

    def colour_logits(self, tokens: torch.Tensor, pooled: Optional[torch.Tensor] = None
                      ) -> torch.Tensor:
        """Colour-word logits (N, n_colours) of object tokens (N, H), or with colour_from_pool
        of their mask-pooled fine features (N, C8)."""
        if not self.colour_from_pool:
            return self.colour_head(tokens)
        if pooled is None:
            raise ValueError('this model reads colour off pooled fine features: pass pooled')
        return self.colour_head(pooled.to(self.colour_head.weight.dtype))

    def pixel_tokens(self, tokens: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, 4C), prior (B, T, 2D) -> (B, T, H)."""
        return self.to_llm_scale(self.pixel(torch.cat([tokens, prior], -1)))

    def object_tokens(self, query_feat: torch.Tensor, query_pos: torch.Tensor,
                      pooled: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(..., D), (..., D) [, mask-pooled fine features (..., C8)] -> (..., H)."""
        x = self.query_proj(torch.cat([query_feat, query_pos], -1))
        if self.pool_proj is not None:
            if pooled is None:
                raise ValueError('this model pools fine features into its object tokens: '
                                 'pass pooled (the frame has no fine features?)')
            x = x + self.pool_proj(pooled)
        return self.to_llm_scale(self.object(x))

    def to_queries(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LLM hidden states (..., H) -> decoder query (feature (..., D), position (..., D))."""
        out = self.text2vision(hidden)
        return out[..., :self.dim], out[..., self.dim:]

    def place_weights(self, place: torch.Tensor) -> torch.Tensor:
        """place_anchor: places (N, 3) -> place word weights (N, 4)."""
        return torch.tanh(self.place_head(place))

    def pointer_logits(self, seg_hidden: torch.Tensor, tokens: torch.Tensor,
                       place: torch.Tensor) -> torch.Tensor:
        """[SEG] states (G, H), object tokens (N, H), places (N, 3) -> scores (G, N)."""
        q = self.seg_query(seg_hidden)
        placed = self.seg_key(tokens) + self.seg_place(place)
        return q @ placed.T * q.shape[-1] ** -0.5
