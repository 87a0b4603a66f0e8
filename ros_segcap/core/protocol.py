"""The two interfaces the Pipeline is written against: a model family and a vision engine.

A model family (ros_segcap.models) gives a model that satisfies SegModel; an engine runs the
vision half of that model: the model's own torch modules, or exported graphs behind an
adapter (ros_segcap.backends). The Pipeline holds one of each and knows nothing else of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Optional, Protocol

import torch

from .frames import DecoderOutput, FrameFeatures, FrameObjects
from .guide import Guide
from .preprocess import Letterbox, PromptQueries


@dataclass(frozen=True)
class Request:
    """What [SEG] states answer: the question, its visual prompts (on the mask grid) and the
    answer's phrase of each state so far, in order (core.answer.parse_answer)."""

    question: Optional[str] = None
    prompts: Optional[PromptQueries] = None
    phrases: Optional[list[str]] = None


class Engine(Protocol):
    """Runs the vision half of a model: a frame's features, then queries against them."""

    backend: str  # 'torch', 'onnxruntime' or 'tensorrt'
    reason: str  # why this backend runs (requested, or what `auto` skipped)
    detail: str  # e.g. providers, plan precision

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """(1, 3, S, S) float RGB 0..255 -> the frame's features."""
        ...

    def decode(self, frame: FrameFeatures, query_feat: torch.Tensor, query_pos: torch.Tensor,
               restrict: Optional[torch.Tensor] = None) -> DecoderOutput:
        """Independent queries (1, N, D) against the frame's features (N may be 0)."""
        ...


class ModelConfig(Protocol):
    """What the runtime reads of a model's config.

    Optional attributes, read with these defaults when a config lacks them (core.preprocess
    InputGeometry): letterbox_placement 'top-left' | 'centre' ('top-left'), pad_rgb
    (MEAN_RGB), resize_interpolation 'area' | 'bicubic' ('area').
    """

    name: str
    image_size: int  # S: the model input side
    mask_size: int  # Hm: the side of the mask grid


class Generated(Protocol):
    """One answer: the text with its special tokens, whether it was cancelled, timings."""

    text: str
    cancelled: bool
    stats: dict[str, float]  # prefill_ms, decode_ms, ...


class SegModel(Protocol):
    """A grounded multimodal model: vision features -> visual block -> LLM -> [SEG] masks.

    A model may also offer `warm_up()`, which a long-running caller (the node) calls once
    after loading so that the first command does not pay for lazy set-up.
    """

    config: ModelConfig
    trained: bool  # False: the new parts are untrained (answers are noise)

    def frame(self, image: torch.Tensor, engine: Engine) -> FrameFeatures:
        """(1, 3, S, S) float RGB 0..255 -> the frame's features, ready for questions."""
        ...

    def region_tokens(self, frame: FrameFeatures, prompts: PromptQueries,
                      engine: Engine) -> torch.Tensor:
        """Visual prompts -> their <region> / <mark> token embeddings (N, H)."""
        ...

    def question_embeds(self, frame: FrameFeatures, question: str,
                        regions: Optional[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(prompt embeddings (1, T, H), length of the prefix shared by every question)."""
        ...

    def answer_guide(self, frame: FrameFeatures, question: str,
                     prompts: Optional[PromptQueries], box: Letterbox, engine: Engine, *,
                     presence: bool = True, places: bool = True) -> Optional[Guide]:
        """What the model's own heads fix in the answer (core.guide; None: nothing).
        presence: a plain request's first token (is the object there?); places: a
        prompted region's place words and which of two regions is nearer."""
        ...

    def generate(self, embeds: torch.Tensor, *, max_new_tokens: int, temperature: float,
                 on_text: Optional[Callable[[str], bool]],
                 on_seg: Optional[Callable[[torch.Tensor], None]], prefix_len: int,
                 prefix_key: Any, guide: Optional[Guide] = None) -> Generated:
        """Answer from the embeddings; on_seg(h) gets each [SEG] hidden state (H,);
        guide(tokens so far): the only tokens allowed next (None: any)."""
        ...

    def seg_mask_logits(self, frame: FrameFeatures, hidden: torch.Tensor, engine: Engine,
                        earlier: Optional[torch.Tensor] = None,
                        request: Optional[Request] = None) -> torch.Tensor:
        """[SEG] hidden states (n, H) -> mask logits (n, Hm, Wm) on the model input;
        earlier: the same answer's [SEG] states before them (k, H), whose objects a family
        may keep these from pointing at again; request: what the states answer, whose
        objects a family may pick by its own heads or the prompts."""
        ...

    def panoptic(self, frame: FrameFeatures) -> FrameObjects:
        """Every object the decoder keeps for the frame (no LLM): classes, scores, masks."""
        ...


class Exportable(Protocol):
    """What `segcap export` needs of a model: its two engine graphs (names: core.spec)."""

    config: ModelConfig

    def graphs(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(vision graph, seg graph) as torch modules over the model's own weights."""
        ...

    def exportable(self) -> ContextManager[None]:
        """A block within which the graphs trace to fast, portable ONNX."""
        ...
