"""`segcap convert omg-llava`: the official OMG-LLaVA download -> a model directory."""
from __future__ import annotations

import argparse
from pathlib import Path
import sys


def register(subparsers) -> None:
    """Add `convert` (with the `omg-llava` source) to the `segcap` parser; imports nothing
    heavy until it runs."""
    p = subparsers.add_parser(
        'convert', help='convert a released model into a model directory',
        description='Convert released weights into a model directory that --model loads.')
    sources = p.add_subparsers(dest='source', required=True)
    o = sources.add_parser(
        'omg-llava', help='the official OMG-LLaVA 7B release (zhangtao-whu/OMG-LLaVA)',
        description='Merge the LoRA of the finetune checkpoint into internlm2-chat-7b, convert '
                    'it to Llama, add the OMG-Seg head, the CLIP trunk and the projectors, and '
                    'write sharded safetensors to OUT. Reads tensors only (no pickled code).')
    o.add_argument('--llm', required=True, type=Path, help='the internlm2-chat-7b directory')
    o.add_argument('--pth', required=True, type=Path,
                   help='omg_llava_7b_finetune_8gpus.pth (or finetuned_refseg.pth / '
                        'finetuned_gcg.pth, which add the [SEG] decoder copy)')
    o.add_argument('--omg-seg', required=True, type=Path, help='omg_seg_convl.pth')
    o.add_argument('--text-embeds', required=True, type=Path,
                   help='convnext_large_d_320_CocoPanopticOVDataset.pth')
    o.add_argument('--clip', required=True, type=Path,
                   help='open_clip convnext_large_d_320 (laion2b_s29b_b131k_ft_soup) weights, '
                        '.safetensors or .bin')
    o.add_argument('--out', required=True, type=Path, help='model directory to write')
    o.add_argument('--dtype', choices=('bf16', 'fp16'), default='bf16',
                   help='LLM weights dtype (vision and projectors stay fp32); default bf16')
    o.add_argument('--sizes', default='omg-llava-7b',
                   help='registered omg_llava sizes the files must fit (default omg-llava-7b)')
    o.add_argument('--lora-alpha', type=int, default=256,
                   help='LoRA alpha of the finetune (official 256; not stored in the .pth)')
    o.add_argument('--shard-mb', type=int, default=2048, help='shard size in MB (default 2048)')
    o.add_argument('--no-progress', dest='progress', action='store_false',
                   help='no progress bar')
    o.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    """Exit code 0, or 2 with one line naming what does not fit."""
    from ros_segcap.models.omg_llava.convert import ConversionError, convert, Sources
    from ros_segcap.models.omg_llava.family import CONFIGS
    if args.sizes not in CONFIGS:
        return _fail(f'--sizes {args.sizes}: choose one of {", ".join(CONFIGS)}')
    if args.shard_mb < 1:
        return _fail('--shard-mb must be at least 1')
    src = Sources(llm=args.llm, pth=args.pth, omg_seg=args.omg_seg,
                  text_embeds=args.text_embeds, clip=args.clip)
    try:
        report = convert(src, args.out, sizes=CONFIGS[args.sizes], dtype=args.dtype,
                         lora_alpha=args.lora_alpha, shard_bytes=args.shard_mb << 20,
                         progress=args.progress)
    except (ConversionError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    print(f'wrote {args.out}: {report["tensors_written"]} tensors in {len(report["shards"])} '
          f'shards, {len(report["dropped"])} source tensors dropped (conversion_report.json)',
          file=sys.stdout)
    return 0


def _fail(message: str) -> int:
    line = message.strip().splitlines()[0] if message.strip() else 'failed'
    print(f'segcap convert: error: {line}', file=sys.stderr)
    return 2
