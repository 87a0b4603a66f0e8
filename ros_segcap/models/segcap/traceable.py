"""Trace-time stand-ins for a few decoder pieces: same values, better ONNX graphs.

`exportable(model)` swaps them in on the model's decoder instance for the duration of an
export only; the torch path never sees them, and the parity tests compare the exported
graphs against the untouched torch modules. Why each exists:

- `_restrict_to`: adaptive_max_pool2d does not export with a dynamic query count;
- `_cross_allowed`: onnxruntime has no CPU kernel for Where on bool tensors;
- `heads`: Einsum('bnd,bdhw->bnhw') runs ~4x slower in onnxruntime than the same MatMul;
- attention: the exported scaled_dot_product_attention masks the full (B, H, N, M) score
  tensor with Where and guards NaN rows (IsNaN + Where); no row is ever fully blocked here
  (the decoder unblocks empty rows), so one additive (B, 1, N, M) bias is equivalent.
"""
from __future__ import annotations

from contextlib import contextmanager
import types
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from ros_segcap.models.segcap.decoder import Attention
from ros_segcap.models.segcap.model import SegCapModel


def _restrict_to_blocks(restrict: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """OMGDecoder._restrict_to as a block max: (B, N, Hm, Wm) bool -> (B, N, h*w) bool."""
    b, n, hm, wm = restrict.shape
    h, w = size
    assert hm % h == 0 and wm % w == 0, 'memory sides divide the mask size'
    r = restrict.float().reshape(b, n, h, hm // h, w, wm // w)
    return (r.amax(dim=(3, 5)) > 0).reshape(b, n, h * w)


def _cross_allowed_logical(mask_logits: torch.Tensor, size: tuple[int, int],
                           restrict_maps: Optional[list[torch.Tensor]], level: int
                           ) -> torch.Tensor:
    """OMGDecoder._cross_allowed with | and & (where(empty, fallback, allowed) equals
    allowed | (empty & fallback), because an empty row has allowed all False)."""
    m = F.interpolate(mask_logits.detach(), size=size, mode='bilinear', align_corners=False)
    allowed = m.flatten(2) >= 0  # sigmoid >= 0.5
    if restrict_maps is not None:
        allowed = allowed & restrict_maps[level]
    empty = ~allowed.any(-1, keepdim=True)
    if restrict_maps is not None:
        return allowed | (empty & restrict_maps[level])
    return allowed | empty


def _heads_matmul(self, x: torch.Tensor, mask_features: torch.Tensor):
    """OMGDecoder.heads with a batched MatMul instead of Einsum."""
    x = self.norm(x)
    b, d, h, w = mask_features.shape
    masks = torch.matmul(self.mask_embed(x), mask_features.reshape(b, d, h * w))
    return self.class_head(x), masks.reshape(b, -1, h, w)


def _attention_bias(self: Attention, q, k, v, allowed: Optional[torch.Tensor] = None):
    """Attention.forward as softmax(QK^T / sqrt(d) + bias) @ V, bias = 0 or -inf per key."""
    b, n, d = q.shape
    q, k, v = self._split(self.q(q)), self._split(self.k(k)), self._split(self.v(v))
    root = q.shape[-1] ** -0.25  # q and k each scaled by sqrt(1/sqrt(d)), as torch's SDPA does
    scores = torch.matmul(q * root, k.transpose(-2, -1) * root)
    if allowed is not None:
        scores = scores + torch.where(allowed, 0.0, float('-inf'))  # (B, 1|H, N, M)
    y = torch.matmul(scores.softmax(-1), v)
    return self.out(y.transpose(1, 2).reshape(b, n, d))


@contextmanager
def exportable(model: SegCapModel) -> Iterator[None]:
    """Within the block, the decoder uses the stand-ins above (instance attributes)."""
    decoder = model.decoder
    attentions = [m for m in decoder.modules() if isinstance(m, Attention)]
    decoder._restrict_to = _restrict_to_blocks
    decoder._cross_allowed = _cross_allowed_logical
    decoder.heads = types.MethodType(_heads_matmul, decoder)
    for attn in attentions:
        attn.forward = types.MethodType(_attention_bias, attn)
    try:
        yield
    finally:
        del decoder._restrict_to, decoder._cross_allowed, decoder.heads
        for attn in attentions:
            del attn.forward
