#!/usr/bin/env python3
"""Check a converted OMG-LLaVA directory against the official code on the same image + prompt.

For a user who has the official weights, a checkout of the official repo (lxtGH/OMG-Seg) and a
CUDA GPU. The official model is built from its config the way tools/chat_omg_llava.py builds it
(without the 4-bit quantisation config: the LLM in the dtype of our conversion), run once, its
outputs kept on the CPU and the model freed; then the converted directory runs the same image
and prompt. Printed, one line each, PASS or FAIL:

  input        normalised 1024 x 1024 input, max abs difference
  backbone     the four CLIP stage maps, max abs difference relative to the largest value
  mask_feats   the pixel decoder's stride-4 mask features, same measure
  class        the last layer's class logits, same measure
  kept         the kept-query set (queries that own a 16 x 16 cell): identical
  visual       visual tokens (the LLM's input block): lowest cosine > 0.999
  text         greedy answer: the first --tokens token ids identical
  seg_iou      [SEG] masks on the 256 x 256 grid, IoU of (logit > 0) > 0.98

The official code is imported only when this runs (from --official-repo). Exit 0 when every
line passes, 1 when one fails, 2 for bad arguments (one line).

  python scripts/check_omg_llava.py --official-repo OMG-Seg --model models/omg-llava-7b \\
      --pth OMG-Seg/omg_llava/pretrained/omg_llava/omg_llava_7b_finetune_8gpus.pth
"""
from __future__ import annotations

import argparse
import gc
import json
import os
from pathlib import Path
import sys
from typing import Any

CONFIG = 'omg_llava/configs/finetune/omg_llava_7b_finetune_8gpus.py'  # under omg_llava/
PROMPT = 'Please segment the person in this image.'
TOLERANCE = {'input': 1e-5, 'backbone': 1e-3, 'mask_feats': 1e-3, 'class': 1e-3,
             'visual': 0.999, 'seg_iou': 0.98}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('--official-repo', type=Path, required=True,
                   help='checkout of github.com/lxtGH/OMG-Seg (holds omg_llava/)')
    p.add_argument('--pth', type=Path, required=True,
                   help='the finetune checkpoint the directory was converted from')
    p.add_argument('--model', type=Path, required=True,
                   help='our converted model directory (segcap convert omg-llava --out)')
    p.add_argument('--config', type=Path,
                   help=f'official config (default: OMG-Seg/omg_llava/{CONFIG})')
    p.add_argument('--workdir', type=Path,
                   help="where the config's ./pretrained/... paths resolve "
                        '(default: OMG-Seg/omg_llava)')
    p.add_argument('--image', type=Path, help='image (default: OMG-Seg/omg_llava/test.jpg)')
    p.add_argument('--prompt', default=PROMPT, help=f'question (default: {PROMPT!r})')
    p.add_argument('--tokens', type=int, default=20, help='greedy tokens to compare (20)')
    p.add_argument('--device', default='cuda', help='CUDA device (default cuda)')
    args = p.parse_args(argv)
    root = args.official_repo / 'omg_llava'
    args.workdir = args.workdir or root
    args.config = args.config or root / CONFIG
    args.image = args.image or root / 'test.jpg'
    return args


def validate(args: argparse.Namespace) -> str:
    """'' when the inputs exist, else one line saying which does not."""
    need = [('--official-repo', args.official_repo / 'omg_llava' / 'omg_llava', 'dir'),
            ('--workdir', args.workdir, 'dir'), ('--config', args.config, 'file'),
            ('--pth', args.pth, 'file'), ('--image', args.image, 'file'),
            ('--model', args.model / 'config.json', 'file')]
    for flag, path, kind in need:
        ok = path.is_dir() if kind == 'dir' else path.is_file()
        if not ok:
            return f'{flag}: {path} is not an existing {"directory" if kind == "dir" else "file"}'
    if args.tokens < 1:
        return '--tokens must be at least 1'
    if not args.device.startswith('cuda'):
        return f'--device {args.device}: the check runs on a CUDA device'
    return ''


# ----- the official model -------------------------------------------------------------------

def _capture(module: Any, name: str, store: dict, pick) -> None:
    """Wrap module.name so that pick(output) lands in store[name] (CPU, fp32)."""
    original = getattr(module, name)

    def wrapped(*a, **k):
        out = original(*a, **k)
        store[name] = pick(out)
        return out
    setattr(module, name, wrapped)


def _cpu(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_cpu(v) for v in x]
    return x.detach().float().cpu()


def run_official(args: argparse.Namespace, llm_dtype: Any, image: Any) -> dict:
    """The official model on the image and prompt; its outputs on the CPU."""
    import torch
    sys.path.insert(0, str(args.official_repo / 'omg_llava'))
    os.chdir(args.workdir)
    from mmengine.config import Config
    from xtuner.dataset.utils import expand2square
    from xtuner.model.utils import guess_load_checkpoint, prepare_inputs_labels_for_multimodal
    from xtuner.registry import BUILDER
    from xtuner.utils import IMAGE_TOKEN_INDEX, PROMPT_TEMPLATE

    cfg = Config.fromfile(str(args.config))
    cfg.model.pretrained_pth = None
    cfg.model.llm.quantization_config = None  # full precision, as ours
    cfg.model.llm.torch_dtype = llm_dtype
    model = BUILDER.build(cfg.model)
    model.load_state_dict(guess_load_checkpoint(str(args.pth)), strict=False)
    model.to(args.device).eval()
    proc_cfg = dict(cfg.image_processor)
    processor = proc_cfg.pop('type')(**proc_cfg)
    enc, got = model.visual_encoder, {}
    _capture(enc, 'extract_feat', got, _cpu)
    _capture(enc.panoptic_head, 'predict', got, lambda o: _cpu([o[0], o[1], o[5]]))
    square = expand2square(image, tuple(int(x * 255) for x in processor.image_mean))
    pixels = processor.preprocess(square, return_tensors='pt')['pixel_values'][0]
    with torch.no_grad():
        x = pixels.to(args.device)[None].to(enc.dtype)
        outs = enc(x, output_hidden_states=True)
        visual = model.projector(outs)
        text = PROMPT_TEMPLATE.internlm2_chat['INSTRUCTION'].format(
            input='<image>\n' + args.prompt, round=1, bot_name='BOT')
        before, after = text.split('<image>')
        ids = model.tokenizer.encode(before) + [IMAGE_TOKEN_INDEX] + \
            model.tokenizer.encode(after, add_special_tokens=False)
        mm = prepare_inputs_labels_for_multimodal(
            llm=model.llm, input_ids=torch.tensor(ids, device=args.device)[None],
            pixel_values=visual)
        tok = model.tokenizer
        stops = [tok.eos_token_id, tok.convert_tokens_to_ids('<|im_end|>')]
        gen = model.llm.generate(**mm, max_new_tokens=max(args.tokens, 32), do_sample=False,
                                 output_hidden_states=True, return_dict_in_generate=True,
                                 eos_token_id=stops)
        new = gen.sequences[0].tolist()
        # as the chat tool: the states at positions whose INPUT is a generated [SEG]
        hidden = torch.cat([h[-1][0] for h in gen.hidden_states], 0)[-(len(new) - 1):]
        inputs = torch.tensor(new[:-1], device=hidden.device)
        seg = hidden[inputs == model.seg_token_idx] if len(new) > 1 else hidden[:0]
        masks = None
        if len(seg):
            q = model.projector_text2vision(seg)
            idx = torch.zeros(len(seg), dtype=torch.long, device=q.device)
            masks = _cpu(enc.forward_llm_seg(q, idx)[-1][:, 0])
    result = {'input': _cpu(pixels), 'backbone': got['extract_feat'],
              'class': got['predict'][0], 'mask_feats': got['predict'][2],
              'kept': (~outs[-1][0].bool()).any(-1).nonzero()[:, 0].tolist(),
              'visual': _cpu(visual[0]), 'ids': [t for t in new if t not in stops],
              'seg': masks}
    del model, enc, outs
    gc.collect()
    torch.cuda.empty_cache()
    return result


# ----- ours -----------------------------------------------------------------------------------

def run_ours(args: argparse.Namespace, image: Any) -> dict:
    """The converted directory on the same image and prompt (outputs on the CPU)."""
    import numpy as np
    import torch

    from ros_segcap.core.preprocess import InputGeometry, letterbox
    from ros_segcap.core.torch_engine import TorchEngine
    from ros_segcap.models.omg_llava.family import load_directory
    from ros_segcap.models.omg_llava.prior import perception_prior

    model = load_directory(args.model, device=args.device)
    engine = TorchEngine(model, args.device)
    cfg = model.config
    tensor, _ = letterbox(np.asarray(image), cfg.image_size, InputGeometry.of(cfg))
    got: dict = {}
    model.visual_encoder.backbone.register_forward_hook(
        lambda m, a, out: got.__setitem__('backbone', _cpu(list(out))))
    hidden: list = []
    with torch.no_grad():
        x = tensor.to(args.device)
        frame = model.frame(x, engine)
        s, g = cfg.image_size, cfg.token_grid
        pp = perception_prior(frame.mask_logits, frame.class_logits, frame.query_feat,
                              frame.query_pos, (s, s), (g, g))
        embeds, _ = model.question_embeds(frame, args.prompt, None)
        gen = model.generate(embeds, max_new_tokens=max(args.tokens, 32), temperature=0.0,
                             on_seg=hidden.append)
        seg = model.seg_mask_logits(frame, torch.stack(hidden), engine) if hidden else None
        result = {'input': _cpu(model.normalize(x)[0]), 'backbone': got['backbone'],
                  'class': _cpu(frame.class_logits), 'mask_feats': _cpu(frame.mask_features),
                  'kept': pp.keep[0].nonzero()[:, 0].tolist(),
                  'visual': _cpu(model.visual_block(frame)), 'ids': gen.token_ids,
                  'seg': None if seg is None else _cpu(seg)}
    return result


# ----- comparisons ----------------------------------------------------------------------------

def _rel(a: Any, b: Any) -> tuple[float, str]:
    """(worst max-abs difference relative to the largest official value, detail); lists are
    compared item by item; a shape mismatch is infinitely bad."""
    a, b = (a, b) if isinstance(a, list) else ([a], [b])
    if len(a) != len(b):
        return float('inf'), f'{len(a)} maps official vs {len(b)} ours'
    errs = []
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return float('inf'), f'shapes {tuple(x.shape)} (official) vs {tuple(y.shape)} (ours)'
        errs.append(float((x - y).abs().max() / x.abs().max().clamp_min(1e-12)))
    return max(errs), 'max rel diff ' + ', '.join(f'{e:.2e}' for e in errs)


def compare(off: dict, ours: dict, tokens: int) -> list[tuple[str, bool, str]]:
    """(name, passed, detail) per comparison."""
    rows = []
    for name in ('input', 'backbone', 'mask_feats', 'class'):
        worst, detail = _rel(off[name], ours[name])
        rows.append((name, worst < TOLERANCE[name], f'{detail} (< {TOLERANCE[name]:g})'))
    rows.append(('kept', off['kept'] == ours['kept'],
                 f'{len(off["kept"])} official, {len(ours["kept"])} ours, '
                 f'{len(set(off["kept"]) ^ set(ours["kept"]))} differ'))
    a, b = off['visual'], ours['visual']
    if a.shape == b.shape:
        cos = float(torch_cosine(a, b).min())
        rows.append(('visual', cos > TOLERANCE['visual'], f'lowest cosine {cos:.5f} over '
                     f'{a.shape[0]} tokens (> {TOLERANCE["visual"]})'))
    else:
        rows.append(('visual', False, f'{tuple(a.shape)} official vs {tuple(b.shape)} ours'))
    n = min(tokens, len(off['ids']))
    same = off['ids'][:n] == ours['ids'][:n] and (n == tokens or off['ids'] == ours['ids'])
    rows.append(('text', same, f'first {n} token ids {"identical" if same else "differ"}: '
                 f'{off["ids"][:n]} vs {ours["ids"][:n]}'))
    rows.append(('seg_iou', *_seg(off['seg'], ours['seg'])))
    return rows


def torch_cosine(a: Any, b: Any) -> Any:
    import torch
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def _seg(a: Any, b: Any) -> tuple[bool, str]:
    if a is None or b is None:
        return (a is None and b is None), f'[SEG] masks: official {0 if a is None else len(a)}, ' \
            f'ours {0 if b is None else len(b)}'
    if a.shape != b.shape:
        return False, f'{tuple(a.shape)} official vs {tuple(b.shape)} ours'
    ma, mb = a > 0, b > 0
    inter = (ma & mb).flatten(1).sum(1).double()
    union = (ma | mb).flatten(1).sum(1).double().clamp_min(1)
    iou = float((inter / union).min())
    return iou > TOLERANCE['seg_iou'], f'lowest IoU {iou:.4f} over {len(a)} masks ' \
        f'(> {TOLERANCE["seg_iou"]})'


def llm_dtype(model_dir: Path) -> Any:
    """The torch dtype of our conversion's LLM (the official LLM runs in the same)."""
    import torch
    report = model_dir / 'conversion_report.json'
    name = json.loads(report.read_text()).get('dtype', {}).get('llm', 'bf16') \
        if report.is_file() else 'bf16'
    return torch.float16 if name == 'fp16' else torch.bfloat16


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    why = validate(args)
    if why:
        print(f'check_omg_llava: error: {why}', file=sys.stderr)
        return 2
    import torch
    if not torch.cuda.is_available():
        print('check_omg_llava: error: needs a CUDA GPU (torch.cuda.is_available() is False)',
              file=sys.stderr)
        return 2
    from PIL import Image
    for name in ('model', 'pth', 'image', 'config', 'official_repo', 'workdir'):
        setattr(args, name, getattr(args, name).resolve())  # before the chdir
    image = Image.open(args.image).convert('RGB')
    official = run_official(args, llm_dtype(args.model), image)
    ours = run_ours(args, image)
    rows = compare(official, ours, args.tokens)
    for name, ok, detail in rows:
        print(f'{"PASS" if ok else "FAIL"}  {name:<10} {detail}')
    return 0 if all(ok for _, ok, _ in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
