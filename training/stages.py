"""The three stages of the recipe (docs/design.md §3): what each trains and what its loss is.

A stage is an nn.Module whose forward takes one cached item (batch size 1) and returns
(loss, logged values), so the same loop runs it on one process or under DDP.
"""
from __future__ import annotations

from collections import OrderedDict
import re
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ros_segcap.core.answer import parse_answer
from ros_segcap.models.segcap.config import TABLETOP_COLOURS, get_config
from ros_segcap.models.segcap.lora import apply_lora, set_lora_dropout
from ros_segcap.models.segcap.model import (FrameFeatures, SegCapModel, build_model,
                                            mask_places)
from ros_segcap.models.segcap.projectors import PLACE_WORDS
from ros_segcap.core.preprocess import PromptQueries
from ros_segcap.models.segcap.prior import foreground_queries
from ros_segcap.models.segcap.proposals import centre_loss, centre_targets
from ros_segcap.models.segcap.weights import load_model
from training.cache import CachedSample, CachedScene
from training.config import TrainConfig
from training.losses import (mask_iou_matrix, mask_losses, pointer_losses, set_losses,
                             shifted_ce)
from training.pack import pack_ids, pack_layout, split_prompt

Item = tuple[CachedScene, Union[None, CachedSample, list[CachedSample]]]
# frames kept by the language stages (about 12 MB each for segcap-tiny): the most recently
# used ones; unbounded, stage 2 of 1,400 scenes peaked at 19.6 GB
FRAME_MEMO = 256


def _num(value) -> float:
    """A logged value as a float (tensors are detached first)."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def colour_label(phrase: str, names: Sequence[str] = TABLETOP_COLOURS) -> Optional[int]:
    """Index in `names` of the colour word a phrase starts with ('red cup' -> red)."""
    words = phrase.split()
    if words and words[0] in ('the', 'a', 'an'):
        words = words[1:]
    return names.index(words[0]) if words and words[0] in names else None


def place_targets(answer: str) -> Optional[list[float]]:
    """A region description's place as place-head targets, in PLACE_WORDS order: +1 for each
    word it says, -1 for the others ('A red cup at the front left of the table.' ->
    [1, -1, 1, -1]; 'at the centre' -> all -1); None for an answer without a place."""
    found = re.search(r'\bat the ([a-z ]+?) of the table\b', answer.lower())
    if found is None:
        return None
    words = found.group(1).split()
    if words != ['centre'] and not (words and set(words) <= set(PLACE_WORDS)):
        return None
    return [1.0 if w in words else -1.0 for w in PLACE_WORDS]


def features(scene: CachedScene) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in scene.feats.items()}


def frame_from_features(model: SegCapModel, feats: dict[str, torch.Tensor]) -> FrameFeatures:
    """model.encode without the backbone: cached backbone features -> FrameFeatures (with
    proposals, for such models)."""
    return model.with_proposals(model.encode_features(feats))


def new_rows_only(model: SegCapModel) -> nn.Parameter:
    """Make the input embedding trainable but let only the new token rows get gradients."""
    emb = model.llm.lm.get_input_embeddings().weight
    emb.requires_grad_(True)
    keep = torch.zeros(emb.shape[0], 1)
    keep[model.llm.seg_id:] = 1.0
    emb.register_hook(lambda g: g * keep.to(g.dtype))
    return emb


class Stage0(nn.Module):
    """Pixel decoder + OMG decoder: Hungarian set loss on the panoptic + prompt queries."""

    def __init__(self, model: SegCapModel, cfg: TrainConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(('pixel_decoder.', 'decoder.')))

    def forward(self, item: Item):
        scene, cfg, m = item[0], self.cfg, self.model
        mask_features, memories, memory_pos = m.pixel_decoder(features(scene))
        feat, pos = m.decoder.learnable_queries(1)
        out = m.decoder(feat, pos, mask_features, memories, memory_pos)
        logs = set_losses(out.class_logits, out.mask_logits, scene.pan_classes,
                          scene.pan_masks, class_weight=cfg.class_weight,
                          bce_weight=cfg.mask_bce_weight, dice_weight=cfg.mask_dice_weight,
                          void_weight=cfg.void_weight)
        loss = cfg.class_weight * logs['class'] + cfg.mask_bce_weight * logs['mask_bce'] + \
            cfg.mask_dice_weight * logs['mask_dice']
        if scene.prompt_targets.numel():
            frame = FrameFeatures(None, mask_features, memories, memory_pos, None, None, None,
                                  None)
            p_out = m.decode_prompts(frame, scene.prompt_kinds, scene.prompt_boxes,
                                     scene.prompt_restrict)
            target = scene.pan_masks[scene.prompt_targets]
            logs['prompt'] = mask_losses([x[0] for x in p_out.mask_logits], target,
                                         cfg.mask_bce_weight, cfg.mask_dice_weight)
            loss = loss + cfg.prompt_weight * logs['prompt']
            if m.decoder.centre_head is not None:  # a proposal's class is its prompt's
                classes = scene.pan_classes[scene.prompt_targets]
                logs['prompt_class'] = sum(nn.functional.cross_entropy(c[0].float(), classes)
                                           for c in p_out.class_logits)
                loss = loss + cfg.prompt_class_weight * logs['prompt_class']
        if m.decoder.centre_head is not None:
            things = scene.pan_masks[scene.pan_classes >= cfg.stuff_classes]
            logs['centre'] = centre_loss(m.decoder.centre_head(mask_features)[0],
                                         centre_targets(things))
            loss = loss + cfg.centre_weight * logs['centre']
        return loss, {k: _num(v) for k, v in logs.items()}


class LanguageStage(nn.Module):
    """Stages 1 and 2: the LLM answers about a cached frame (decoder frozen)."""

    def __init__(self, model: SegCapModel, cfg: TrainConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith('projectors.') or
                             (cfg.stage == 2 and 'lora_' in name))
        new_rows_only(model)
        if cfg.train_only:  # e.g. 'projectors.': everything else stays as it was
            prefixes = tuple(p for p in cfg.train_only.split(',') if p)
            for name, p in model.named_parameters():
                p.requires_grad_(p.requires_grad and name.startswith(prefixes))
        self._frames: OrderedDict[int, FrameFeatures] = OrderedDict()  # frozen decoder

    @torch.no_grad()
    def frame(self, scene: CachedScene) -> FrameFeatures:
        """The scene's FrameFeatures, computed once (the pixel decoder and decoder are frozen)."""
        if scene.seed in self._frames:
            self._frames.move_to_end(scene.seed)
        else:
            self._frames[scene.seed] = frame_from_features(self.model, features(scene))
            while len(self._frames) > FRAME_MEMO:
                self._frames.popitem(last=False)
        return self._frames[scene.seed]

    def region_tokens(self, frame: FrameFeatures, sample: CachedSample):
        """Object tokens (N, H) of the sample's visual prompts (None without prompts), as
        the runtime makes them (a point on a found object stands for it: visual_prompts)."""
        if not sample.kinds.shape[1]:
            return None
        return self.model.prompt_tokens(self.prompt_output(frame, sample), frame)

    def prompt_output(self, frame: FrameFeatures, sample: CachedSample):
        """The decoder output of the sample's visual prompts (no gradients: frozen decoder)."""
        with torch.no_grad():
            return self.model.visual_prompts(frame, PromptQueries(sample.kinds, sample.boxes,
                                                                  sample.restrict))

    def described_place(self, frame: FrameFeatures, sample: CachedSample) -> torch.Tensor:
        """(1, 3) place (mask_places) of the first prompted object's mask."""
        return mask_places(self.prompt_output(frame, sample).mask_logits[-1][0, :1])

    def alignment(self, frame: FrameFeatures) -> torch.Tensor:
        """Stage 1: MSE of text2vision(object path(q)) against the foreground queries q."""
        m = self.model
        fg = foreground_queries(frame.class_logits, frame.mask_logits)[0]
        f, e = frame.query_feat[0, fg], frame.query_pos[0, fg]
        pooled = m.pooled(frame, frame.mask_logits)
        pooled = None if pooled is None else pooled[fg]
        pf, pe = m.projectors.to_queries(m.projectors.object_tokens(f, e, pooled))
        return nn.functional.mse_loss(torch.cat([pf, pe], -1), torch.cat([f, e], -1))

    def seg_loss(self, frame: FrameFeatures, seg_hidden: torch.Tensor, masks: torch.Tensor,
                 logs: dict) -> torch.Tensor:
        """Stage 2 mask losses (+ pointer losses) of one sample's [SEG] states (N, H)."""
        cfg = self.cfg
        if self.model.config.seg_pointer:
            return self.object_pointer(frame, seg_hidden, masks, logs)
        out = self.model.decode_seg(frame, seg_hidden)
        logs['seg'] = mask_losses([x[0] for x in out.mask_logits], masks, cfg.bce_weight,
                                  cfg.dice_weight)
        loss = logs['seg']
        if cfg.ptr_weight or cfg.ptr_mse_weight:
            loss = loss + self.pointer(frame, seg_hidden, masks, logs)
        return loss

    def object_pointer(self, frame: FrameFeatures, seg_hidden: torch.Tensor,
                       masks: torch.Tensor, logs: dict) -> torch.Tensor:
        """seg_pointer: CE of each [SEG] state's scores over the frame's object tokens (the
        whole seg loss of such models: no decoder run, no mask loss). The target is the
        object whose mask overlaps the true mask best (IoU >= ptr_min_iou, else that [SEG]
        is skipped: no object to point at)."""
        scores, keep = self.model.seg_pointer(frame, seg_hidden)
        if keep.numel() == 0:
            return scores.sum() * 0.0
        iou = mask_iou_matrix(frame.mask_logits[0, keep], masks)  # (G, N_obj)
        best, target = iou.max(1)
        use = best >= self.cfg.ptr_min_iou
        logs['ptr_skip'] = float((~use).float().mean())
        if not bool(use.any()):
            return scores.sum() * 0.0
        logs['ptr'] = nn.functional.cross_entropy(scores[use].float(), target[use])
        logs['ptr_acc'] = float((scores[use].argmax(1) == target[use]).float().mean())
        return logs['ptr']

    def pointer(self, frame: FrameFeatures, seg_hidden: torch.Tensor, masks: torch.Tensor,
                logs: dict) -> torch.Tensor:
        """Weighted pointer CE + MSE of the [SEG] queries against the frame's object queries."""
        cfg, m = self.cfg, self.model
        pf, pe = m.projectors.to_queries(seg_hidden)
        keys = torch.cat([frame.query_feat[0], frame.query_pos[0]], -1)
        ce, mse, n = pointer_losses(torch.cat([pf, pe], -1), keys, frame.mask_logits[0],
                                    masks, cfg.ptr_temperature, cfg.ptr_min_iou)
        if n:
            logs['ptr'], logs['ptr_mse'] = ce, mse
        return cfg.ptr_weight * ce + cfg.ptr_mse_weight * mse

    def colour_loss(self, frame: FrameFeatures, sample: CachedSample, logs: dict
                    ) -> torch.Tensor:
        """CE of the colour head (word_anchor; on the object tokens, or their pooled fine
        features with colour_from_pool) for the queries that cover the sample's colour-named
        grounded phrases (0 when there are none)."""
        probe = self.model.projectors.colour_head
        if probe is None or not self.cfg.colour_weight or sample.task != 'gcg':
            return frame.query_feat.new_zeros(())
        names = self.model.config.colour_names
        colours = [colour_label(p, names) for p in parse_answer(sample.answer).phrases]
        if len(colours) != sample.masks.shape[0]:
            return frame.query_feat.new_zeros(())
        iou = mask_iou_matrix(frame.mask_logits[0], sample.masks)  # (G, Nq)
        best, idx = iou.max(1)
        rows = [(int(q), c) for q, c, b in zip(idx, colours, best)
                if c is not None and float(b) >= self.cfg.ptr_min_iou]
        if not rows:
            return frame.query_feat.new_zeros(())
        q = torch.tensor([r[0] for r in rows])
        logits = self.model.query_colour_logits(frame, q)
        target = torch.tensor([r[1] for r in rows])
        logs['colour'] = nn.functional.cross_entropy(logits, target)
        logs['colour_acc'] = float((logits.argmax(1) == target).float().mean())
        return self.cfg.colour_weight * logs['colour']

    def described_places(self, scenes: Sequence[CachedScene]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(places (N, 3), targets (N, 4)) of the region descriptions in `scenes`: the place
        of each described object's prompt mask and the place words its answer says."""
        places, targets = [], []
        with torch.no_grad():
            for scene in scenes:
                said = [(a, place_targets(a.answer)) for a in scene.samples
                        if a.kinds.shape[1]]
                said = [(a, t) for a, t in said if t is not None]
                if not said:
                    continue
                frame = frame_from_features(self.model, features(scene))
                for a, target in said:
                    places.append(self.described_place(frame, a)[0].float())
                    targets.append(torch.tensor(target))
        if not places:
            return torch.zeros(0, 3), torch.zeros(0, len(PLACE_WORDS))
        return torch.stack(places), torch.stack(targets)

    def fit_place_head(self, scenes: Sequence[CachedScene], iters: int = 2000) -> dict:
        """place_fit: set the place head (place_anchor) to the tanh-linear map that best says
        the place words of the region descriptions in `scenes` (full-batch Adam on their MSE),
        before training; returns the number of descriptions and the MSE before and after."""
        head = self.model.projectors.place_head
        if head is None:
            raise ValueError('place_fit: this model has no place head (place_anchor)')
        x, y = self.described_places(scenes)
        if not len(x):
            raise ValueError('place_fit: the scenes hold no region description with a place')
        fit = nn.Linear(3, len(PLACE_WORDS))
        with torch.no_grad():
            fit.weight.copy_(head.weight.float())
            fit.bias.copy_(head.bias.float())
        opt = torch.optim.Adam(fit.parameters(), lr=0.05)

        def mse() -> torch.Tensor:
            return ((torch.tanh(fit(x)) - y) ** 2).mean()

        before = float(mse().detach())
        for _ in range(iters):
            loss = mse()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            head.weight.copy_(fit.weight.to(head.weight.dtype))
            head.bias.copy_(fit.bias.to(head.bias.dtype))
            after = float(mse())
        return {'descriptions': len(x), 'mse_before': before, 'mse_after': after}

    def place_loss(self, frame: FrameFeatures, sample: CachedSample, logs: dict
                   ) -> torch.Tensor:
        """MSE of the place head (place_anchor) against the place a region description says
        ('... at the front left of the table.'), on the described object's prompt mask; it
        puts the place words into the tokens the LLM reads (0 for other samples)."""
        head = self.model.projectors.place_head
        zero = frame.query_feat.new_zeros(())
        if head is None or not self.cfg.place_weight or not sample.kinds.shape[1]:
            return zero
        target = place_targets(sample.answer)
        if target is None:
            return zero
        places = self.described_place(frame, sample)
        weights = self.model.projectors.place_weights(places.to(head.weight.dtype))
        logs['place'] = nn.functional.mse_loss(weights[0], weights.new_tensor(target))
        return self.cfg.place_weight * logs['place']

    def sample_loss(self, frame: FrameFeatures, hidden: torch.Tensor, labels: torch.Tensor,
                    sample: CachedSample, logs: dict) -> torch.Tensor:
        """Text CE (+ stage-2 [SEG] losses) of one sample: hidden (1, T, H), labels (T,)."""
        m = self.model
        logs['ce'] = shifted_ce(hidden, labels, m.llm.logits)
        loss = logs['ce']
        if self.cfg.stage == 2:
            seg_pos = labels == m.llm.seg_id
            n_seg = int(seg_pos.sum())
            if n_seg and n_seg == sample.masks.shape[0]:
                loss = loss + self.seg_loss(frame, hidden[0, seg_pos].float(), sample.masks,
                                            logs)
            loss = loss + self.colour_loss(frame, sample, logs)
            loss = loss + self.place_loss(frame, sample, logs)
        return loss

    def forward(self, item: Item):
        scene, sample = item
        if isinstance(sample, list):
            return self.forward_pack(scene, sample)
        m, cfg = self.model, self.cfg
        frame = self.frame(scene)
        regions = self.region_tokens(frame, sample)
        embeds, labels = m.prompt_embeds(frame, sample.question, regions, sample.answer)
        logs: dict = {}
        loss = self.sample_loss(frame, m.llm.hidden(embeds), labels, sample, logs)
        if cfg.stage == 1:
            logs['mse'] = self.alignment(frame)
            loss = loss + cfg.mse_weight * logs['mse']
        return loss, {k: _num(v) for k, v in logs.items()}

    def forward_pack(self, scene: CachedScene, samples: list[CachedSample]):
        """Several samples of one scene in one LLM forward (training.pack): the loss is the
        mean of their single-sample losses."""
        m, cfg = self.model, self.cfg
        frame = self.frame(scene)
        visual = m.visual_block(frame)
        n_prefix = m.llm.prefix_length(visual.shape[0])
        prefix, suffixes, regions = None, [], []
        for sample in samples:
            ids, labels = m.llm.prompt_ids(sample.question, visual.shape[0], sample.answer)
            pre, own = split_prompt(ids, labels, n_prefix)
            if prefix is not None and pre != prefix:
                raise ValueError('packed samples must share the system prompt + visual block')
            prefix = pre
            suffixes.append(own)
            r = self.region_tokens(frame, sample)
            if r is not None:
                regions.append(r)
        ids, labels = pack_ids(prefix, suffixes)
        labels_t = torch.tensor(labels)
        embeds = m.build_embeds(torch.tensor(ids), visual,
                                torch.cat(regions) if regions else None)
        mask, pos, spans = pack_layout(n_prefix, [len(x[0]) for x in suffixes], embeds.dtype)
        hidden = m.llm.hidden(embeds, attention_mask=mask, position_ids=pos)
        total = hidden.new_zeros(())
        sums: dict[str, list[float]] = {}
        for sample, (a, b) in zip(samples, spans):
            logs: dict = {}
            total = total + self.sample_loss(frame, hidden[:, a:b], labels_t[a:b], sample, logs)
            for k, v in logs.items():
                sums.setdefault(k, []).append(_num(v))
        loss = total / len(samples)
        out = {k: sum(v) / len(v) for k, v in sums.items()}
        if cfg.stage == 1:
            mse = self.alignment(frame)
            out['mse'] = float(mse)
            loss = loss + cfg.mse_weight * mse
        return loss, out


def build_stage(cfg: TrainConfig) -> nn.Module:
    """The stage module with its model: fresh (stage 0) or from cfg.init (stages 1-2)."""
    if cfg.stage == 0:
        model = build_model(get_config(cfg.model)) if not cfg.init else load_model(cfg.init)
        return Stage0(model.train(), cfg)
    model = load_model(cfg.init)
    if cfg.stage == 2 and getattr(model, 'lora_info', None) is None:
        apply_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
    elif cfg.stage == 2:  # adapters loaded from --init: their rank stays, the dropout follows cfg
        set_lora_dropout(model, cfg.lora_dropout)
    model.train()
    model.backbone.eval()
    return LanguageStage(model, cfg)
