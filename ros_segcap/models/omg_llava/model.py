"""OMGLlavaModel: ConvNeXt-L trunk -> OMG-Seg head -> perception prior + projectors ->
Llama (converted InternLM2) -> [SEG] -> the decoder again -> masks.

State-dict keys are the converted model directory's keys (convert.py writes them):
visual_encoder.backbone.* (ConvNeXtTrunk names), visual_encoder.panoptic_head.* (OMGSegHead),
visual_encoder.class_embeds [K, P, C] (the CLIP text embeddings file), projector.model.*,
projector_text2vision.model.*, llm.* (transformers LlamaForCausalLM names).

The vision half runs once per frame (`encode`, what TorchEngine and the vision graph run);
[SEG] queries reuse the frame's features (`decode_queries`, the seg graph).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
import time
from typing import Any, Callable, ContextManager, Optional

import torch
from torch import nn

from ros_segcap.core.frames import DecoderOutput, FrameFeatures, FrameObjects
from ros_segcap.core.guide import Guide, restrict
from ros_segcap.core.preprocess import PROMPT_KIND_IDS, Letterbox, PromptQueries
from ros_segcap.core.protocol import Engine, Request

from .config import OMGLlavaConfig
from .convnext import ConvNeXtTrunk
from .decoder import OMGSegHead, text_classifier
from .pixel_decoder import PixelDecoderOutput
from .prior import perception_prior, pixel_shuffle
from .projectors import Text2VisionProjector, VisionProjector
from .template import chat_prompt, encode_prompt, mask_padded_vocab, stop_ids
from .tokenizer import MARK_TOKEN, REGION_TOKEN, SEG_TOKEN


@dataclass
class Generation:
    """One answer (core.protocol.Generated)."""

    token_ids: list[int]
    text: str  # with special tokens, without the stop token
    cancelled: bool = False
    stats: dict[str, float] = field(default_factory=dict)


class VisualEncoder(nn.Module):
    """The frozen CLIP trunk, the OMG-Seg head and the class text embeddings."""

    def __init__(self, config: OMGLlavaConfig) -> None:
        super().__init__()
        self.backbone = ConvNeXtTrunk(config.trunk())
        self.panoptic_head = OMGSegHead(config.head())
        self.register_buffer('class_embeds', torch.zeros(
            config.num_classes, config.text_templates, config.clip_dim))


def restrict_boxes(restrict: torch.Tensor) -> torch.Tensor:
    """(N, Hm, Wm) bool -> (N, 4) relative x1 y1 x2 y2 of the True cells' bounding box.

    An empty restriction means the whole image. The decoder blocks attention outside it.
    """
    n, hm, wm = restrict.shape
    restrict = restrict | ~restrict.flatten(1).any(1)[:, None, None]
    rows, cols = restrict.any(2).long(), restrict.any(1).long()
    y0, x0 = rows.argmax(1), cols.argmax(1)
    y1, x1 = hm - rows.flip(1).argmax(1), wm - cols.flip(1).argmax(1)
    box = torch.stack([x0, y0, x1, y1], 1).float()
    return box / box.new_tensor([wm, hm, wm, hm])


class OMGLlavaModel(nn.Module):
    """The official OMG-LLaVA architecture behind core.protocol.SegModel and Exportable."""

    def __init__(self, config: OMGLlavaConfig, tokenizer: Any, llm: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.visual_encoder = VisualEncoder(config)
        self.projector = VisionProjector(config)
        self.projector_text2vision = Text2VisionProjector(config)
        self.llm = llm
        self.tokenizer = tokenizer
        self.trained = True  # set by the loader from the model directory
        self.decode_note = ''  # why the requested decode path is not used (family.prepare)
        self.seg_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        self.slot_ids = tuple(tokenizer.convert_tokens_to_ids(t)
                              for t in (REGION_TOKEN, MARK_TOKEN))
        self.stop = set(stop_ids(tokenizer))
        self._prefix: Optional[tuple[Any, torch.Tensor, Any]] = None  # key, embeds, KV cache

    @property
    def head(self) -> OMGSegHead:
        return self.visual_encoder.panoptic_head

    # ----- vision (what the engines run) ----------------------------------------------------

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB 0..255 -> CLIP-normalised."""
        mean = image.new_tensor(self.config.pixel_mean)[None, :, None, None]
        std = image.new_tensor(self.config.pixel_std)[None, :, None, None]
        return (image / 255.0 - mean) / std

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """(B, 3, S, S) float RGB 0..255 -> FrameFeatures (all decoder layers run)."""
        feats = self.visual_encoder.backbone(self.normalize(image.float()))
        memory = self.head.encode(feats)
        out = self.head(memory, text_classifier(self.visual_encoder.class_embeds))
        tokens = pixel_shuffle(feats[-1], self.config.shuffle).flatten(2).transpose(1, 2)
        return FrameFeatures(
            pixel_tokens=tokens, mask_features=memory.mask_features,
            memories=[m.flatten(2).transpose(1, 2) for m in memory.memories],
            memory_pos=list(memory.memory_pos), class_logits=out.class_logits,
            mask_logits=out.mask_logits, query_feat=out.query_feat,
            query_pos=out.query_pos.contiguous())

    def _memory(self, frame: FrameFeatures) -> PixelDecoderOutput:
        """The frame's cached features in the head's layout."""
        sides = [self.config.image_size // s for s in (32, 16, 8)]
        maps = tuple(m.transpose(1, 2).reshape(m.shape[0], -1, s, s)
                     for m, s in zip(frame.memories, sides))
        return PixelDecoderOutput(frame.mask_features, maps, tuple(frame.memory_pos))

    def _run_queries(self, frame: FrameFeatures, feat: torch.Tensor, pos: torch.Tensor,
                     boxes: Optional[torch.Tensor], seg: bool) -> DecoderOutput:
        """N queries (N, D) each its own batch element; seg: the [SEG] decoder copy."""
        head = self.head
        if seg and self.config.seg_decoder_copy:
            decoder, embed = head.transformer_decoder_llm, head.mask_embed_llm
        else:
            decoder, embed = head.transformer_decoder, head.mask_embed
        n = feat.shape[0]
        index = torch.zeros(n, dtype=torch.long, device=feat.device)
        query, normed, masks = head._decode(decoder, embed, self._memory(frame), feat[:, None],
                                            pos[:, None], index, boxes)
        text = text_classifier(self.visual_encoder.class_embeds)
        logits = head.classify(normed, masks, frame.mask_features[index], text)
        return DecoderOutput(class_logits=[logits.transpose(0, 1)],
                             mask_logits=[masks.transpose(0, 1)],
                             query_feat=query.transpose(0, 1), query_pos=pos[None])

    def decode_queries(self, frame: FrameFeatures, feat: torch.Tensor, pos: torch.Tensor,
                       restrict: Optional[torch.Tensor] = None) -> DecoderOutput:
        """[SEG]-decoder queries (1, N, D) against a frame; restrict (1, N, Hm, Wm) bool
        limits each query's attention to the bounding box of its True cells."""
        boxes = None if restrict is None else restrict_boxes(restrict[0])
        return self._run_queries(frame, feat[0], pos[0], boxes, seg=True)

    # ----- vision -> LLM ----------------------------------------------------------------------

    def visual_block(self, frame: FrameFeatures) -> torch.Tensor:
        """[pixel tokens ; separator ; kept queries' tokens] of one frame: (T_vis, H)."""
        s, g = self.config.image_size, self.config.token_grid
        pp = perception_prior(frame.mask_logits, frame.class_logits, frame.query_feat,
                              frame.query_pos, (s, s), (g, g))
        proj = self.projector.model
        pixel = proj.pixel_tokens(frame.pixel_tokens.float(), pp.prior.float())[0]
        keep = pp.keep[0].nonzero()[:, 0]  # query order, as the official valid_mask
        queries = torch.cat([frame.query_feat, frame.query_pos], -1)[0, keep]
        objects = proj.object_tokens(queries.float())
        return torch.cat([pixel, proj.seperate_embed.weight, objects], 0)

    def embed_ids(self, ids: list[int], regions: Optional[torch.Tensor]) -> torch.Tensor:
        """Token ids -> (T, H) embeddings with <region> / <mark> rows replaced by `regions`."""
        table = self.llm.get_input_embeddings()
        ids_t = torch.tensor(ids, dtype=torch.long, device=table.weight.device)
        slots = (ids_t == self.slot_ids[0]) | (ids_t == self.slot_ids[1])
        given = 0 if regions is None else regions.shape[0]
        if int(slots.sum()) != given:
            raise ValueError(f'the question has {int(slots.sum())} <region>/<mark> tokens but '
                             f'{given} visual prompts were given')
        embeds = table(ids_t.masked_fill(slots, 0))  # <mark> has no row
        if given:
            embeds = embeds.masked_scatter(slots[:, None].expand_as(embeds),
                                           regions.to(embeds.dtype))
        return embeds

    # ----- core.protocol.SegModel -------------------------------------------------------------

    def frame(self, image: torch.Tensor, engine: Engine) -> FrameFeatures:
        """(1, 3, S, S) float RGB 0..255 -> the frame's features from the engine."""
        return engine.encode(image)

    def region_tokens(self, frame: FrameFeatures, prompts: PromptQueries,
                      engine: Engine) -> torch.Tensor:
        """Visual prompts -> (N, H) tokens: each prompt's query through the main decoder
        (in torch: the engines' seg graph holds the [SEG] decoder), then query_proj + model.

        A mask prompt is the official region prompt: its query is a point query at the
        innermost point (the box centre, floored to a pixel as the official argmax is) and
        attends only within the region (restrict). A box prompt attends within its box and
        its mask; a point prompt within the box around its restrict window and its mask.
        """
        s, head = self.config.image_size, self.head
        kinds, boxes, restrict = prompts.kinds[0], prompts.boxes[0].float(), prompts.restrict[0]
        memory, centres = self._memory(frame), boxes[:, :2] * s
        index = torch.zeros_like(kinds)
        queries = centres.new_zeros(kinds.shape[0], 2 * self.config.dim)
        region = kinds == PROMPT_KIND_IDS['mask']
        if region.any():
            out = head.decode_regions(memory, restrict[region], centres[region].floor(),
                                      index[region], (s, s))
            queries[region] = torch.cat([out.query_feat, out.query_pos], -1)[:, 0]
        if (~region).any():
            xyxy = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
            box = (kinds == PROMPT_KIND_IDS['box'])[:, None]
            rel = torch.where(box, xyxy, restrict_boxes(restrict))[~region]
            out = head.decode_points(memory, centres[~region], index[~region], (s, s), rel * s)
            queries[~region] = torch.cat([out.query_feat, out.query_pos], -1)[:, 0]
        return self.projector.model.object_tokens(queries.float())

    def question_embeds(self, frame: FrameFeatures, question: str,
                        regions: Optional[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(prompt embeddings (1, T, H), tokens up to the end of the visual block)."""
        before, after = encode_prompt(self.tokenizer, chat_prompt(question))
        dtype = self.llm.get_input_embeddings().weight.dtype
        visual = self.visual_block(frame).to(dtype)
        parts = [self.embed_ids(before, None), visual, self.embed_ids(after, regions)]
        return torch.cat(parts, 0)[None], len(before) + visual.shape[0]

    def answer_guide(self, frame: FrameFeatures, question: str,
                     prompts: Optional[PromptQueries], box: Letterbox, engine: Engine, *,
                     presence: bool = True, places: bool = True) -> Optional[Guide]:
        """None (a free answer): this family has no colour head for a presence check and
        no table class for place words."""
        return None

    def seg_mask_logits(self, frame: FrameFeatures, hidden: torch.Tensor, engine: Engine,
                        earlier: Optional[torch.Tensor] = None,
                        request: Optional[Request] = None) -> torch.Tensor:
        """[SEG] states (n, H) -> mask logits (n, Hm, Wm) from the engine's seg decoder
        (each state decodes its own query: the answer's earlier states and the request do
        not matter)."""
        queries = self.projector_text2vision(hidden.float())
        d = self.config.dim
        out = engine.decode(frame, queries[None, :, :d], queries[None, :, d:])
        return out.mask_logits[-1][0]

    def panoptic(self, frame: FrameFeatures) -> FrameObjects:
        """Not supported yet: the OMG-Seg head's queries are not mapped to classes here."""
        raise NotImplementedError(f'panoptic mode is not supported yet for {self.config.name} '
                                  '(omg_llava family); use a segcap-tiny model')

    def generate(self, embeds: torch.Tensor, *, max_new_tokens: int, temperature: float,
                 on_text: Optional[Callable[[str], bool]] = None,
                 on_seg: Optional[Callable[[torch.Tensor], None]] = None, prefix_len: int = 0,
                 prefix_key: Any = None, guide: Optional[Guide] = None) -> Generation:
        """Greedy (temperature 0) or sampled answer; stops at <|im_end|> or </s>; guide(ids
        so far) gives the only tokens allowed next (core.guide; None: any).

        on_seg(h) gets the final-norm hidden state (H,) at each position whose input is
        [SEG]; padded head rows past the trained vocabulary are never sampled.
        """
        t0 = time.perf_counter()
        cache, start = self._prefix_cache(embeds, prefix_len, prefix_key)
        hidden, cache = self._forward(embeds[:, start:], cache)
        t1 = time.perf_counter()
        ids: list[int] = []
        text, cancelled = '', False
        for i in range(max_new_tokens):
            logits = mask_padded_vocab(self.llm.lm_head(hidden).float(), self.config.vocab_rows)
            if guide is not None:
                logits = restrict(logits, guide(ids))
            token = _pick(logits[0], temperature)
            if token in self.stop:
                break
            ids.append(token)
            full = self.tokenizer.decode(ids, skip_special_tokens=False)
            piece, text = full[len(text):], full
            if on_text is not None and piece and on_text(piece) is False:
                cancelled = True
                break
            hidden, cache = self._forward(self.embed_ids([token], None)[None], cache)
            if token == self.seg_id and on_seg is not None:
                on_seg(hidden[0].float())
        t2 = time.perf_counter()
        return Generation(ids, text, cancelled, {'prefill_ms': (t1 - t0) * 1e3,
                                                 'decode_ms': (t2 - t1) * 1e3,
                                                 'new_tokens': float(len(ids))})

    def _forward(self, embeds: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        """Embeddings (1, t, H) on the cache -> (last final-norm state (1, H), cache)."""
        out = self.llm.model(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
        return out.last_hidden_state[:, -1], out.past_key_values

    def _prefix_cache(self, embeds: torch.Tensor, prefix_len: int, key: Any
                      ) -> tuple[Any, int]:
        """(KV cache of the shared prefix, tokens it covers): reused for the same frame key."""
        if key is None or not 0 < prefix_len < embeds.shape[1]:
            return None, 0
        prefix = embeds[:, :prefix_len]
        if self._prefix is not None and self._prefix[0] == key and \
                torch.equal(self._prefix[1], prefix):
            return copy.deepcopy(self._prefix[2]), prefix_len
        _, cache = self._forward(prefix, None)
        self._prefix = (key, prefix, copy.deepcopy(cache))
        return cache, prefix_len

    # ----- core.protocol.Exportable -------------------------------------------------------

    def graphs(self) -> tuple[nn.Module, nn.Module]:
        """The vision and seg engine graphs (names: core.spec) over this model's weights."""
        from .graphs import SegGraph, VisionGraph
        return VisionGraph(self), SegGraph(self)

    def exportable(self) -> ContextManager[None]:
        """The graphs trace as they are: no stand-ins are needed."""
        return contextlib.nullcontext()


def _pick(logits: torch.Tensor, temperature: float) -> int:
    """Greedy at temperature 0, else a sample of softmax(logits / temperature)."""
    if temperature <= 0:
        return int(logits.argmax())
    return int(torch.multinomial((logits / temperature).softmax(-1), 1))


def build_llm(config: OMGLlavaConfig, device: str | torch.device = 'meta') -> nn.Module:
    """A LlamaForCausalLM of the config's sizes (on the meta device: no memory)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    with torch.device(device):
        return LlamaForCausalLM(LlamaConfig(**config.llama_kwargs())).eval()


def build_meta(config: OMGLlavaConfig, tokenizer: Any) -> OMGLlavaModel:
    """The architecture on the meta device: shapes only; the loader assigns the tensors."""
    llm = build_llm(config, 'meta')
    with torch.device('meta'):
        return OMGLlavaModel(config, tokenizer, llm).eval()
