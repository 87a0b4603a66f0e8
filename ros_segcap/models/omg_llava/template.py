"""OMG-LLaVA's chat prompt (xtuner's internlm2_chat, no system block) and its encoding.

The official chat tool (omg_llava/tools/chat_omg_llava.py) puts '<image>\\n' in front of the
question, fills the template, splits the text at '<image>', encodes part 1 with the special
tokens (BOS) and part 2 without, and splices the visual block in between. Generation stops
at <|im_end|> (the template's stop word) or </s> (the generation config's eos).
"""
from __future__ import annotations

import torch

IMAGE_TOKEN = '<image>'
# xtuner PROMPT_TEMPLATE.internlm2_chat INSTRUCTION; SYSTEM is left out, as the chat tool does
# when no system text is given.
INSTRUCTION = '<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n'
STOP_WORDS = ('<|im_end|>',)


def chat_prompt(question: str, *, image: bool = True) -> str:
    """The prompt text for one user turn; with an image, '<image>\\n' comes first."""
    if IMAGE_TOKEN in question:
        raise ValueError(f'the question holds {IMAGE_TOKEN}; the image goes in by itself')
    text = f'{IMAGE_TOKEN}\n{question}' if image else question
    return INSTRUCTION.format(input=text)


def encode_prompt(tokenizer, prompt: str) -> tuple[list[int], list[int]]:
    """Ids before and after the visual block: (part 1 with BOS, part 2 without specials).

    prompt must hold exactly one '<image>'.
    """
    parts = prompt.split(IMAGE_TOKEN)
    if len(parts) != 2:
        raise ValueError(f'the prompt must hold exactly one {IMAGE_TOKEN}, it holds '
                         f'{len(parts) - 1}')
    before = tokenizer.encode(parts[0], add_special_tokens=True)
    after = tokenizer.encode(parts[1], add_special_tokens=False)
    return before, after


def stop_ids(tokenizer) -> tuple[int, ...]:
    """Ids that end an answer: the template's stop words, then EOS."""
    ids = [tokenizer.convert_tokens_to_ids(word) for word in STOP_WORDS]
    if tokenizer.unk_token_id in ids:
        raise ValueError(f'the tokenizer has no single id for {STOP_WORDS}')
    return (*ids, tokenizer.eos_token_id)


def mask_padded_vocab(logits: torch.Tensor, real_vocab: int) -> torch.Tensor:
    """logits [..., V] with the columns >= real_vocab set to -inf, so they are never sampled.

    Heads padded past the real vocabulary (e.g. to a multiple of 64 for an engine) have rows
    without a token; real_vocab is the LLM's trained rows (92548 for OMG-LLaVA 7B).
    """
    if not 0 < real_vocab <= logits.shape[-1]:
        raise ValueError(f'real_vocab {real_vocab} must be in 1..{logits.shape[-1]} '
                         '(the logit columns)')
    if real_vocab == logits.shape[-1]:
        return logits
    masked = logits.clone()
    masked[..., real_vocab:] = float('-inf')
    return masked
