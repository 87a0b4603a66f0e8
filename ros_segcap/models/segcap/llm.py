"""The LLM: tokenizer with the special tokens, chat template, visual-block ids, generation.

Generation is a lean greedy / sampling loop over the inner decoder with a KV cache. Each
generated [SEG] token is fed back once more, and its last-layer hidden state at that
position (the same position the training loss sees) is captured for mask decoding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import re
import sys
import time
from typing import Callable, Optional, TYPE_CHECKING

import torch
from torch import nn

from ros_segcap.core.guide import Guide, restrict
from ros_segcap.core.tokens import VISUAL_PROMPT_TOKENS, refuse_control_tokens

from .config import (DECODE_PATHS, DEFAULT_DECODE_PATH, IMAGE_TOKEN, P_OPEN, SPECIAL_TOKENS,
                     SEG_TOKEN, SegCapConfig)

if TYPE_CHECKING:
    from .fastlm import FastLlama

_VISUAL_WORDS = re.compile('(' + '|'.join(map(re.escape, VISUAL_PROMPT_TOKENS)) + ')')


@dataclass
class Generation:
    """What one generation produced."""

    token_ids: list[int]
    text: str  # with special tokens
    seg_hidden: torch.Tensor  # (n_seg, H) last-layer hidden state at each [SEG]
    cancelled: bool = False
    stats: dict[str, float] = field(default_factory=dict)


def load_tokenizer(config: SegCapConfig):
    """The SmolLM2 tokenizer (also used by random test LLMs) with our special tokens added."""
    from transformers import AutoTokenizer

    from .assets import llm_dir

    name = config.llm if config.llm != 'random' else 'smollm2-135m-instruct'
    tok = AutoTokenizer.from_pretrained(llm_dir(name), local_files_only=True)
    tok.add_tokens(list(SPECIAL_TOKENS) + [IMAGE_TOKEN], special_tokens=True)
    return tok


def build_language_model(config: SegCapConfig, vocab_size: int, pretrained: bool = True,
                         device: str | torch.device = 'cpu') -> nn.Module:
    """A LlamaForCausalLM: the converted asset (pretrained) or random from config.llm_config."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from .assets import llm_dir

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    if config.llm == 'random' or not pretrained:
        if config.llm_config is None:  # the asset's architecture with random weights
            cfg = LlamaConfig.from_pretrained(llm_dir(config.llm))
            cfg.vocab_size = vocab_size
        else:  # llm_config may name its own vocab (omg-llava-7b); cover the tokenizer too
            kwargs = dict(config.llm_config)
            kwargs['vocab_size'] = max(vocab_size, kwargs.get('vocab_size', 0))
            cfg = LlamaConfig(**kwargs)
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    else:
        model = LlamaForCausalLM.from_pretrained(llm_dir(config.llm), dtype=torch.float32,
                                                 local_files_only=True)
        old = model.get_input_embeddings().weight.shape[0]
        if vocab_size > old:
            # New rows start at the mean embedding (their own rows, trained in stages 1-2).
            emb = model.get_input_embeddings().weight
            mean, std = emb.detach().mean(0), emb.detach().std(0)
            model.resize_token_embeddings(vocab_size, mean_resizing=False)
            # Mean row plus a small fixed offset, so the new tokens start distinguishable
            # (tied heads would otherwise give them identical logits) and deterministic.
            g = torch.Generator().manual_seed(0)
            noise = torch.randn(vocab_size - old, emb.shape[1], generator=g) * std * 0.1
            with torch.no_grad():
                model.get_input_embeddings().weight[old:] = mean + noise
                if not model.config.tie_word_embeddings:
                    model.get_output_embeddings().weight[old:] = 0.0
    if model.config.hidden_size != config.llm_hidden:
        raise ValueError(f'config {config.name}: llm_hidden={config.llm_hidden} but the LLM '
                         f'has hidden size {model.config.hidden_size}')
    return model.eval()


class LanguageModel(nn.Module):
    """Causal LM + tokenizer + the ids of our special tokens."""

    def __init__(self, config: SegCapConfig, tokenizer, lm: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.lm = lm
        ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS) + [IMAGE_TOKEN])
        self.special_ids = dict(zip(list(SPECIAL_TOKENS) + [IMAGE_TOKEN], ids))
        self.seg_id = self.special_ids[SEG_TOKEN]
        if ids != list(range(self.seg_id, self.seg_id + len(ids))):
            raise ValueError(f'special tokens must have consecutive new ids, got {ids}')
        self.image_id = self.special_ids[IMAGE_TOKEN]
        # first token of the answer for an absent object ('There is no ...') and of a phrase
        self.absent_id = tokenizer('There is no', add_special_tokens=False)['input_ids'][0]
        self.phrase_id = self.special_ids[P_OPEN]
        end = tokenizer.convert_tokens_to_ids('<|im_end|>')
        self.stop_ids = {i for i in (tokenizer.eos_token_id, end) if isinstance(i, int)}
        self.decode_path = DEFAULT_DECODE_PATH  # see DECODE_PATHS
        self._fast = None
        self.q4_unavailable = ''  # why fast-q4 fell back to fast, once known

    # ----- prompt construction -------------------------------------------------------------

    def prompt_text(self, question: str) -> str:
        """Chat-templated text up to the assistant turn; the image placeholder starts it."""
        head, tail = self._template()
        return f'{head}\n{question}{tail}'

    def _template(self) -> tuple[str, str]:
        """The chat template around '\n' + question: (up to <image>, from the turn's end)."""
        slot = '\x00question\x00'
        messages = [{'role': 'system', 'content': self.config.system_prompt},
                    {'role': 'user', 'content': f'{IMAGE_TOKEN}\n{slot}'}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        head, tail = text.split(slot)
        return head[:-1], tail  # head ends with the '\n' that starts the user's text

    @property
    def control_tokens(self) -> tuple[str, ...]:
        """Tokens user text must not contain: the tokenizer's special and added tokens and
        ours, but not the visual-prompt words (<region>, <mark>)."""
        tok = self.tokenizer
        found = set(tok.all_special_tokens) | set(tok.get_added_vocab())
        return tuple(sorted(found - set(VISUAL_PROMPT_TOKENS)))

    def encode(self, text: str) -> list[int]:
        """Token ids of trusted text (templates, answers): special tokens become their ids."""
        return self.tokenizer(text, add_special_tokens=False)['input_ids']

    def encode_user(self, text: str) -> list[int]:
        """Token ids of user text: no special token can come out of it (split_special_tokens)
        except the visual-prompt words, which map to their own ids."""
        ids: list[int] = []
        for piece in _VISUAL_WORDS.split(text):
            if piece in VISUAL_PROMPT_TOKENS:
                ids.append(self.special_ids[piece])
            elif piece:
                ids += self.tokenizer(piece, add_special_tokens=False,
                                      split_special_tokens=True)['input_ids']
        return ids

    def check_question(self, question: str) -> None:
        """InputError naming the first control token (this tokenizer's, or core's) in it."""
        refuse_control_tokens(question, self.control_tokens)

    def prompt_ids(self, question: str, num_visual: int, answer: Optional[str] = None
                   ) -> tuple[list[int], list[int]]:
        """Token ids with the placeholder expanded to `num_visual` ids, and training labels.

        The question is user text: InputError if it holds a control token, and it is
        tokenized so that none can appear. labels are -100 except over the answer and its
        end token (when an answer is given).
        """
        self.check_question(question)
        head, tail = self._template()
        ids = self.encode(head) + self.encode_user(f'\n{question}') + self.encode(tail)
        if ids.count(self.image_id) != 1:
            raise ValueError(f'the chat template must hold {IMAGE_TOKEN!r} once')
        at = ids.index(self.image_id)
        ids = ids[:at] + [self.image_id] * num_visual + ids[at + 1:]
        labels = [-100] * len(ids)
        if answer is not None:
            target = self.encode(answer + '<|im_end|>')
            ids = ids + target
            labels = labels + target
        return ids, labels

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    # ----- forward and generation ----------------------------------------------------------

    def hidden(self, embeds: torch.Tensor, attention_mask=None, cache=None,
               position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Last-layer hidden states (B, T, H) after the final norm.

        attention_mask may be a prepared (B, 1, T, T) additive mask (packed training).
        """
        out = self.lm.model(inputs_embeds=embeds, attention_mask=attention_mask,
                            position_ids=position_ids, past_key_values=cache,
                            use_cache=cache is not None)
        return out.last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm.lm_head(hidden)

    def fast(self) -> 'FastLlama':
        """The lean decoder over the current weights (rebuilt when they change)."""
        from .fastlm import FastLlama

        quantize = 'q4' if self.decode_path == 'fast-q4' else None
        if quantize == 'q4' and self.q4_unavailable:
            quantize = None
        if self._fast is None or self._fast.is_stale() or self._fast.quantize != quantize:
            self._fast = None  # free the old snapshot before building the new one
            if quantize == 'q4':
                try:
                    device = self.lm.get_input_embeddings().weight.device
                    if device.type != 'cpu':
                        raise RuntimeError(f'its C kernels run on the CPU and the LLM is on '
                                           f'{device}')
                    self._fast = FastLlama(self.lm, quantize='q4', gguf=self._gguf())
                except (OSError, RuntimeError, ValueError) as e:
                    self.q4_unavailable = str(e).splitlines()[0] if str(e) else repr(e)
                    print(f'decode path fast-q4 unavailable, using fast: '
                          f'{self.q4_unavailable}', file=sys.stderr)
                    return self.fast()
            else:
                self._fast = FastLlama(self.lm, quantize=quantize)
        return self._fast

    def set_decode_path(self, path: str) -> None:
        """Decode with `path` (one of DECODE_PATHS) from the next generation on."""
        if path not in DECODE_PATHS:
            raise ValueError(f'unknown decode path {path!r}; use one of {", ".join(DECODE_PATHS)}')
        self.decode_path = path

    def effective_decode_path(self) -> str:
        """The decode path in use: 'fast' when fast-q4 fell back (see q4_unavailable)."""
        if self.decode_path == 'fast-q4' and self.q4_unavailable:
            return 'fast'
        return self.decode_path

    def _gguf(self) -> str:
        """The GGUF file the base LLM weights came from (for fast-q4)."""
        from .assets import LLM_ASSETS, find_asset_file

        if self.config.llm not in LLM_ASSETS:
            raise ValueError(f'fast-q4 needs a GGUF-based LLM, not {self.config.llm!r}')
        return str(find_asset_file(LLM_ASSETS[self.config.llm]))

    def _stepper(self, embeds: torch.Tensor, prefix_len: int, prefix_key):
        """(first hidden (H,), step(token) -> hidden (H,)) for the chosen decode path."""
        if self.decode_path not in DECODE_PATHS:
            raise ValueError(f'decode path must be one of {DECODE_PATHS}, got '
                             f'{self.decode_path!r}')
        if self.decode_path != 'reference':
            fast = self.fast()
            h = fast.prefill(embeds[0], prefix_len, prefix_key)
            table = self.lm.get_input_embeddings().weight
            return h, lambda tok: fast.step(table[tok]), fast.logits
        from transformers import DynamicCache

        cache = DynamicCache()
        h = self.hidden(embeds, cache=cache)[0, -1]

        def step(tok: int) -> torch.Tensor:
            ids = torch.tensor([[tok]], device=embeds.device)
            return self.hidden(self.embed(ids), cache=cache)[0, -1]
        return h, step, self.logits

    @torch.no_grad()
    def generate(self, embeds: torch.Tensor, *, max_new_tokens: int = 48,
                 temperature: float = 0.0, on_text: Optional[Callable[[str], bool]] = None,
                 on_seg: Optional[Callable[[torch.Tensor], None]] = None,
                 generator: Optional[torch.Generator] = None, prefix_len: int = 0,
                 prefix_key=None, guide: Optional[Guide] = None) -> Generation:
        """Generate from prompt embeddings (1, T, H); stops at the end token.

        on_text(piece) receives new text as it appears; returning False cancels. on_seg(h)
        receives each [SEG] hidden state (H,) as soon as it exists. With the fast path, the
        first prefix_len positions are reused from the previous call with the same
        prefix_key (e.g. the system prompt + visual block of one frame). guide(tokens so
        far) gives the only tokens allowed next (core.guide; None: any).
        """
        t0 = time.perf_counter()
        h, step, to_logits = self._stepper(embeds, prefix_len, prefix_key)
        t1 = time.perf_counter()
        tokens: list[int] = []
        seg_hidden: list[torch.Tensor] = []
        shown = ''
        cancelled = False
        for i in range(max_new_tokens):
            logits = to_logits(h)
            if guide is not None:
                logits = restrict(logits, guide(tokens))
            tok = self._pick(logits, temperature, generator)
            if tok in self.stop_ids:
                break
            tokens.append(tok)
            if tok == self.seg_id or i < max_new_tokens - 1:
                h = step(tok)
                if tok == self.seg_id:
                    seg_hidden.append(h)
                    if on_seg is not None:
                        on_seg(h)
            if on_text is not None:
                text = self.decode(tokens)
                if len(text) > len(shown) and not text.endswith('\ufffd'):
                    piece, shown = text[len(shown):], text
                    if on_text(piece) is False:
                        cancelled = True
                        break
        hidden = (torch.stack(seg_hidden).float() if seg_hidden
                  else embeds.new_zeros((0, embeds.shape[-1])))
        t2 = time.perf_counter()
        stats = {'prefill_ms': (t1 - t0) * 1000, 'decode_ms': (t2 - t1) * 1000,
                 'prompt_tokens': embeds.shape[1], 'new_tokens': len(tokens)}
        return Generation(tokens, self.decode(tokens), hidden, cancelled, stats)

    def prefix_length(self, num_visual: int) -> int:
        """Tokens up to the end of the visual block (the same for every question)."""
        ids = self.encode(self.prompt_text('x'))
        return ids.index(self.image_id) + num_visual

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, generator) -> int:
        if temperature <= 0:
            return int(logits.argmax())
        probs = (logits / temperature).softmax(-1)
        return int(torch.multinomial(probs, 1, generator=generator))
