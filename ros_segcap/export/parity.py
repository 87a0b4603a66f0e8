"""Parity measures between two runs of a graph, and the tolerances the project holds to.

Relative error is scale-normalised: max |got - ref| / max |ref| over one output, so values
near zero (where element-wise ratios explode) do not dominate.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

FP32_ATOL = 2e-3  # fp32 engines vs torch: max absolute error of any output
FP32_RTOL = 5e-4  # ... and max |error| / max |torch value| of any output
FP16_RTOL = 2e-2  # fp16 TensorRT plans: looser numbers, but the masks must agree ...
MASK_IOU = 0.99  # ... with IoU >= 0.99 (binarised at probability 0.5)
MASK_OUTPUTS = ('mask_logits', 'seg_mask_logits')


def errors(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]
           ) -> dict[str, tuple[float, float]]:
    """{output: (max abs error, scale-normalised relative error)} over float outputs of ref."""
    out = {}
    for name, r in ref.items():
        r = np.asarray(r)
        if r.dtype.kind != 'f':
            continue
        g = np.asarray(got[name], dtype=r.dtype)
        if g.shape != r.shape:
            raise ValueError(f'{name}: shape {g.shape} != reference {r.shape}')
        err = float(np.abs(g - r).max()) if r.size else 0.0
        scale = float(np.abs(r).max()) if r.size else 0.0
        out[name] = (err, err / scale if scale > 0 else err)
    return out


def mask_iou(ref_logits: np.ndarray, got_logits: np.ndarray) -> float:
    """IoU of the masks (logit > 0) over all queries together; 1.0 when both are empty."""
    a, b = np.asarray(ref_logits) > 0, np.asarray(got_logits) > 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def failures(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], *,
             atol: float = FP32_ATOL, rtol: float = FP32_RTOL,
             min_iou: float = MASK_IOU) -> list[str]:
    """Human-readable list of what is out of tolerance (empty = parity holds)."""
    bad = []
    for name, (err, rel) in errors(ref, got).items():
        if err > atol and rel > rtol:
            bad.append(f'{name}: max abs error {err:.3g} > {atol:g} and relative {rel:.3g} > '
                       f'{rtol:g}')
    for name in MASK_OUTPUTS:
        if name in ref:
            iou = mask_iou(ref[name], got[name])
            if iou < min_iou:
                bad.append(f'{name}: mask IoU {iou:.4f} < {min_iou}')
    return bad


def summary(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> dict:
    """Worst errors for the manifest: {'max_abs', 'max_rel', 'mask_iou'}."""
    errs = errors(ref, got)
    ious = [mask_iou(ref[n], got[n]) for n in MASK_OUTPUTS if n in ref]
    return {'max_abs': max((e for e, _ in errs.values()), default=0.0),
            'max_rel': max((r for _, r in errs.values()), default=0.0),
            'mask_iou': min(ious, default=1.0)}
