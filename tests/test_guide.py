"""Guided decoding (core/guide.py) and the segcap family's answer guides (guides.py)."""
from __future__ import annotations

import re

import pytest
import torch

from ros_segcap.core.guide import Insert, chain, restrict, starts_with
from ros_segcap.core.preprocess import prompt_queries
from ros_segcap.core.torch_engine import TorchEngine
from ros_segcap.core.types import VisualPrompt
from ros_segcap.models.segcap.guides import NEARER_QUESTION


def test_restrict_leaves_only_the_allowed_tokens():
    logits = torch.arange(6.0)[None]
    out = restrict(logits, [1, 3])
    assert out.argmax().item() == 3
    assert torch.isinf(out[0, [0, 2, 4, 5]]).all() and out[0, 1] == 1.0
    assert restrict(logits, None) is logits and restrict(logits, []) is logits


def test_starts_with_fixes_the_first_token_only():
    guide = starts_with([4, 5])
    assert guide([]) == [4, 5]
    assert guide([4]) is None and guide([4, 9]) is None


def test_insert_after_a_trigger_forces_its_span_once():
    calls = []

    def span():
        calls.append(1)
        return [7, 8]

    guide = Insert(span, after=3)
    assert guide([]) is None and guide([1, 2]) is None and not calls  # paid only when needed
    assert guide([1, 3]) == [7]
    assert guide([1, 3, 7]) == [8]
    assert guide([1, 3, 7, 8]) is None
    assert guide([1, 3, 7, 8, 3]) is None  # a later trigger inserts nothing
    assert len(calls) == 1


def test_insert_without_trigger_starts_the_answer_and_an_empty_span_is_free():
    guide = Insert(lambda: [5, 6])
    assert [guide([]), guide([5]), guide([5, 6])] == [[5], [6], None]
    empty = Insert(lambda: [], after=3)
    assert empty([3]) is None and empty([3, 4]) is None


def test_chain_asks_each_guide_in_turn():
    assert chain(None, None) is None
    one = starts_with([1])
    assert chain(None, one) is one
    both = chain(starts_with([1]), Insert(lambda: [9], after=1))
    assert both([]) == [1] and both([1]) == [9] and both([1, 9]) is None


@pytest.mark.parametrize('question, nearer', [
    ('Which is closer to the camera, <region> or <mark>?', True),
    ('which one is nearer, <mark> or <mark>', True),
    ('What is <region>?', False), ('Is <region> close to the cup?', False)])
def test_nearer_questions_are_recognised(question, nearer):
    assert bool(NEARER_QUESTION.search(question)) == nearer


def _embeds(model, frame, monkeypatch, path: str, question: str) -> torch.Tensor:
    """The question's prompt embeddings, with the LLM on decode path `path`."""
    monkeypatch.setattr(model.llm, 'decode_path', path)
    with torch.no_grad():
        return model.prompt_embeds(frame, question)[0]


@pytest.mark.parametrize('path', ['fast', 'reference'])
def test_generate_starts_with_one_of_the_allowed_tokens(tiny_model, tiny_frame, monkeypatch, path):
    embeds = _embeds(tiny_model, tiny_frame[0], monkeypatch, path, 'segment the red cup')
    free = tiny_model.llm.generate(embeds, max_new_tokens=3).token_ids
    forced_id = tiny_model.llm.absent_id if free[0] != tiny_model.llm.absent_id \
        else tiny_model.llm.phrase_id
    forced = tiny_model.llm.generate(embeds, max_new_tokens=3, guide=starts_with([forced_id]))
    assert forced.token_ids[0] == forced_id
    both = tiny_model.llm.generate(embeds, max_new_tokens=3,
                                   guide=starts_with([forced_id, free[0]]))
    assert both.token_ids == free  # the free choice was allowed: nothing changes


@pytest.mark.parametrize('path', ['fast', 'reference'])
def test_generation_takes_an_inserted_span(tiny_model, tiny_frame, monkeypatch, path):
    embeds = _embeds(tiny_model, tiny_frame[0], monkeypatch, path, 'What is on the table?')
    free = tiny_model.llm.generate(embeds, max_new_tokens=4).token_ids
    span = [t for t in (11, 12, 13) if t != free[1]][:2]
    forced = tiny_model.llm.generate(embeds, max_new_tokens=4,
                                     guide=Insert(lambda: span, after=free[0]))
    assert forced.token_ids[:3] == [free[0]] + span


def _prompts(model, box, n):
    vps = [VisualPrompt(kind='box', box=(10.0, 10.0, 60.0, 50.0)),
           VisualPrompt(kind='point', point=(100.0, 60.0))][:n]
    return prompt_queries(vps, box, model.config.mask_size)


def test_one_region_gets_its_place_after_at(tiny_model, tiny_frame):
    frame, box = tiny_frame
    q, llm = _prompts(tiny_model, box, 1), tiny_model.llm
    question = 'Can you describe <region> briefly?'
    with torch.no_grad():
        engine = TorchEngine(tiny_model)
        guide = tiny_model.answer_guide(frame, question, q, box, engine)
        assert tiny_model.answer_guide(frame, question, q, box, engine, places=False) is None
        at = llm.encode(' at')[0]
        assert guide([]) is None and guide(llm.encode('A red cup')) is None
        tokens = llm.encode('A red cup at')
        while (allowed := guide(tokens)) is not None:
            tokens = tokens + list(allowed)
    text = llm.decode(tokens)
    assert at in tokens
    assert re.fullmatch(r'A red cup at the (centre|((front|back) )?(left|right)|front|back) '
                        r'of the table', text), text


def test_the_nearer_region_is_named_by_its_heads():
    from ros_segcap.core.frames import DecoderOutput
    from ros_segcap.models.segcap.guides import nearer_start, thing_name

    classes, colours = ('background', 'table', 'cup', 'bowl'), ('red', 'blue')
    masks = torch.full((1, 2, 8, 8), -5.0)
    masks[0, 0, 1:3, 1:3] = 5.0  # base on row 2: farther
    masks[0, 1, 4:7, 5:7] = 5.0  # base on row 6: nearer
    # region 1: 'table' scores highest but a region is a thing: the best thing is the bowl
    cls = torch.tensor([[[0.0, 0.0, 3.0, 1.0, 0.0], [0.0, 9.0, 1.0, 2.0, 0.0]]])
    col = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    out = DecoderOutput([cls], [masks], torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))
    said = []
    ids = nearer_start(out, col, classes, colours, lambda text: said.append(text) or [1])
    assert ids == [1] and said == ['The blue bowl']
    assert thing_name(cls[0, 0], col[0], classes, colours) == 'red cup'
    masks[0, 1] = -5.0  # an empty region cannot be compared
    assert nearer_start(out, col, classes, colours, lambda text: [1]) is None
