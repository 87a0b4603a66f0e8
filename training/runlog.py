"""Per-run metrics: metrics.csv (one row per logged step) and loss_curve.png (OpenCV)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

CSV_NAME = 'metrics.csv'
PNG_NAME = 'loss_curve.png'
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75))  # RGB


class RunLog:
    """Append rows to metrics.csv; on resume, rows at or after the resumed step are dropped."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool = True) -> None:
        self.path = Path(run_dir) / CSV_NAME
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        if enabled and self.path.exists():
            with open(self.path, newline='') as f:
                self.rows = [r for r in csv.DictReader(f) if int(r['step']) <= start_step]
            self._rewrite()

    def add(self, row: dict[str, Any], write: bool) -> None:
        """Record a row; flush to disk (and redraw the curve) when `write`."""
        if not self.enabled:
            return
        self.pending.append(row)
        if write:
            self.rows.extend(self.pending)
            self.pending = []
            self._rewrite()
            plot_losses(self.rows, self.path.with_name(PNG_NAME))

    def _rewrite(self) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        tmp = self.path.with_suffix('.tmp')
        with open(tmp, 'w', newline='') as f:
            w = csv.DictWriter(f, fieldnames=keys or ['step'])
            w.writeheader()
            w.writerows(self.rows)
        tmp.replace(self.path)

    def close(self) -> None:
        """Flush rows not written yet."""
        if self.enabled and self.pending:
            self.rows.extend(self.pending)
            self.pending = []
            self._rewrite()
            plot_losses(self.rows, self.path.with_name(PNG_NAME))


def _series(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    skip = {'step', 'lr', 'grad_norm', 'samples_per_s'}
    keys: list[str] = []
    for r in rows:  # a loss may first appear after row 0 (e.g. a task-specific term)
        keys += [k for k in r if k not in skip and k not in keys]
    out = {}
    for k in keys:
        vals = [float(r[k]) if r.get(k) not in (None, '') else np.nan for r in rows]
        out[k] = np.array(vals)
    return out


def smooth(v: np.ndarray, beta: float = 0.9) -> np.ndarray:
    """Bias-corrected exponential moving average (NaNs keep the previous value)."""
    out, avg, n = np.empty_like(v), 0.0, 0
    for i, x in enumerate(v):
        if np.isfinite(x):
            n += 1
            avg = beta * avg + (1 - beta) * x
        out[i] = avg / (1 - beta ** n) if n else np.nan
    return out


def plot_losses(rows: list[dict[str, Any]], path: Path, size: tuple[int, int] = (480, 720)
                ) -> Optional[Path]:
    """Draw every loss column (EMA-smoothed) against step, log-scaled y, into a PNG."""
    if len(rows) < 2:
        return None
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    steps = np.array([float(r['step']) for r in rows])
    series = {k: smooth(v) for k, v in _series(rows).items()}
    vals = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in series.values()] or [[1.0]])
    lo, hi = np.log10(max(vals.min(), 1e-6)), np.log10(max(vals.max(), 1e-6))
    hi = hi if hi > lo else lo + 1
    x0, x1, y0, y1 = 60, w - 150, 20, h - 40
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    smin, smax = steps.min(), max(steps.max(), steps.min() + 1)
    for i, (name, v) in enumerate(series.items()):
        ok = np.isfinite(v) & (v > 0)
        if ok.sum() < 2:
            continue
        xs = x0 + (steps[ok] - smin) / (smax - smin) * (x1 - x0)
        ys = y1 - (np.log10(v[ok]) - lo) / (hi - lo) * (y1 - y0)
        pts = np.stack([xs, ys], 1).round().astype(np.int32)
        colour = COLOURS[i % len(COLOURS)]
        cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)
        cv2.putText(img, name, (x1 + 10, y0 + 20 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1, cv2.LINE_AA)
    black = (0, 0, 0)
    cv2.putText(img, f'{10 ** hi:.3g}', (5, y0 + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 1)
    cv2.putText(img, f'{10 ** lo:.3g}', (5, y1), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 1)
    cv2.putText(img, f'step {int(smin)}..{int(smax)} (loss, log scale)', (x0, h - 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, black, 1)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path
