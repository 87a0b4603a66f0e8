"""The OMG-Seg head of OMG-LLaVA (`Mask2FormerVideoSemSamHead`): pixel decoder + 9-layer
Mask2Former decoder, open-vocabulary class head, prompt queries and the [SEG] decoder copy.

Key prefix: `panoptic_head.` in omg_seg_convl.pth (its state_dict is loaded into the
detector root) and `visual_encoder.panoptic_head.` inside OMG-LLaVA checkpoints. Our keys:

- pixel_decoder.*                     see pixel_decoder.py
- transformer_decoder.layers.{i}.{cross_attn,self_attn}.attn.{in_proj_weight,in_proj_bias,
  out_proj.weight,out_proj.bias}, .ffn.layers.0.0 / .ffn.layers.1 (256-2048-256, ReLU),
  .norms.{0,1,2}; transformer_decoder.post_norm
- query_embed, query_feat (Embedding [300, 256]), level_embed (Embedding [3, 256])
- mask_embed.{0,2,4}, iou_embed.{0,2,4}, cls_proj.{0,2,4} (Linear-ReLU-Linear-ReLU-Linear;
  cls_proj ends at 768), mask_pooling_proj.{0 LayerNorm, 1 Linear}
- mask_tokens (Embedding [1, 256]), pb_embedding (Embedding [2, 256]), pos_linear (512 -> 256)
- transformer_decoder_llm.*, mask_embed_llm.* only when built with llm_decoder=True
  (finetuned_refseg.pth / finetuned_gcg.pth hold them).

The class embeddings (cls_embed) and logit_scale are non-persistent buffers officially, so
they are not keys: the text classifier is an argument (see `text_classifier`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from .pixel_decoder import FFN, MSDeformAttnPixelDecoder, PixelDecoderOutput
from .positional import box_encoding, inverse_sigmoid

# exp(4.6052) = 100.0, computed in float32 as the official buffer is
LOGIT_SCALE = float(torch.tensor(4.6052, dtype=torch.float32).exp())
POINT_HALF_BOX = 3.0  # a point prompt is the box point +- 3 px


@dataclass(frozen=True)
class HeadConfig:
    """Sizes of the head; defaults are the official release."""

    in_channels: Tuple[int, ...] = (192, 384, 768, 1536)
    dim: int = 256
    num_queries: int = 300
    num_layers: int = 9
    num_heads: int = 8
    ffn_channels: int = 2048
    num_levels: int = 3
    encoder_layers: int = 6
    encoder_ffn_channels: int = 1024
    encoder_points: int = 4
    num_groups: int = 32
    clip_dim: int = 768
    llm_decoder: bool = False  # the second decoder + mask_embed used for [SEG]


@dataclass(frozen=True)
class PanopticOutput:
    """The 300 learned queries after the last layer."""

    query_feat: torch.Tensor  # (B, Q, D) raw last-layer output (not post-normed)
    query_pos: torch.Tensor  # (B, Q, D) query_embed.weight
    mask_logits: torch.Tensor  # (B, Q, H/4, W/4)
    class_logits: torch.Tensor  # (B, Q, K + 1), last = background
    iou_logits: torch.Tensor  # (B, Q, 1)


@dataclass(frozen=True)
class PromptOutput:
    """Decoded prompt or [SEG] queries, one per batch element."""

    query_feat: torch.Tensor  # (N, 1, D) raw last-layer output
    query_pos: torch.Tensor  # (N, 1, D)
    mask_logits: torch.Tensor  # (N, 1, H/4, W/4) from the last layer


def mlp3(dim: int, out: int) -> nn.Sequential:
    """Linear-ReLU-Linear-ReLU-Linear (keys .0, .2, .4)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(),
                         nn.Linear(dim, out))


def text_classifier(class_embeds: torch.Tensor) -> torch.Tensor:
    """[K, P, C] unit CLIP text embeddings -> [C, K + 1, P] with a zero background row."""
    k, p, c = class_embeds.shape
    background = class_embeds.new_zeros(1, p, c)
    return torch.cat([class_embeds, background], 0).permute(2, 0, 1).contiguous()


class Attention(nn.Module):
    """mmcv MultiheadAttention: x + attn(x + query_pos, key + key_pos, value)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, query, key, value, query_pos, key_pos, attn_mask=None):
        out = self.attn(query + query_pos, key + key_pos, value, attn_mask=attn_mask,
                        need_weights=False)[0]
        return query + out


class DecoderLayer(nn.Module):
    """Masked cross-attention -> norm -> self-attention -> norm -> FFN -> norm."""

    def __init__(self, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads)
        self.ffn = FFN(dim, ffn_dim)
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(3)])

    def forward(self, query, memory, memory_pos, query_pos, attn_mask):
        query = self.norms[0](self.cross_attn(query, memory, memory, query_pos, memory_pos,
                                              attn_mask))
        query = self.norms[1](self.self_attn(query, query, query, query_pos, query_pos))
        return self.norms[2](self.ffn(query))


class TransformerDecoder(nn.Module):
    """The layers and the shared post_norm."""

    def __init__(self, num_layers: int, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(dim, heads, ffn_dim)
                                     for _ in range(num_layers)])
        self.post_norm = nn.LayerNorm(dim)


def box_block_mask(boxes: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(N, 4) relative x1 y1 x2 y2 -> (N, h, w) True outside the box, as the official
    box prompt rounds it: floor(clip(b, 0, 1) * size), end + 1."""
    h, w = size
    b = boxes.clamp(0, 1) * boxes.new_tensor([w, h, w, h])
    b = torch.floor(b + boxes.new_tensor([0, 0, 1, 1])).long()
    ys = torch.arange(h, device=boxes.device)[None, :, None]
    xs = torch.arange(w, device=boxes.device)[None, None, :]
    inside = ((ys >= b[:, 1, None, None]) & (ys < b[:, 3, None, None])
              & (xs >= b[:, 0, None, None]) & (xs < b[:, 2, None, None]))
    return ~inside


def region_block_mask(regions: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(N, H, W) bool regions -> (N, h, w) True outside the region resized nearest to size,
    as the official mask prompt blocks attention (`_get_attn_mask_from_gt_mask`)."""
    small = F.interpolate(regions[:, None].float(), size, mode='nearest')[:, 0]
    return small < 0.5


class OMGSegHead(nn.Module):
    """Pixel decoder + decoder + heads. Call `encode` once per image, then decode queries."""

    def __init__(self, config: HeadConfig = HeadConfig()) -> None:
        super().__init__()
        c = config
        self.config = c
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            in_channels=c.in_channels, feat_channels=c.dim, out_channels=c.dim,
            num_layers=c.encoder_layers, ffn_channels=c.encoder_ffn_channels,
            num_heads=c.num_heads, num_levels=c.num_levels, num_points=c.encoder_points,
            num_groups=c.num_groups)
        self.transformer_decoder = TransformerDecoder(c.num_layers, c.dim, c.num_heads,
                                                      c.ffn_channels)
        self.query_embed = nn.Embedding(c.num_queries, c.dim)
        self.query_feat = nn.Embedding(c.num_queries, c.dim)
        self.level_embed = nn.Embedding(c.num_levels, c.dim)
        self.mask_embed = mlp3(c.dim, c.dim)
        self.iou_embed = mlp3(c.dim, 1)
        self.cls_proj = mlp3(c.dim, c.clip_dim)
        self.mask_pooling_proj = nn.Sequential(nn.LayerNorm(c.dim), nn.Linear(c.dim, c.dim))
        self.mask_tokens = nn.Embedding(1, c.dim)
        self.pb_embedding = nn.Embedding(2, c.dim)
        self.pos_linear = nn.Linear(2 * c.dim, c.dim)
        if c.llm_decoder:
            self.transformer_decoder_llm = TransformerDecoder(c.num_layers, c.dim, c.num_heads,
                                                              c.ffn_channels)
            self.mask_embed_llm = mlp3(c.dim, c.dim)

    def encode(self, feats: List[torch.Tensor]) -> PixelDecoderOutput:
        """Backbone maps (strides 4..32) -> mask features, memories, key positions."""
        return self.pixel_decoder(feats)

    # -- the decoding loop shared by every query kind -------------------------------------

    def _mask_head(self, decoder: TransformerDecoder, mask_embed: nn.Module,
                   query: torch.Tensor, mask_features: torch.Tensor, size: Tuple[int, int],
                   boxes: Optional[torch.Tensor], regions: Optional[torch.Tensor] = None):
        """Post-norm, mask logits, and the next layer's attention mask (True = blocked).

        Regions (N, H, W) alone decide where a query attends (the mask logits do not);
        otherwise the logits do, confined to boxes (N, 4) relative x1 y1 x2 y2 if given.
        """
        normed = decoder.post_norm(query)
        masks = torch.einsum('bqc,bchw->bqhw', mask_embed(normed), mask_features)
        if regions is not None:
            blocked = region_block_mask(regions, size)[:, None]
        else:
            attn = F.interpolate(masks, size, mode='bilinear', align_corners=False)
            blocked = attn.sigmoid() < 0.5
            if boxes is not None:
                blocked = blocked | box_block_mask(boxes, size)[:, None]
        blocked = blocked.flatten(2)  # (B, Q, h*w)
        blocked = blocked & ~blocked.all(-1, keepdim=True)  # fully masked rows see everything
        heads = self.config.num_heads
        blocked = blocked[:, None].expand(-1, heads, -1, -1).flatten(0, 1)
        return normed, masks, blocked

    def _decode(self, decoder: TransformerDecoder, mask_embed: nn.Module,
                memory: PixelDecoderOutput, query: torch.Tensor, query_pos: torch.Tensor,
                batch_index: Optional[torch.Tensor] = None,
                boxes: Optional[torch.Tensor] = None, regions: Optional[torch.Tensor] = None):
        """Run the layers; returns (raw query, post-normed query, last mask logits)."""
        mask_features = memory.mask_features
        keys = []
        for lvl, mem in enumerate(memory.memories):
            content = mem.flatten(2).transpose(1, 2) + self.level_embed.weight[lvl]
            keys.append(content if batch_index is None else content[batch_index])
        if batch_index is not None:
            mask_features = mask_features[batch_index]
        sizes = [tuple(m.shape[-2:]) for m in memory.memories]
        levels = len(sizes)
        normed, masks, blocked = self._mask_head(decoder, mask_embed, query, mask_features,
                                                 sizes[0], boxes, regions)
        for i, layer in enumerate(decoder.layers):
            lvl = i % levels
            query = layer(query, keys[lvl], memory.memory_pos[lvl], query_pos, blocked)
            normed, masks, blocked = self._mask_head(decoder, mask_embed, query, mask_features,
                                                     sizes[(i + 1) % levels], boxes, regions)
        return query, normed, masks

    # -- the three query kinds -----------------------------------------------------------

    def forward(self, memory: PixelDecoderOutput, text: torch.Tensor) -> PanopticOutput:
        """Decode the learned queries; text: [C, K + 1, P] from `text_classifier`."""
        bsz = memory.mask_features.shape[0]
        query = self.query_feat.weight[None].expand(bsz, -1, -1)
        query_pos = self.query_embed.weight[None].expand(bsz, -1, -1)
        query, normed, masks = self._decode(self.transformer_decoder, self.mask_embed, memory,
                                            query, query_pos)
        logits = self.classify(normed, masks, memory.mask_features, text)
        return PanopticOutput(query, query_pos, masks, logits, self.iou_embed(normed))

    def classify(self, normed: torch.Tensor, mask_logits: torch.Tensor,
                 mask_features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Open-vocabulary logits (B, Q, K + 1) from mask-pooled features and the queries."""
        binary = (mask_logits > 0).to(mask_features.dtype)
        binary = binary / (binary.sum((-2, -1), keepdim=True) + 1e-8)
        pooled = torch.einsum('bchw,bqhw->bqc', mask_features, binary)
        embed = self.cls_proj(self.mask_pooling_proj(pooled) + normed)
        sims = torch.einsum('bqc,ckp->bqkp', F.normalize(embed, dim=-1), text)
        return sims.amax(-1) * LOGIT_SCALE

    def decode_seg(self, memory: PixelDecoderOutput, hidden: torch.Tensor,
                   batch_index: torch.Tensor) -> PromptOutput:
        """[SEG] queries: hidden (N, 2D) = [query feature ; query position] from the LLM
        projector, batch_index (N,) the image of each. Uses the *_llm copies when built."""
        if self.config.llm_decoder:
            decoder, mask_embed = self.transformer_decoder_llm, self.mask_embed_llm
        else:
            decoder, mask_embed = self.transformer_decoder, self.mask_embed
        d = self.config.dim
        if hidden.shape[-1] != 2 * d:
            raise ValueError(f'[SEG] hidden states must have {2 * d} channels (feature and '
                             f'position), got {hidden.shape[-1]}.')
        feat, pos = hidden[:, None, :d], hidden[:, None, d:]
        query, _, masks = self._decode(decoder, mask_embed, memory, feat, pos, batch_index)
        return PromptOutput(query, pos, masks)

    def prompt_queries(self, points: torch.Tensor, image_size: Tuple[int, int]):
        """Point prompts (N, 2) as (x, y) pixels -> initial (feat, pos), each (N, 1, D)."""
        h, w = image_size
        boxes = torch.cat([points - POINT_HALF_BOX, points + POINT_HALF_BOX], -1)
        boxes = boxes / boxes.new_tensor([w, h, w, h])
        cxcywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], -1)
        enc = box_encoding(inverse_sigmoid(cxcywh).sigmoid(), num_feats=self.config.dim // 2)
        pos = self.pos_linear(enc)[:, None]
        feat = (self.pb_embedding.weight[0] + self.mask_tokens.weight[0]).expand_as(pos)
        return feat, pos

    def decode_points(self, memory: PixelDecoderOutput, points: torch.Tensor,
                      batch_index: torch.Tensor, image_size: Tuple[int, int],
                      boxes: Optional[Sequence] = None) -> PromptOutput:
        """Point (or box) prompts through the main decoder.

        points: (N, 2) (x, y) pixels; for a box prompt pass its centre and `boxes` (N, 4)
        x1 y1 x2 y2 pixels, which confine every layer's attention to the box.
        """
        feat, pos = self.prompt_queries(points, image_size)
        rel = None
        if boxes is not None:
            h, w = image_size
            rel = torch.as_tensor(boxes, dtype=points.dtype) / points.new_tensor([w, h, w, h])
        query, _, masks = self._decode(self.transformer_decoder, self.mask_embed, memory,
                                       feat, pos, batch_index, rel)
        return PromptOutput(query, pos, masks)

    def decode_regions(self, memory: PixelDecoderOutput, regions: torch.Tensor,
                       points: torch.Tensor, batch_index: torch.Tensor,
                       image_size: Tuple[int, int]) -> PromptOutput:
        """Mask (region) prompts through the main decoder, as `forward_visual_prompt` does.

        regions: (N, H, W) bool, any grid over the image; points: (N, 2) (x, y) pixels of
        each region's innermost point (the argmax of its distance transform), which makes
        the query as a point prompt does. Every layer attends only within the region
        resized nearest to that layer's memory (a region that vanishes there sees all).
        """
        feat, pos = self.prompt_queries(points, image_size)
        query, _, masks = self._decode(self.transformer_decoder, self.mask_embed, memory,
                                       feat, pos, batch_index, regions=regions)
        return PromptOutput(query, pos, masks)


def build_omg_seg_head(*, llm_decoder: bool = False) -> OMGSegHead:
    """The official head (ConvNeXt-L input widths, 300 queries, 9 layers)."""
    return OMGSegHead(HeadConfig(llm_decoder=llm_decoder))
