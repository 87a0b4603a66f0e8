"""Selector: place features of masks, soft ranks within a group, relations to an anchor, and
that a pointer with a Selector learns 'the second X from the left' where a plain one cannot."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ros_segcap.core.config import get_config
from ros_segcap.core.projectors import Projectors
from ros_segcap.core.selector import RANK_SLOTS, Selector, object_places, rank_features, \
    relation_features


def test_object_places_are_centre_bottom_and_log_area():
    m = torch.full((3, 10, 10), -5.0)
    m[0, 2:4, 1:3] = 5.0  # rows 2-3, cols 1-2: 4 cells
    m[1, 5:9, 6:10] = 5.0  # 16 cells
    places = object_places(m)
    assert places[0].tolist() == pytest.approx([0.2, 0.35, math.log(0.04)], abs=1e-5)
    assert places[1].tolist() == pytest.approx([0.8, 0.85, math.log(0.16)], abs=1e-5)
    assert places[2, 2] == -10.0  # empty mask


def _counts(features: torch.Tensor) -> torch.Tensor:
    """(..., 6 * RANK_SLOTS) soft one-hots -> (..., 6) most likely counts."""
    return features.unflatten(-1, (6, RANK_SLOTS)).argmax(-1)


def test_ranks_count_only_group_members():
    # x: 0.05 (not a member), 0.3, 0.5, 0.7 (members); bottom and area all different
    places = torch.tensor([[0.05, 0.9, -2.0], [0.3, 0.5, -3.0], [0.5, 0.6, -4.0],
                           [0.7, 0.7, -5.0]])
    member = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    counts = _counts(rank_features(member, places))[0]  # (N, 6): x, bottom, area below; above
    assert counts[1:, 0].tolist() == [0, 1, 2]  # members further left: the non-member is not one
    assert counts[1:, 3].tolist() == [2, 1, 0]  # members further right
    assert counts[1:, 1].tolist() == [0, 1, 2]  # members standing higher (farther)
    assert counts[1:, 5].tolist() == [0, 1, 2]  # members larger


def test_relations_follow_the_anchor():
    places = torch.tensor([[0.2, 0.5, -3.0], [0.5, 0.5, -3.0], [0.8, 0.8, -3.0]])
    anchor = torch.tensor([[0.0, 1.0, 0.0]])  # the middle object
    rel = relation_features(anchor, places)[0]  # left, right, nearer, farther, in line, -anchor
    assert rel[0, 0] > 0.99 and rel[2, 1] > 0.99 and rel[2, 2] > 0.99
    assert rel[0, 1] < 0.01 and rel[2, 0] < 0.01
    assert rel[1, 5] == -1.0 and rel[0, 5] == 0.0


def test_a_new_selector_changes_no_score():
    config = get_config('tiny-random').replace(seg_pointer=True)
    plain = Projectors(config)
    with_selector = Projectors(config.replace(selector=True))
    missing = with_selector.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith('selector.') for k in missing)
    h = config.llm_hidden
    seg, tokens, place = torch.randn(2, h), torch.randn(5, h), torch.rand(5, 3)
    ranks = object_places(torch.randn(5, 8, 8))
    assert torch.equal(plain.pointer_logits(seg, tokens, place),
                       with_selector.pointer_logits(seg, tokens, place, ranks))
    with pytest.raises(ValueError, match='rank_places'):
        with_selector.pointer_logits(seg, tokens, place)
    with pytest.raises(ValueError, match='seg_pointer'):
        Projectors(config.replace(seg_pointer=False, selector=True))


def test_membership_is_relative_to_the_best_object():
    """A trained pointer scores every object far above zero; members are still the objects
    near the best score, and a shift of all scores changes nothing."""
    sel = Selector(4)
    keys = torch.tensor([[10.0, 0, 0, 0], [9.0, 0, 0, 0], [2.0, 0, 0, 0]])
    query = torch.tensor([[4.0, 0, 0, 0]])  # scores 20, 18, 4 (scale 1/2)
    m = sel.membership(torch.zeros(1, 4), query, keys)[0]
    assert m[0] > 0.85 and 0.4 < m[1] < 0.6 and m[2] < 1e-5
    shifted_keys = keys.clone()
    shifted_keys[:, 1] = 5.0  # every score + 5
    shifted = sel.membership(torch.zeros(1, 4), torch.tensor([[4.0, 2.0, 0, 0]]), shifted_keys)
    assert torch.allclose(m, shifted[0])


HIDDEN, OBJECTS, KINDS = 16, 6, 3
ASKS = ('leftmost', 'second from the left', 'largest')


class ToyPointer(nn.Module):
    """A request embedding as the [SEG] state, the seg_pointer's bilinear score, and
    optionally a Selector."""

    def __init__(self, selector: bool) -> None:
        super().__init__()
        self.request = nn.Embedding(KINDS * len(ASKS), HIDDEN)
        self.query, self.key = nn.Linear(HIDDEN, HIDDEN), nn.Linear(HIDDEN, HIDDEN)
        self.place = nn.Linear(3, HIDDEN)
        self.selector = Selector(HIDDEN) if selector else None

    def forward(self, request, tokens, places):
        h = self.request(request)[None]
        q, keys = self.query(h), self.key(tokens)
        scores = q @ (keys + self.place(places)).T * HIDDEN ** -0.5
        if self.selector is not None:
            scores = scores + self.selector(h, q, keys, places)
        return scores[0]


def _toy_scene(gen: torch.Generator, kind_vectors: torch.Tensor):
    """Six objects of three kinds; ask for one selector within a kind that has >= 3 members."""
    while True:
        kinds = torch.randint(0, KINDS, (OBJECTS,), generator=gen)
        kind = int(torch.randint(0, KINDS, (), generator=gen))
        members = (kinds == kind).nonzero()[:, 0]
        if len(members) >= 3:
            break
    places = torch.stack([torch.rand(OBJECTS, generator=gen), torch.rand(OBJECTS, generator=gen),
                          torch.rand(OBJECTS, generator=gen) * 2 - 5], -1)
    ask = int(torch.randint(0, len(ASKS), (), generator=gen))
    by_x = members[places[members, 0].argsort()]
    target = (by_x[0], by_x[1], members[places[members, 2].argmax()])[ask]
    tokens = kind_vectors[kinds] + 0.1 * torch.randn(OBJECTS, HIDDEN, generator=gen)
    return torch.tensor(kind * len(ASKS) + ask), tokens, places, int(target)


def _toy_accuracy(selector: bool, steps: int = 700) -> float:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    kind_vectors = torch.randn(KINDS, HIDDEN, generator=gen)
    model = ToyPointer(selector)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        request, tokens, places, target = _toy_scene(gen, kind_vectors)
        loss = nn.functional.cross_entropy(model(request, tokens, places)[None],
                                           torch.tensor([target]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        tests = [_toy_scene(gen, kind_vectors) for _ in range(200)]
        return sum(int(model(r, t, p).argmax()) == y for r, t, p, y in tests) / len(tests)


def test_selector_learns_ranks_a_plain_pointer_cannot():
    plain, selector = _toy_accuracy(False), _toy_accuracy(True)
    assert selector >= 0.9, (plain, selector)  # 0.98 here
    assert selector - plain >= 0.15, (plain, selector)  # plain 0.70 here
