"""Perception prior embedding (OMG-LLaVA, as the released code computes it).

For object query q with class logits c_q and mask logits M_q:
    s_q    = max over non-void classes of softmax(c_q)
    P_q(x) = (0.5 s_q + 0.5) * sigmoid(M_q(x)), resized to the pixel-token grid
    w(x)   = softmax over q of P(x)
    prior(x) = sum_q w_q(x) [f_q ; e_q]                 (dim 2D)
Pixel token x becomes concat(token(x), prior(x)) (dim 4C + 2D). The object-centric tokens are
the queries that own at least one pixel of argmax_q P at mask resolution, as [f_q ; e_q].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def query_scores(class_logits: torch.Tensor) -> torch.Tensor:
    """(B, N, K+1) -> (B, N): the best non-void class probability s_q."""
    return class_logits.softmax(-1)[..., :-1].max(-1).values


def prior_probability(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """P (B, N, Hm, Wm) = (0.5 s + 0.5) * sigmoid(mask logits)."""
    s = query_scores(class_logits)
    return (0.5 * s + 0.5)[..., None, None] * mask_logits.sigmoid()


def perception_prior(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                     query_feat: torch.Tensor, query_pos: torch.Tensor, grid: int
                     ) -> torch.Tensor:
    """Prior embedding per pixel token: (B, grid*grid, 2D).

    class_logits (B, N, K+1), mask_logits (B, N, Hm, Wm), query_feat / query_pos (B, N, D).
    """
    p = prior_probability(class_logits, mask_logits)
    p = F.interpolate(p, size=(grid, grid), mode='bilinear', align_corners=False)
    w = p.flatten(2).softmax(1)  # (B, N, grid*grid): softmax over queries
    embed = torch.cat([query_feat, query_pos], -1)  # (B, N, 2D)
    return torch.einsum('bnx,bnc->bxc', w, embed)


def mask_pool(fine: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Features averaged under each soft mask.

    fine (B, C, Hm, Wm), mask logits (B, N, Hm, Wm) -> (B, N, C).
    """
    w = mask_logits.sigmoid()
    total = torch.einsum('bnhw,bchw->bnc', w, fine)
    return total / w.flatten(2).sum(-1, keepdim=True).clamp(min=1e-3)


def foreground_queries(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: queries that own >= 1 pixel of argmax_q P at mask resolution."""
    p = prior_probability(class_logits, mask_logits)
    owner = p.argmax(1)  # (B, Hm, Wm)
    n = p.shape[1]
    counts = F.one_hot(owner.flatten(1), n).sum(1)  # (B, N)
    return counts > 0
