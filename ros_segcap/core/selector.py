"""The selector part of a [SEG] pointer: which member of a named group, by its place.

'the second cup from the left', 'the largest orange object', 'the can to the left of the
blue box' first name a group (cups, orange objects, cans) and then select one member by
comparing places. A bilinear score of the [SEG] state against each object token and its
place can learn the group but hardly the comparison: the largest of three cups differs from
the runner-up by a few thousandths of the place features. The Selector makes comparisons
features of their own, on the scale of whole objects:

- membership m_j in 0..1: how well object j fits the named group, from a score like the
  pointer's (its own query head) taken relative to the best object's: objects within about
  MEMBER_MARGIN of the best count as members at the start. (An absolute score saturates: a
  trained pointer scores every object far above zero, so every object was a member and
  the gradient that should have told them apart vanished.)
- ranks: for each of x (mask centre), bottom (the mask's lowest row: nearer objects stand
  lower in a robot's view) and log area, the soft number of group members below and above
  object i, turned into soft one-hot counts 0..RANK_SLOTS-1 ('leftmost' = none of the group
  further left, 'second from the right' = one further right);
- relation to an anchor: a softmax over objects from a third query head gives the anchor's
  place; object i gets 'left of', 'right of', 'nearer than', 'farther than' and 'in line
  with' it, and minus its own anchor weight (the target is not the anchor).

The [SEG] state weighs these features (a zero-initialised linear head) and the result is
added to the pointer's score, so a model that gains a Selector starts exactly where it was.
"""
from __future__ import annotations

import torch
from torch import nn

RANK_SLOTS = 6  # soft one-hot counts 0..5
RANK_WIDTH = 0.3  # std of a count's soft one-hot bump
SCALES = (0.015, 0.01, 0.08)  # sigmoid temperature of x, bottom, log area differences
IN_LINE = 0.25  # x distance (unit) at which 'in line with' falls to exp(-1)
MEMBER_MARGIN = 2.0  # initial membership: sigmoid(score - best score + MEMBER_MARGIN)
N_RELATION = 6
N_FEATURES = 3 * 2 * RANK_SLOTS + N_RELATION


def object_places(mask_logits: torch.Tensor) -> torch.Tensor:
    """(N, Hm, Wm) mask logits -> (N, 3): centre x, bottom row (both 0..1 of the padded
    square) and log of the area share of each mask (logit >= 0); empty masks get 0, 0, -10."""
    m = (mask_logits >= 0).float()
    n, hm, wm = m.shape
    area = m.flatten(1).sum(1)
    xs = (torch.arange(wm, device=m.device, dtype=torch.float32) + 0.5) / wm
    rows = (torch.arange(hm, device=m.device, dtype=torch.float32) + 0.5) / hm
    cx = (m.sum(1) * xs).sum(1) / area.clamp(min=1)
    bottom = (m.amax(2) * rows).amax(1)
    log_area = torch.where(area > 0, (area.clamp(min=1) / (hm * wm)).log(),
                           torch.full_like(area, -10.0))
    return torch.stack([cx, bottom, log_area], -1)


def rank_features(member: torch.Tensor, places: torch.Tensor) -> torch.Tensor:
    """member (G, N) in 0..1, places (N, 3) -> (G, N, 6 * RANK_SLOTS): soft one-hot of the
    number of members below / above each object, per place feature."""
    scales = places.new_tensor(SCALES)
    diff = (places[:, None, :] - places[None, :, :]) / scales  # [i, j] = (f_i - f_j) / s
    not_self = 1.0 - torch.eye(places.shape[0], dtype=places.dtype, device=places.device)
    below = torch.sigmoid(diff) * not_self[..., None]  # j lies below i
    above = torch.sigmoid(-diff) * not_self[..., None]
    counts = torch.cat([torch.einsum('gj,ijf->gif', member, below),
                        torch.einsum('gj,ijf->gif', member, above)], -1)  # (G, N, 6)
    slots = torch.arange(RANK_SLOTS, dtype=places.dtype, device=places.device)
    bumps = torch.exp(-(counts[..., None] - slots) ** 2 / (2 * RANK_WIDTH ** 2))
    return bumps.flatten(2)


def relation_features(anchor: torch.Tensor, places: torch.Tensor) -> torch.Tensor:
    """anchor (G, N) softmax weights, places (N, 3) -> (G, N, N_RELATION)."""
    x, bottom = places[:, 0], places[:, 1]
    ax, ab = anchor @ x, anchor @ bottom  # (G,)
    dx = (x[None] - ax[:, None]) / SCALES[0]
    db = (bottom[None] - ab[:, None]) / SCALES[1]
    in_line = torch.exp(-((x[None] - ax[:, None]) / IN_LINE) ** 2)
    return torch.stack([torch.sigmoid(-dx), torch.sigmoid(dx), torch.sigmoid(db),
                        torch.sigmoid(-db), in_line, -anchor], -1)


class Selector(nn.Module):
    """[SEG] states -> extra pointer scores from ranks within the named group and the
    relation to an anchor (see the module docstring)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        # group and anchor queries start as the pointer's own query (plus these deltas)
        self.member_delta = nn.Linear(hidden, hidden)
        self.anchor_delta = nn.Linear(hidden, hidden)
        self.member_bias = nn.Parameter(torch.tensor(MEMBER_MARGIN))
        self.weights = nn.Linear(hidden, N_FEATURES)
        for layer in (self.member_delta, self.anchor_delta, self.weights):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def membership(self, seg_hidden: torch.Tensor, query: torch.Tensor, keys: torch.Tensor
                   ) -> torch.Tensor:
        """(G, N) in 0..1: how well each object fits the group named by each [SEG] state."""
        score = (query + self.member_delta(seg_hidden)) @ keys.T * keys.shape[-1] ** -0.5
        return torch.sigmoid(score - score.amax(-1, keepdim=True) + self.member_bias)

    def forward(self, seg_hidden: torch.Tensor, query: torch.Tensor, keys: torch.Tensor,
                places: torch.Tensor) -> torch.Tensor:
        """seg_hidden (G, H), the pointer's query (G, H) and place-free keys (N, H),
        object places (N, 3) from object_places -> scores (G, N) to add."""
        member = self.membership(seg_hidden, query, keys)
        anchor = ((query + self.anchor_delta(seg_hidden)) @ keys.T
                  * keys.shape[-1] ** -0.5).softmax(-1)
        places = places.to(keys.dtype)
        features = torch.cat([rank_features(member, places),
                              relation_features(anchor, places)], -1)  # (G, N, F)
        return torch.einsum('gnf,gf->gn', features, self.weights(seg_hidden))
