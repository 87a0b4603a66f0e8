"""Scores per object kind and per colour word (for the varied world's evaluation).

A referring sample counts for the kind and the colour of each object it targets (its IoU);
a region sample counts for its first prompted object (1 if the answer is right, else 0).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import numpy as np

# metric name -> attribute value -> scores
Table = dict[str, dict[str, list[float]]]


class AttributeMeter:
    """Collect per-sample scores keyed by the kinds and colours of the objects involved."""

    def __init__(self) -> None:
        self.by_kind: Table = defaultdict(lambda: defaultdict(list))
        self.by_colour: Table = defaultdict(lambda: defaultdict(list))

    def update(self, metric: str, objects: Iterable[Any], score: float) -> None:
        """Add `score` of `metric` once per distinct kind and colour of `objects`."""
        objects = list(objects)
        for kind in {o.kind for o in objects}:
            self.by_kind[metric][kind].append(float(score))
        for colour in {o.colour for o in objects}:
            self.by_colour[metric][colour].append(float(score))

    @staticmethod
    def _table(table: Table) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for metric, groups in sorted(table.items()):
            for name, scores in sorted(groups.items()):
                out[name][metric] = float(np.mean(scores))
                out[name][f'n_{metric}'] = len(scores)
        return dict(out)

    def compute(self) -> dict[str, dict[str, dict[str, float]]]:
        """{'by_kind': {kind: {metric: mean, 'n_<metric>': count}}, 'by_colour': {...}}."""
        return {'by_kind': self._table(self.by_kind), 'by_colour': self._table(self.by_colour)}
