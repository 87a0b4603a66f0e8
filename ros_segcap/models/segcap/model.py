"""SegCapModel: backbone -> pixel decoder -> OMG decoder -> prior + projectors -> LLM -> masks.

The vision half (`encode`) runs once per frame and its outputs are kept in FrameFeatures;
prompt queries and [SEG] queries reuse them (`decode_queries`) without re-encoding.
"""
from __future__ import annotations

from dataclasses import replace
from typing import ContextManager, Optional, Sequence
import weakref

import torch
from torch import nn

from ros_segcap.core.frames import DecoderOutput, FrameFeatures, FrameObjects
from ros_segcap.core.guide import Guide, Insert, starts_with
from ros_segcap.core.preprocess import Letterbox, PromptQueries, point_queries
from ros_segcap.core.protocol import Engine, Request

from .backbone import pixel_shuffle_tokens
from .config import MARK_TOKEN, REGION_TOKEN, STUFF_NAMES, SegCapConfig
from .decoder import PROMPT_KIND_IDS, OMGDecoder
from .encoder import PixelDecoder, build_backbone, normalize_image
from .guides import NEARER_QUESTION, TABLE, binary, nearer_start, place_words, table_mask
from .llm import Generation, LanguageModel, build_language_model, load_tokenizer
from .panoptic import frame_objects
from .presence import (clear_pick, first_tokens, object_scores, plain_target,
                       segments_the_prompt)
from .prior import foreground_queries, mask_pool, perception_prior, query_scores
from .projectors import PLACE_WORDS, Projectors
from .second_look import SecondLook, fuse_kinds, mask_boxes, square_crops
from .proposals import OUTSIDE, cell_points, component_at, new_masks, peak_cells


class SegCapModel(nn.Module):
    def __init__(self, config: SegCapConfig, *, tokenizer=None, lm: Optional[nn.Module] = None,
                 pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config, pretrained=pretrained and
                                       config.backbone_pretrained)
        self.pixel_decoder = PixelDecoder(config)
        self.decoder = OMGDecoder(config)
        self.projectors = Projectors(config)
        self.second_look = SecondLook(self.backbone, config.num_classes - len(STUFF_NAMES),
                                      config.second_look) if config.second_look else None
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config)
        if lm is None:
            lm = build_language_model(config, len(tokenizer), pretrained=pretrained)
        self.llm = LanguageModel(config, tokenizer, lm)
        if config.word_anchor:  # first token of ' word' for every class and colour name
            words = [n.replace('_', ' ') for n in config.class_names + config.colour_names]
            ids = [tokenizer(' ' + w, add_special_tokens=False)['input_ids'][0] for w in words]
            self.register_buffer('anchor_ids', torch.tensor(ids), persistent=False)
        if config.place_anchor:
            ids = [tokenizer(' ' + w, add_special_tokens=False)['input_ids'][0]
                   for w in PLACE_WORDS]
            self.register_buffer('place_ids', torch.tensor(ids), persistent=False)
        table = lm.get_input_embeddings().weight
        if self.projectors.token_gain is not None and not table.is_meta:
            with torch.no_grad():  # start at the word embeddings' scale
                self.projectors.token_gain.fill_(float(table.float().pow(2).mean().sqrt()))
        self.trained = False  # set by weights.load_model from the model directory
        self._kept_memo = None  # (weak reference to a frame, kept_probs of it)

    # ----- vision -------------------------------------------------------------------------

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """(B, 3, S, S) float RGB 0..255 -> FrameFeatures."""
        feats = self.backbone.forward_features(normalize_image(self.config, image))
        return self.encode_features(feats)

    def encode_features(self, feats: dict[str, torch.Tensor]) -> FrameFeatures:
        """`encode` after the backbone: {'s8', 's16', 's32'} backbone maps -> FrameFeatures."""
        tokens = pixel_shuffle_tokens(feats['s32'], self.config.shuffle)  # (B, T, 4C)
        mask_features, memories, memory_pos = self.pixel_decoder(feats)
        feat, pos = self.decoder.learnable_queries(feats['s32'].shape[0])
        out = self.decoder(feat, pos, mask_features, memories, memory_pos)
        return FrameFeatures(tokens, mask_features, memories, memory_pos,
                             out.class_logits[-1], out.mask_logits[-1], out.query_feat,
                             out.query_pos, self.fine_features(feats))

    def fine_features(self, feats: dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """Stride-8 backbone features on the mask grid (None without fine_pool)."""
        if not self.config.fine_pool:
            return None
        fine, hm = feats['s8'], self.config.mask_size
        if fine.shape[-1] != hm:
            fine = nn.functional.interpolate(fine, size=(hm, hm), mode='bilinear',
                                             align_corners=False)
        return fine

    def anchored(self, tokens: torch.Tensor, class_logits: torch.Tensor,
                 mask_logits: Optional[torch.Tensor] = None,
                 pooled: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Word anchors: tokens (N, H) + expected class and colour word embeddings
        (word_anchor) + place word embeddings (place_anchor).

        class_logits (N, K+1) from the decoder (void dropped and renormalised); colour from
        projectors.colour_head on the tokens (colour_from_pool: on their pooled fine features
        (N, C8)); place weights from projectors.place_head on the places of mask_logits.
        """
        if self.config.word_anchor:
            words = self.llm.embed(self.anchor_ids).detach()  # (K + n_colours, H), frozen
            k = self.config.num_classes
            p_class = class_logits[..., :k].softmax(-1)
            p_colour = self.projectors.colour_logits(tokens, pooled).softmax(-1).to(tokens.dtype)
            tokens = tokens + p_class @ words[:k] + p_colour @ words[k:]
        if self.config.place_anchor:
            if mask_logits is None:
                raise ValueError('this model anchors its tokens by place: pass mask_logits')
            weights = self.projectors.place_weights(mask_places(mask_logits))
            tokens = tokens + weights.to(tokens.dtype) @ \
                self.llm.embed(self.place_ids).detach().to(tokens.dtype)
        return tokens

    def pooled(self, frame: FrameFeatures, mask_logits: torch.Tensor) -> Optional[torch.Tensor]:
        """Fine features pooled under masks (1, N, Hm, Wm) -> (N, C8); None without fine_pool."""
        if not self.config.fine_pool:
            return None
        if frame.fine is None:
            raise ValueError(f'{self.config.name} pools fine features into its object tokens '
                             'but the frame has none (an engine exported before fine_pool?)')
        return mask_pool(frame.fine, mask_logits)[0]

    def decode_queries(self, frame: FrameFeatures, feat: torch.Tensor, pos: torch.Tensor,
                       restrict: Optional[torch.Tensor] = None) -> DecoderOutput:
        """Run independent queries (B, N, D) against a frame's cached features."""
        b = feat.shape[0]
        mem = [m.expand(b, -1, -1) for m in frame.memories]
        mf = frame.mask_features.expand(b, -1, -1, -1)
        return self.decoder(feat, pos, mf, mem, frame.memory_pos, restrict, independent=True)

    def decode_prompts(self, frame: FrameFeatures, kinds: torch.Tensor, boxes: torch.Tensor,
                       restrict: torch.Tensor) -> DecoderOutput:
        """Prompt queries: kinds (1, N), boxes (1, N, 4) cxcywh, restrict (1, N, Hm, Wm)."""
        feat, pos = self.decoder.prompt_queries(kinds, boxes)
        return self.decode_queries(frame, feat, pos, restrict)

    def visual_prompts(self, frame: FrameFeatures, q: PromptQueries, decode=None
                       ) -> DecoderOutput:
        """Decoder outputs of the user's visual prompts, for their <region> / <mark> tokens.

        A point that falls inside a kept object mask of the frame (learnable query or
        proposal) becomes that object: its query, class and mask replace the point query's.
        The frame's queries attend to the whole image and were kept for their mask; a point
        query sees only a small window, so its mask often misses a small object or spills
        onto a look-alike. Boxes and masks keep their own queries. With a second look
        (config.second_look) their kinds are read again from crops (looked_again). So are
        snapped points' with prompt_pick; without it a snapped point keeps its object's
        token, which the [SEG] of 'segment <mark>' points back at. decode: as in
        with_proposals.
        """
        out = (decode or self.decode_prompts)(frame, q.kinds, q.boxes, q.restrict)
        snapped = self._snapped_points(frame, q)
        if snapped:
            rows = torch.tensor(list(snapped), device=out.query_feat.device)
            src = torch.tensor(list(snapped.values()), device=out.query_feat.device)

            def put(mine: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
                mine = mine.clone()
                mine[:, rows] = frames[:, src].to(mine.dtype)
                return mine

            out = DecoderOutput(
                class_logits=out.class_logits[:-1] + [put(out.class_logits[-1],
                                                          frame.class_logits)],
                mask_logits=out.mask_logits[:-1] + [put(out.mask_logits[-1], frame.mask_logits)],
                query_feat=put(out.query_feat, frame.query_feat),
                query_pos=put(out.query_pos, frame.query_pos))
        look = [i for i in range(q.kinds.shape[1])
                if self.config.prompt_pick or i not in snapped]
        if frame.image is None or not look:
            return out
        last = out.class_logits[-1].clone()
        last[0, look] = self.looked_again(frame, last[0, look], out.mask_logits[-1][0, look])
        return replace(out, class_logits=out.class_logits[:-1] + [last])

    def _snapped_points(self, frame: FrameFeatures, q: PromptQueries) -> dict[int, int]:
        """{prompt index: frame query} of the point prompts that fall on a kept object."""
        keep = self.kept_queries(frame)
        hm = self.config.mask_size
        snapped = {}
        for i in (q.kinds[0] == PROMPT_KIND_IDS['point']).nonzero()[:, 0].tolist():
            x, y = q.boxes[0, i, :2].tolist()
            row, col = min(hm - 1, int(y * hm)), min(hm - 1, int(x * hm))
            at = frame.mask_logits[0, keep, row, col]
            if at.numel() and float(at.max()) >= 0:
                snapped[i] = int(keep[at.argmax()])
        return snapped

    def with_proposals(self, frame: FrameFeatures, decode=None) -> FrameFeatures:
        """The frame with its proposals' queries appended (proposals > 0; else the frame).

        decode(frame, kinds, boxes, restrict) runs prompt queries (default decode_prompts;
        the Pipeline passes its engines'). See proposals.py.
        """
        limit = self.config.proposals
        if not limit:
            return frame
        keep = self.kept_queries(frame)
        kept = frame.mask_logits[0, keep] >= 0
        cells = peak_cells(self.decoder.centre_head(frame.mask_features)[0], limit)
        if not cells:
            return frame
        hm = self.config.mask_size
        q = point_queries(cell_points(cells, hm), hm)
        dev = frame.mask_logits.device
        out = (decode or self.decode_prompts)(frame, q.kinds.to(dev), q.boxes.to(dev),
                                              q.restrict.to(dev))
        logits = out.mask_logits[-1][0]
        parts = torch.stack([component_at(m >= 0, c) for m, c in zip(logits, cells)])
        chosen = new_masks(parts, kept)
        if not chosen:
            return frame
        idx = torch.tensor(chosen, device=dev)
        taken = parts[idx].any(0)  # the proposals' pixels leave the other masks
        old_masks = torch.where(taken, frame.mask_logits.clamp(max=OUTSIDE), frame.mask_logits)
        part_logits = torch.where(parts, logits, logits.clamp(max=OUTSIDE))[None]

        def cat(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            return torch.cat([old, new[:, idx].to(old.dtype)], 1)

        return replace(frame, class_logits=cat(frame.class_logits, out.class_logits[-1]),
                       mask_logits=cat(old_masks, part_logits),
                       query_feat=cat(frame.query_feat, out.query_feat),
                       query_pos=cat(frame.query_pos, out.query_pos))

    def decode_seg(self, frame: FrameFeatures, hidden: torch.Tensor) -> DecoderOutput:
        """[SEG] hidden states (N, H) -> decoder output for N queries (batch 1)."""
        return self.decode_queries(frame, *self.projectors.to_queries(hidden[None]))

    # ----- vision -> LLM ------------------------------------------------------------------

    def visual_block(self, frame: FrameFeatures) -> torch.Tensor:
        """[pixel tokens ; separator ; object tokens] of one frame: (T_vis, H)."""
        prior = perception_prior(frame.class_logits, frame.mask_logits, frame.query_feat,
                                 frame.query_pos, self.config.token_grid)
        pixel = self.projectors.pixel_tokens(frame.pixel_tokens, prior)[0]  # (T, H)
        sep = self.projectors.separator[None]
        return torch.cat([pixel, sep, self.object_rows(frame)[1]], 0)

    def kept_queries(self, frame: FrameFeatures) -> torch.Tensor:
        """Indices of the queries that become object tokens, in query order (N_obj,)."""
        fg = foreground_queries(frame.class_logits, frame.mask_logits)[0]
        order = torch.argsort(query_scores(frame.class_logits)[0], descending=True)
        keep = order[fg[order]][:self.config.max_object_tokens]
        return keep.sort().values  # stable query order

    def object_rows(self, frame: FrameFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept query indices (N_obj,), their object tokens (N_obj, H))."""
        keep = self.kept_queries(frame)
        pooled = self.pooled(frame, frame.mask_logits[:, keep])
        objects = self.projectors.object_tokens(frame.query_feat[0, keep],
                                                frame.query_pos[0, keep], pooled)
        return keep, self.anchored(objects, frame.class_logits[0, keep],
                                   frame.mask_logits[0, keep], pooled)

    def query_colour_logits(self, frame: FrameFeatures, idx: torch.Tensor) -> torch.Tensor:
        """Colour-word logits (N, n_colours) of the frame's queries idx (N,) (word_anchor)."""
        return self.colour_logits(frame, frame.query_feat[0, idx], frame.query_pos[0, idx],
                                  frame.mask_logits[:, idx])

    def colour_logits(self, frame: FrameFeatures, query_feat: torch.Tensor,
                      query_pos: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """Colour-word logits (N, n_colours) of decoded queries: feat, pos (N, D), their
        mask logits (1, N, Hm, Wm) on this frame."""
        pooled = self.pooled(frame, mask_logits)
        tokens = None if self.config.colour_from_pool else self.projectors.object_tokens(
            query_feat, query_pos, pooled)  # pooled is all it reads
        return self.projectors.colour_logits(tokens, pooled)

    def seg_pointer(self, frame: FrameFeatures, hidden: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """seg_pointer: [SEG] states (G, H) -> (scores (G, N_obj), kept query indices)."""
        keep, tokens = self.object_rows(frame)
        places = mask_places(frame.mask_logits[0, keep])
        return self.projectors.pointer_logits(hidden.to(tokens.dtype), tokens, places), keep

    def seg_masks(self, frame: FrameFeatures, hidden: torch.Tensor,
                  named: Optional[Sequence[Optional[torch.Tensor]]] = None) -> torch.Tensor:
        """[SEG] states (G, H) of one answer, in order -> mask logits (G, Hm, Wm): with
        seg_pointer, the mask of the object each state points at among those the answer has
        not pointed at yet (distinct_picks; all -inf-like when the frame has no object),
        else a decoded query. named: per state, the kept objects' scores for its phrase (or
        None), which pick the object instead when clear (plain_pick)."""
        if not self.config.seg_pointer:
            return self.decode_seg(frame, hidden).mask_logits[-1][0]
        scores, keep = self.seg_pointer(frame, hidden)
        if keep.numel() == 0:
            return frame.mask_logits.new_full((hidden.shape[0],) + frame.mask_logits.shape[-2:],
                                              -100.0)
        picks = distinct_picks(scores, named, self.config.plain_pick)
        return frame.mask_logits[0, keep[picks]]

    def prompt_tokens(self, prompt_out: DecoderOutput,
                      frame: Optional[FrameFeatures] = None) -> torch.Tensor:
        """Object tokens (N, H) of prompt queries, for the <region> / <mark> positions.

        Models with fine_pool need the frame the prompts were decoded on.
        """
        pooled = None
        if self.config.fine_pool:
            if frame is None:
                raise ValueError('prompt_tokens needs the frame: this model pools its fine '
                                 'features under the prompt masks')
            pooled = self.pooled(frame, prompt_out.mask_logits[-1])
        tokens = self.projectors.object_tokens(prompt_out.query_feat[0],
                                               prompt_out.query_pos[0], pooled)
        return self.anchored(tokens, prompt_out.class_logits[-1][0],
                             prompt_out.mask_logits[-1][0], pooled)

    def build_embeds(self, ids: torch.Tensor, visual: torch.Tensor,
                     region_tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ids (T,) with placeholders -> embeddings (1, T, H) with visual / region rows in place.

        Raises ValueError naming both counts when placeholders and tokens disagree.
        """
        embeds = self.llm.embed(ids[None])  # (1, T, H)
        image_pos = ids == self.llm.image_id
        n_ph = int(image_pos.sum())
        if n_ph != visual.shape[0]:
            raise ValueError(f'visual block has {visual.shape[0]} tokens but the prompt has '
                             f'{n_ph} image placeholders')
        embeds = embeds.masked_scatter(image_pos[None, :, None].expand_as(embeds),
                                       visual.to(embeds.dtype))
        ids_region = (ids == self.llm.special_ids[REGION_TOKEN]) | \
            (ids == self.llm.special_ids[MARK_TOKEN])
        n_regions = int(ids_region.sum())
        n_given = 0 if region_tokens is None else region_tokens.shape[0]
        if n_regions != n_given:
            raise ValueError(f'the question has {n_regions} <region>/<mark> tokens but '
                             f'{n_given} visual prompts were given')
        if n_regions:
            embeds = embeds.masked_scatter(ids_region[None, :, None].expand_as(embeds),
                                           region_tokens.to(embeds.dtype))
        return embeds

    def prompt_embeds(self, frame: FrameFeatures, question: str,
                      region_tokens: Optional[torch.Tensor] = None,
                      answer: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (1, T, H) and labels (T,) for a question (and a training answer)."""
        visual = self.visual_block(frame)
        ids, labels = self.llm.prompt_ids(question, visual.shape[0], answer)
        device = visual.device
        ids_t = torch.tensor(ids, device=device)
        return self.build_embeds(ids_t, visual, region_tokens), torch.tensor(labels, device=device)

    # ----- the runtime protocol (ros_segcap.core.protocol.SegModel) -----------------------

    def frame(self, image: torch.Tensor, engine: Engine) -> FrameFeatures:
        """(1, 3, S, S) float RGB 0..255 -> FrameFeatures (with proposals, for such models;
        with the image, for models with a second look)."""
        frame = self.with_proposals(engine.encode(image), self._prompt_decoder(engine))
        return frame if self.second_look is None else replace(frame, image=image)

    def looked_again(self, frame: FrameFeatures, class_logits: torch.Tensor,
                     mask_logits: torch.Tensor) -> torch.Tensor:
        """Class logits (N, K+1) of queries with masks (N, Hm, Wm) on the frame, their kinds
        joined with the second look's (second_look.py) where the best class other than
        void is a thing; unchanged for a frame without its image (no second look)."""
        first = len(STUFF_NAMES)
        rows = (class_logits[:, :-1].argmax(-1) >= first).nonzero()[:, 0]
        image = frame.image
        if self.second_look is None or image is None or not len(rows):
            return class_logits
        masks = mask_logits[rows] >= 0
        stride = image.shape[-1] // masks.shape[-1]
        boxes = mask_boxes(masks, stride)
        size = self.second_look.size
        crops = normalize_image(self.config, square_crops(image.float(), boxes, size))
        crop_masks = square_crops(masks[:, None].float(), boxes / stride, size)
        kinds = self.second_look(self.backbone, crops, crop_masks)
        out = class_logits.clone()
        out[rows] = fuse_kinds(class_logits[rows], kinds, first, kinds.shape[-1])
        return out

    def region_tokens(self, frame: FrameFeatures, prompts: PromptQueries,
                      engine: Engine) -> torch.Tensor:
        """Visual prompts -> their object tokens (N, H) for the <region> / <mark> places."""
        out = self.visual_prompts(frame, prompts, self._prompt_decoder(engine))
        return self.prompt_tokens(out, frame)

    def answer_guide(self, frame: FrameFeatures, question: str,
                     prompts: Optional[PromptQueries], box: Letterbox, engine: Engine, *,
                     presence: bool = True, places: bool = True) -> Optional[Guide]:
        """What the heads fix in the answer (guides.py; None: nothing): without visual
        prompts, the presence check's first token; with one, the place words after "at";
        with two and "which ... closer", the start naming the nearer region."""
        n = 0 if prompts is None else prompts.kinds.shape[1]
        if n == 0:
            start = self.answer_start(frame, question) if presence else None
            return starts_with(start) if start else None
        if not places or TABLE not in self.config.class_names or n > 2:
            return None

        def decoded() -> DecoderOutput:
            return self.visual_prompts(frame, prompts, self._prompt_decoder(engine))

        if n == 1:
            def place() -> list[int]:
                keep = self.kept_queries(frame)
                table = table_mask(frame.class_logits[0, keep], frame.mask_logits[0, keep],
                                   self.config.class_names)
                words = place_words(binary(decoded().mask_logits[-1][0, 0]), table, box)
                return self.llm.encode(f' {words}') if words else []
            return Insert(place, after=self.llm.encode(' at')[0])
        if not (self.config.word_anchor and NEARER_QUESTION.search(question)):
            return None  # (word_anchor: the colour head that names the nearer region)
        out = decoded()
        colours = self.colour_logits(frame, out.query_feat[0], out.query_pos[0],
                                     out.mask_logits[-1])
        start = nearer_start(out, colours, self.config.class_names, self.config.colour_names,
                             self.llm.encode)
        return Insert(lambda: start) if start else None

    def answer_start(self, frame: FrameFeatures, question: str) -> Optional[list[int]]:
        """The tokens the answer may start with, from the presence check of a plain request
        ('segment the red cup', 'segment the cup': presence.py, config.presence_check);
        None: any."""
        absent_below, present_above = self.config.presence_check
        scored = self.plain_scores(frame, question) if absent_below or present_above else None
        if scored is None:
            return None
        scores, target = scored[1], scored[2]
        score = float(scores.max()) if scores.shape[0] else 0.0
        return first_tokens(score, absent_below, present_above, self.llm.absent_id,
                            self.llm.phrase_id, with_colour=target[0] is not None)

    def plain_scores(self, frame: FrameFeatures, question: str
                     ) -> Optional[tuple[torch.Tensor, torch.Tensor, tuple[Optional[int], int]]]:
        """(kept query indices (N,), their P(kind) x P(colour) (N,), (colour, kind)) for a
        plain request (presence.py); None for any other question."""
        target = plain_target(question, self.config.colour_names, self.config.class_names)
        if target is None:
            return None
        keep, class_probs, colour_probs = self.kept_probs(frame)
        return keep, object_scores(class_probs, colour_probs, *target), target

    def kept_probs(self, frame: FrameFeatures
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(kept query indices (N,), their class probabilities (N, K+1) read again by the
        second look, their colour probabilities (N, C)); the last frame's are remembered, so
        that the presence check and plain_pick pay for one second look."""
        last = self._kept_memo
        if last is not None and last[0]() is frame:
            return last[1]
        keep = self.kept_queries(frame)
        colour_probs = self.query_colour_logits(frame, keep).float().softmax(-1)
        class_probs = self.looked_again(frame, frame.class_logits[0, keep],
                                        frame.mask_logits[0, keep]).float().softmax(-1)
        self._kept_memo = (weakref.ref(frame), (keep, class_probs, colour_probs))
        return keep, class_probs, colour_probs

    def named_scores(self, frame: FrameFeatures, phrases: Optional[Sequence[str]]
                     ) -> Optional[list[Optional[torch.Tensor]]]:
        """Per [SEG] phrase ('the red cup', 'yellow apple'), the kept objects' P(kind) x
        P(colour) (N_obj,) when it names one colour and kind of the vocabulary, else None
        (presence.plain_target); None for no phrases or without config.plain_pick."""
        if not phrases or not self.config.plain_pick[0]:
            return None
        out: list[Optional[torch.Tensor]] = []
        for phrase in phrases:
            scored = self.plain_scores(frame, phrase) if phrase else None
            out.append(None if scored is None else scored[1])
        return out if any(x is not None for x in out) else None

    def question_embeds(self, frame: FrameFeatures, question: str,
                        regions: Optional[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(prompt embeddings (1, T, H), tokens up to the end of the visual block)."""
        visual = self.visual_block(frame)
        ids, _ = self.llm.prompt_ids(question, visual.shape[0])
        embeds = self.build_embeds(torch.tensor(ids, device=visual.device), visual, regions)
        return embeds, ids.index(self.llm.image_id) + visual.shape[0]

    def generate(self, embeds: torch.Tensor, **kwargs) -> Generation:
        """LanguageModel.generate (the keyword arguments of SegModel.generate)."""
        return self.llm.generate(embeds, **kwargs)

    def seg_mask_logits(self, frame: FrameFeatures, hidden: torch.Tensor, engine: Engine,
                        earlier: Optional[torch.Tensor] = None,
                        request: Optional[Request] = None) -> torch.Tensor:
        """[SEG] states (n, H) -> mask logits (n, Hm, Wm): the pointed object's mask with
        seg_pointer (no decoder run; not one that the answer's earlier [SEG] states (k, H)
        took, seg_masks), else the [SEG] queries decoded by the engine. A [SEG] whose phrase
        (request.phrases: one per earlier and new state) names a colour and a kind takes
        the object the heads score best for it when they are clear (plain_pick); the first
        [SEG] of 'segment <mark>' takes the prompt's own mask (prompt_mask)."""
        request = request or Request()
        k = 0 if earlier is None else earlier.shape[0]
        own = self.prompt_mask(frame, request.question, request.prompts, engine) \
            if k == 0 else None
        if self.config.seg_pointer:
            states = hidden if k == 0 else torch.cat([earlier, hidden])
            named = self.named_scores(frame, request.phrases)
            masks = self.seg_masks(frame, states, named)[k:]
        else:
            feat, pos = self.projectors.to_queries(hidden[None])
            masks = engine.decode(frame, feat, pos).mask_logits[-1][0]
        if own is None:
            return masks
        return torch.cat([own[None].to(masks.dtype), masks[1:]])

    def prompt_mask(self, frame: FrameFeatures, question: Optional[str],
                    prompts: Optional[PromptQueries], engine: Engine) -> Optional[torch.Tensor]:
        """Mask logits (Hm, Wm) of the one visual prompt of a request that only asks to
        segment it ('Please segment <mark>.', presence.segments_the_prompt) with
        config.prompt_pick: the kept object a point falls on, else the prompt's decoded
        query (visual_prompts); None otherwise."""
        if not (self.config.prompt_pick and question and prompts is not None
                and prompts.kinds.shape[1] == 1 and segments_the_prompt(question)):
            return None
        return self.visual_prompts(frame, prompts, self._prompt_decoder(engine)
                                   ).mask_logits[-1][0, 0]

    def panoptic(self, frame: FrameFeatures) -> FrameObjects:
        """The frame's kept queries (its object tokens) whose best class is not void."""
        return frame_objects(self.kept_queries(frame), frame, self.config.class_names)

    def warm_up(self) -> None:
        """Build the LLM's lean decoder now (a node calls this at configure)."""
        if self.llm.decode_path != 'reference':
            self.llm.fast()

    def _prompt_decoder(self, engine: Engine):
        """decode(frame, kinds, boxes, restrict) of prompt queries on `engine`."""
        def decode(frame: FrameFeatures, kinds: torch.Tensor, boxes: torch.Tensor,
                   restrict: torch.Tensor) -> DecoderOutput:
            feat, pos = self.decoder.prompt_queries(kinds, boxes)
            return engine.decode(frame, feat, pos, restrict)
        return decode

    # ----- export (ros_segcap.core.protocol.Exportable) ----------------------------------

    def graphs(self) -> tuple[nn.Module, nn.Module]:
        """The vision and seg engine graphs as torch modules (names: core.spec)."""
        from .graphs import SegGraph, VisionGraph
        return VisionGraph(self), SegGraph(self)

    def exportable(self) -> ContextManager[None]:
        """Within the block, the graphs use their trace-friendly stand-ins (traceable.py)."""
        from .traceable import exportable
        return exportable(self)

    def trainable_prefixes(self) -> Sequence[str]:
        return ('pixel_decoder.', 'decoder.', 'projectors.')


def build_model(config: SegCapConfig, *, pretrained: bool = True,
                device: str | torch.device = 'cpu') -> SegCapModel:
    """A SegCapModel with its asset weights (backbone, LLM) and untrained new parts."""
    return SegCapModel(config, pretrained=pretrained).to(device).eval()


def build_meta_model(config: SegCapConfig) -> SegCapModel:
    """The architecture of `config` on the meta device: shapes only, no weights.

    For sizes registered as meta-only (use='meta'): parameters take no memory and
    forward passes on meta tensors propagate shapes. Only the tokenizer is read from disk.
    """
    tokenizer = load_tokenizer(config)
    lm = build_language_model(config, len(tokenizer), pretrained=False, device='meta')
    with torch.device('meta'):
        return SegCapModel(config, tokenizer=tokenizer, lm=lm, pretrained=False).eval()


def mask_places(mask_logits: torch.Tensor) -> torch.Tensor:
    """(N, Hm, Wm) soft masks -> (N, 3): centre x, centre y (0..1) and sqrt of area share."""
    w = mask_logits.float().sigmoid()
    hm, wm = w.shape[-2:]
    mass = w.flatten(1).sum(1).clamp(min=1e-3)
    ys = torch.linspace(0, 1, hm, device=w.device)
    xs = torch.linspace(0, 1, wm, device=w.device)
    cx = (w.sum(1) * xs).sum(1) / mass
    cy = (w.sum(2) * ys).sum(1) / mass
    return torch.stack([cx, cy, (mass / (hm * wm)).sqrt()], -1).to(mask_logits.dtype)


def distinct_picks(scores: torch.Tensor,
                   named: Optional[Sequence[Optional[torch.Tensor]]] = None,
                   clear: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Pointer scores (G, N) of one answer's [SEG]s -> the object index of each (G,): in
    order, each takes its best object among those not taken yet, and any object once all
    are taken. Two phrases of one answer name two objects ('the red cup and the red cup'
    are both cups; a caption's second 'brown pear' is not the first one). named: per [SEG],
    the objects' scores for its phrase (N,) or None; the best free one is taken instead
    when it is clear (presence.clear_pick with clear = (min_score, min_ratio))."""
    taken = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
    picks = []
    for g, row in enumerate(scores):
        free = row.masked_fill(taken, -torch.inf) if not bool(taken.all()) else row
        pick = int(free.argmax())
        heads = named[g] if named is not None and g < len(named) else None
        if heads is not None and not bool(taken.all()):
            best = clear_pick(heads.masked_fill(taken, 0.0), *clear)
            pick = pick if best is None else best
        taken[pick] = True
        picks.append(pick)
    return torch.tensor(picks, dtype=torch.long, device=scores.device)
