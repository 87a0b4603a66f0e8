"""The InternLM2 tokenizer from a local download, without running its remote code.

InternLM2-Chat-7B ships tokenizer.model (a sentencepiece BPE model whose top ids hold
placeholder pieces) and tokenizer_config.json, whose added_tokens_decoder gives the real text
of those ids (<|im_end|> 92542, <|im_start|> 92543, ...). Its own fast tokenizer
(tokenization_internlm2_fast.py, InternLM2Converter) builds a `tokenizers` BPE from the proto
with those texts put in place, byte fallback, a normaliser that replaces ' ' with '▁' and adds
a leading '▁' only if the proto asks for it (add_dummy_prefix), no pre-tokenizer, and BOS in
front. We build the same object from the proto here, so the ids are InternLM2's own; loading
tokenizer.model with transformers' LlamaTokenizer instead would add a prefix space and append
<|im_start|> as a new id, and AutoTokenizer would want to run the remote code.

OMG-LLaVA then adds [SEG] <p> </p> <region> (embeddings resized to 92548) and <mark> (no row):
`load_tokenizer` puts them at 92544..92548 and refuses if they would land anywhere else.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from tokenizers import AddedToken, decoders, normalizers, processors, Tokenizer
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import import_protobuf

SEG_TOKEN, P_OPEN, P_CLOSE, REGION_TOKEN, MARK_TOKEN = '[SEG]', '<p>', '</p>', '<region>', '<mark>'
# In the order OMG-LLaVA adds them (omg_llava/model/omg_llava.py, _add_special_tokens).
ADDED_TOKENS = (SEG_TOKEN, P_OPEN, P_CLOSE, REGION_TOKEN, MARK_TOKEN)
ADDED_AT = 92544  # InternLM2's vocabulary size: the id the first added token gets
LLM_ROWS = ADDED_AT + 4  # embedding rows of the trained LLM: <mark> has no row
BOS, EOS, UNK, IM_END = '<s>', '</s>', '<unk>', '<|im_end|>'

_NORMAL, _USER_DEFINED, _BPE = 1, 4, 2  # sentencepiece piece types and model type


def read_sentencepiece(path: Union[str, Path]):
    """The ModelProto of a sentencepiece model file (protobuf only, no sentencepiece)."""
    proto = import_protobuf().ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    if proto.trainer_spec.model_type != _BPE:
        raise ValueError(f'{path} is not a BPE sentencepiece model (InternLM2 uses BPE)')
    return proto


def config_specials(path: Union[str, Path]) -> dict[int, str]:
    """id -> text of the tokens in tokenizer_config.json's added_tokens_decoder."""
    info = json.loads(Path(path).read_text())
    decoder = info.get('added_tokens_decoder')
    if not isinstance(decoder, dict):
        raise ValueError(f"{path} has no added_tokens_decoder; is it InternLM2's?")
    return {int(i): entry['content'] for i, entry in decoder.items()}


def _merges(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges: every split of a normal piece into two pieces, best piece score first."""
    ranked = []
    for piece, score in scores.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-score, vocab[left], vocab[right], left, right))
    return [(left, right) for *_, left, right in sorted(ranked)]


def build_bpe(proto, specials: dict[int, str]) -> Tokenizer:
    """A `tokenizers` BPE equal to InternLM2's fast tokenizer for this proto and these specials.

    specials: id -> text (from added_tokens_decoder); the piece at that id is renamed to it.
    """
    pieces = [p.piece for p in proto.pieces]
    for i, text in specials.items():
        if not 0 <= i < len(pieces):
            raise ValueError(f'added_tokens_decoder id {i} ({text!r}) is outside the '
                             f'{len(pieces)} pieces of tokenizer.model')
        pieces[i] = text
    vocab = {piece: i for i, piece in enumerate(pieces)}
    scores = {pieces[i]: p.score for i, p in enumerate(proto.pieces)
              if p.type == _NORMAL and i not in specials}
    unk = pieces[proto.trainer_spec.unk_id]
    bpe = Tokenizer(BPE(vocab, _merges(vocab, scores), unk_token=unk, fuse_unk=True,
                        byte_fallback=proto.trainer_spec.byte_fallback))
    steps = [normalizers.Replace(' ', '▁')]
    if proto.normalizer_spec.add_dummy_prefix:
        steps.insert(0, normalizers.Prepend('▁'))
    bpe.normalizer = normalizers.Sequence(steps)
    bpe.decoder = decoders.Sequence([decoders.Replace('▁', ' '), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(' ', 1, 0)])
    user = [pieces[i] for i, p in enumerate(proto.pieces)
            if p.type == _USER_DEFINED and i not in specials]
    bpe.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])
    bpe.add_special_tokens([AddedToken(specials[i], normalized=False, special=True)
                            for i in sorted(specials)])
    bos = pieces[proto.trainer_spec.bos_id]
    bpe.post_processor = processors.TemplateProcessing(
        single=f'{bos}:0 $A:0', pair=f'{bos}:0 $A:0 {bos}:1 $B:1',
        special_tokens=[(bos, proto.trainer_spec.bos_id)])
    return bpe


def add_omg_tokens(tokenizer: PreTrainedTokenizerFast, *, added_at: int = ADDED_AT) -> None:
    """Add [SEG] <p> </p> <region> <mark> at added_at..added_at+4; ValueError elsewhere."""
    tokenizer.add_tokens(list(ADDED_TOKENS), special_tokens=True)
    for offset, token in enumerate(ADDED_TOKENS):
        got = tokenizer.convert_tokens_to_ids(token)
        if got != added_at + offset:
            raise ValueError(
                f'{token} got id {got}, but the OMG-LLaVA weights expect {added_at + offset}: '
                'this tokenizer is not the InternLM2-Chat-7B one the model was trained with '
                '(use the tokenizer.model and tokenizer_config.json of internlm2-chat-7b)')


def load_tokenizer(directory: Union[str, Path], *,
                   added_at: int = ADDED_AT) -> PreTrainedTokenizerFast:
    """InternLM2's tokenizer from a download directory, with OMG-LLaVA's tokens added.

    directory: holds tokenizer.model and tokenizer_config.json (internlm2-chat-7b/).
    added_at: the id [SEG] must get (InternLM2's vocabulary size; tests pass a tiny one).
    """
    directory = Path(directory)
    model_file, config_file = directory / 'tokenizer.model', directory / 'tokenizer_config.json'
    for path in (model_file, config_file):
        if not path.is_file():
            raise FileNotFoundError(f'{path} not found: pass the internlm2-chat-7b directory '
                                    'of the OMG-LLaVA download')
    proto = read_sentencepiece(model_file)
    specials = config_specials(config_file)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_bpe(proto, specials), bos_token=BOS, eos_token=EOS,
        unk_token=UNK, pad_token=EOS, clean_up_tokenization_spaces=False)
    if IM_END not in tokenizer.get_vocab():
        raise ValueError(f'{config_file} does not name {IM_END}: not an InternLM2 chat tokenizer')
    add_omg_tokens(tokenizer, added_at=added_at)
    return tokenizer
