"""OMG-LLaVA tokenizer and template: the InternLM2 tokenizer rebuilt from a synthetic
sentencepiece proto, checked against a reference BPE written here; the <image> split.

Nothing is downloaded.
"""
from __future__ import annotations

import json

import pytest
import torch

from ros_segcap.models.omg_llava import template
from ros_segcap.models.omg_llava.tokenizer import ADDED_TOKENS, load_tokenizer

transformers = pytest.importorskip('transformers')


# ---------------------------------------------------------------- tokenizer and template
WORDS = ('user', 'assistant', 'Please', 'segment', 'the', 'person', 'in', 'this', 'image',
         'hello', 'world', 'It', 'is')
PLACEHOLDERS = {'<|plugin|>': 141, '<|interpreter|>': 142, '<|action_end|>': 143,
                '<|action_start|>': 144, '<|im_end|>': 145, '<|im_start|>': 146}


def _pieces() -> list[tuple[str, float, int]]:
    """(piece, score, type): InternLM2's layout in small; placeholders at the top ids."""
    pieces = [('<unk>', 0.0, 2), ('<s>', 0.0, 3), ('</s>', 0.0, 3)]
    pieces += [(f'<0x{b:02X}>', 0.0, 6) for b in range(256)]
    normal: list[str] = []
    for ch in sorted(set(''.join(WORDS)) | set('\n.▁')):
        normal.append(ch)
    for word in WORDS:
        for w in (word, '▁' + word):
            normal += [w[:n] for n in range(2, len(w) + 1) if w[:n] not in normal]
    pieces += [(p, -float(i), 1) for i, p in enumerate(normal)]
    pieces += [(f'[UNUSED_TOKEN_{n}]', 0.0, 4) for n in sorted(PLACEHOLDERS.values())]
    return pieces


def _write_tokenizer(directory, *, dummy_prefix: bool = False) -> int:
    """tokenizer.model + tokenizer_config.json like internlm2-chat-7b's; returns the vocab size."""
    from transformers.convert_slow_tokenizer import import_protobuf
    proto = import_protobuf().ModelProto()
    proto.trainer_spec.model_type = 2
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id = 0, 1, 2
    proto.normalizer_spec.name = 'identity'
    proto.normalizer_spec.add_dummy_prefix = dummy_prefix
    proto.normalizer_spec.remove_extra_whitespaces = False
    for piece, score, kind in _pieces():
        proto.pieces.add(piece=piece, score=score, type=kind)
    (directory / 'tokenizer.model').write_bytes(proto.SerializeToString())
    n = len(proto.pieces)
    entries = {0: '<unk>', 1: '<s>', 2: '</s>'}
    entries.update({n - 147 + k: text for text, k in PLACEHOLDERS.items()})
    decoder = {str(i): {'content': t, 'lstrip': False, 'normalized': False, 'rstrip': False,
                        'single_word': False, 'special': True} for i, t in entries.items()}
    (directory / 'tokenizer_config.json').write_text(json.dumps({
        'auto_map': {'AutoTokenizer': ['tokenization_internlm2.InternLM2Tokenizer', None]},
        'bos_token': '<s>', 'eos_token': '</s>', 'added_tokens_decoder': decoder}))
    return n


def reference_ids(text: str, n: int, *, bos: bool = True, dummy_prefix: bool = False) -> list:
    """sentencepiece BPE by hand: specials split out, best-scoring adjacent pair merged first."""
    pieces = _pieces()
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    score = {p: s for p, s, kind in pieces if kind == 1}
    specials = {t: n - 147 + k for t, k in PLACEHOLDERS.items()}
    specials.update({t: n + i for i, t in enumerate(ADDED_TOKENS)}, **{'<s>': 1, '</s>': 2})
    ids, rest = [1] if bos else [], text
    while rest:
        hits = [(rest.find(t), t) for t in specials if t in rest]
        at, tok = min(hits) if hits else (len(rest), None)
        chunk, rest = rest[:at], rest[at + len(tok):] if tok else ''
        if chunk:
            syms = list(('▁' if dummy_prefix else '') + chunk.replace(' ', '▁'))
            while True:
                pairs = [(score[a + b], -i) for i, (a, b) in enumerate(zip(syms, syms[1:]))
                         if a + b in score]
                if not pairs:
                    break
                i = -max(pairs)[1]
                syms[i:i + 2] = [syms[i] + syms[i + 1]]
            for s in syms:
                ids += [vocab[s]] if s in vocab else [vocab[f'<0x{b:02X}>'] for b in s.encode()]
        if tok:
            ids.append(specials[tok])
    return ids


@pytest.fixture()
def tok_dir(tmp_path):
    return tmp_path, _write_tokenizer(tmp_path)


TEXTS = ('hello world', 'Please segment the person in this image.', 'hello\nworld',
         'It is [SEG].', '<p> the person </p> [SEG].', 'café in the world', 'world  is',
         '<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n')


def test_tokenizer_ids_match_reference_bpe(tok_dir) -> None:
    directory, n = tok_dir
    tok = load_tokenizer(directory, added_at=n)
    for text in TEXTS:
        assert tok.encode(text) == reference_ids(text, n), text
        assert tok.encode(text, add_special_tokens=False) == reference_ids(text, n, bos=False)
        assert tok.decode(tok.encode(text), skip_special_tokens=False) == '<s>' + text
    hello = tok.encode('hello', add_special_tokens=False)
    assert tok.convert_ids_to_tokens(hello) == ['hello']  # no prefix space
    assert tok.convert_tokens_to_ids('<|im_end|>') == n - 2
    assert tok.convert_tokens_to_ids('<|im_start|>') == n - 1


def test_tokenizer_follows_the_proto_dummy_prefix(tmp_path) -> None:
    n = _write_tokenizer(tmp_path, dummy_prefix=True)
    tok = load_tokenizer(tmp_path, added_at=n)
    hello = tok.encode('hello', add_special_tokens=False)
    assert tok.convert_ids_to_tokens(hello) == ['▁hello']
    assert hello == reference_ids('hello', n, bos=False, dummy_prefix=True)


def test_added_tokens_land_at_their_ids_or_refuse(tok_dir) -> None:
    directory, n = tok_dir
    tok = load_tokenizer(directory, added_at=n)
    assert [tok.convert_tokens_to_ids(t) for t in ADDED_TOKENS] == list(range(n, n + 5))
    assert tok.encode('[SEG]', add_special_tokens=False) == [n]
    with pytest.raises(ValueError, match=r'\[SEG\] got id %d.*expect 92544' % n):
        load_tokenizer(directory)
    with pytest.raises(FileNotFoundError, match='tokenizer.model'):
        load_tokenizer(directory / 'nowhere')


def test_prompt_split_at_image(tok_dir) -> None:
    directory, n = tok_dir
    tok = load_tokenizer(directory, added_at=n)
    prompt = template.chat_prompt('Please segment the person in this image.')
    assert prompt == ('<|im_start|>user\n<image>\nPlease segment the person in this image.'
                      '<|im_end|>\n<|im_start|>assistant\n')
    before, after = template.encode_prompt(tok, prompt)
    assert before == reference_ids('<|im_start|>user\n', n)
    assert before[:2] == [1, n - 1]
    assert after == reference_ids('\nPlease segment the person in this image.<|im_end|>\n'
                                  '<|im_start|>assistant\n', n, bos=False)
    assert 1 not in after
    assert template.stop_ids(tok) == (n - 2, 2)
    with pytest.raises(ValueError, match='exactly one <image>, it holds 2'):
        template.encode_prompt(tok, prompt + '<image>')


def test_mask_padded_vocab() -> None:
    logits = torch.randn(2, 3, 10)
    masked = template.mask_padded_vocab(logits, 7)
    assert torch.isneginf(masked[..., 7:]).all() and torch.equal(masked[..., :7], logits[..., :7])
    assert int(masked.argmax(-1).max()) < 7
    assert template.mask_padded_vocab(logits, 10) is logits
    with pytest.raises(ValueError, match='1..10'):
        template.mask_padded_vocab(logits, 11)
