r"""LLaVA conversation json loader (text answers, no masks).

Format: [{'id', 'image', 'conversations': [{'from': 'human', 'value': '<image>\n...'},
{'from': 'gpt', 'value': ...}, ...]}] as in LLaVA-Pretrain (blip_laion_cc_sbu_558k.json) and
LLaVA-Instruct (llava_instruct_150k.json, llava_v1_5_mix665k.json). 'user'/'assistant' are
accepted for 'human'/'gpt'.

Multi-turn conversations are flattened: each (human, gpt) turn pair becomes its own Sample
holding only that question and answer (earlier turns are not repeated, so a follow-up such
as "What about the other one?" loses its context). The '<image>' placeholder is removed
(the model puts the visual block at the start of every user turn). Entries without an
'image' (text-only chats in the 665k mix) are skipped and counted in `skipped_no_image`.

Task: 'vqa' or 'caption' for every sample, or 'auto': 'caption' for a single-turn entry
whose question asks to describe / caption / summarise the image, else 'vqa'.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from training.data.common import DataFormatError, LazySamples, load_json, read_image_rgb, require
from training.data.sample import Sample

TASK_CHOICES = ('vqa', 'caption', 'auto')
HUMAN_ROLES = ('human', 'user')
GPT_ROLES = ('gpt', 'assistant')
_CAPTION_WORDS = re.compile(r'\b(describ\w*|caption\w*|summar\w*|depict\w*|what is in the '
                            r'(image|picture|photo))', re.IGNORECASE)
_IMAGE_TOKEN = re.compile(r'\s*<image>\s*')


@dataclass(frozen=True)
class TurnRecord:
    """One (question, answer) turn pair of one conversation, without pixels."""

    image_path: str
    question: str
    answer: str
    task: str
    source: str


class LlavaSamples(LazySamples[TurnRecord]):
    """LazySamples with the number of entries skipped for having no image."""

    skipped_no_image: int = 0


def strip_image_token(text: str) -> str:
    """Remove '<image>' placeholders (and the newlines around them) from a turn."""
    return _IMAGE_TOKEN.sub(' ', text).strip()


def _turn_pairs(convs: Any, path: str, where: str) -> list[tuple[str, str]]:
    if not isinstance(convs, list) or not convs:
        raise DataFormatError(path, f'{where}: "conversations" should be a non-empty list')
    if len(convs) % 2:
        raise DataFormatError(path, f'{where}: {len(convs)} turns; expected human/gpt pairs')
    pairs = []
    for k in range(0, len(convs), 2):
        for turn, roles in ((convs[k], HUMAN_ROLES), (convs[k + 1], GPT_ROLES)):
            require(turn, ('from', 'value'), path, f'{where} turn {k}')
            if turn['from'] not in roles or not isinstance(turn['value'], str):
                raise DataFormatError(path, f'{where}: turn "from" {turn["from"]!r} where '
                                            f'{roles[0]!r} (with a text "value") was expected')
        pairs.append((strip_image_token(convs[k]['value']), convs[k + 1]['value'].strip()))
    return pairs


def _task_of(task: str, pairs: list[tuple[str, str]], question: str) -> str:
    if task != 'auto':
        return task
    return 'caption' if len(pairs) == 1 and _CAPTION_WORDS.search(question) else 'vqa'


def build_turn_sample(rec: TurnRecord) -> Sample:
    """Read the image of one TurnRecord and return its text-only Sample."""
    return Sample(image=read_image_rgb(rec.image_path), question=rec.question,
                  answer=rec.answer, task=rec.task, source=rec.source)


def load_llava(path: str, image_root: str, *, task: str = 'vqa',
               name: Optional[str] = None) -> LlavaSamples:
    """Load a LLaVA conversation json as lazy text-only Samples, one per turn pair.

    path: the json file; image_root: the folder that entries' 'image' paths are relative to.
    task: 'vqa', 'caption' or 'auto' (see the module docstring).
    """
    if task not in TASK_CHOICES:
        raise ValueError(f'task must be one of {TASK_CHOICES}, got {task!r}')
    data = load_json(path)
    if not isinstance(data, list):
        raise DataFormatError(path, f'expected a list of conversations, got '
                                    f'{type(data).__name__}')
    name = name or os.path.splitext(os.path.basename(path))[0]
    records, skipped = [], 0
    for i, entry in enumerate(data):
        require(entry, ('conversations',), path, f'entry #{i}')
        where = f'entry #{i} (id {entry.get("id", "?")})'
        pairs = _turn_pairs(entry['conversations'], path, where)
        if not entry.get('image'):
            skipped += 1
            continue
        for k, (question, answer) in enumerate(pairs):
            records.append(TurnRecord(os.path.join(image_root, entry['image']), question, answer,
                                      _task_of(task, pairs, question),
                                      f'{name}:{entry.get("id", i)}:turn{k}'))
    out = LlavaSamples(records, build_turn_sample, name)
    out.skipped_no_image = skipped
    return out
