"""Shared-prefix packing: several questions about one frame in one LLM forward.

Every question about a frame starts with the same tokens (system prompt + visual block).
A pack holds that prefix once, followed by each sample's own tokens (question, answer).
Each sample attends to the prefix and causally to itself only, and its positions continue
from the end of the prefix, so every sample sees exactly what it sees alone: the packed
loss is the mean of the single-sample losses, at a fraction of the tokens.

    prefix | sample 0 | sample 1 | ...        positions: 0..P-1 | P..P+L0-1 | P..P+L1-1
"""
from __future__ import annotations

from typing import Sequence

import torch


def pack_layout(prefix: int, lengths: Sequence[int], dtype: torch.dtype = torch.float32
                ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """(additive mask (1, 1, T, T), position ids (1, T), [(start, end)] of every sample)."""
    total = prefix + sum(lengths)
    allowed = torch.zeros((total, total), dtype=torch.bool)
    allowed[:prefix, :prefix] = torch.ones(prefix, prefix, dtype=torch.bool).tril()
    pos = list(range(prefix))
    spans = []
    start = prefix
    for n in lengths:
        end = start + n
        allowed[start:end, :prefix] = True
        allowed[start:end, start:end] = torch.ones(n, n, dtype=torch.bool).tril()
        pos += range(prefix, prefix + n)
        spans.append((start, end))
        start = end
    mask = torch.zeros((total, total), dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None], torch.tensor(pos)[None], spans


def pack_ids(prefix_ids: list[int], suffixes: Sequence[tuple[list[int], list[int]]]
             ) -> tuple[list[int], list[int]]:
    """Concatenate the prefix (unlabelled) and each sample's (ids, labels)."""
    ids, labels = list(prefix_ids), [-100] * len(prefix_ids)
    for s_ids, s_labels in suffixes:
        ids += s_ids
        labels += s_labels
    return ids, labels


def split_prompt(ids: list[int], labels: list[int], prefix: int
                 ) -> tuple[list[int], tuple[list[int], list[int]]]:
    """One sample's full ids/labels -> (prefix ids, (own ids, own labels))."""
    if any(x != -100 for x in labels[:prefix]):
        raise ValueError('a label falls inside the shared prefix')
    return ids[:prefix], (ids[prefix:], labels[prefix:])
