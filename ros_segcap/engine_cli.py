"""`segcap export`: build the vision / seg engines of a model into an engines directory.

    segcap export --model segcap-tiny --out engines/            ONNX (+ parity check)
    segcap export --model segcap-tiny --out engines/ --tensorrt --fp16   + TensorRT plans
    segcap export --model segcap-tiny --out engines/ --check    are they fresh? (exit 0/1)
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    """Add the `export` subcommand to the `segcap` parser (imports nothing heavy: the
    exporter's defaults are filled in by cmd_export)."""
    p = subparsers.add_parser(
        'export', help='export the vision and seg engines (ONNX, TensorRT plans)',
        description='Export the vision and seg graphs of a model as ONNX files (and TensorRT '
                    'plans with --tensorrt), check them against torch and record them in '
                    'OUT/manifest.json. The pipeline, `segcap infer --backend` and the node '
                    'find them there (or in $SEGCAP_ENGINES).')
    p.add_argument('--model', default='segcap-tiny', help='registered name or model directory')
    p.add_argument('--out', default='engines', help='engines directory (default: engines)')
    p.add_argument('--tensorrt', action='store_true',
                   help='also build TensorRT plans (needs the tensorrt package and a GPU)')
    p.add_argument('--fp16', action='store_true',
                   help='fp16 TensorRT plans, kept only where the masks match fp32 '
                        '(IoU >= 0.99); needs --tensorrt')
    p.add_argument('--opset', type=int,
                   help="ONNX opset, 17 or newer (default: the exporter's own)")
    p.add_argument('--max-queries', type=int,
                   help='largest query count of the TensorRT seg profile '
                        '(default: QueryProfile.max)')
    p.add_argument('--opt-queries', type=int,
                   help='query count TensorRT tunes the seg plan for '
                        '(default: QueryProfile.opt)')
    p.add_argument('--no-verify', dest='verify', action='store_false',
                   help='skip the onnxruntime-vs-torch parity check')
    p.add_argument('--allow-pickle', action='store_true',
                   help='allow loading pickle weight files (only if you trust them)')
    p.add_argument('--check', action='store_true',
                   help='do not export; report whether OUT holds fresh engines (exit 1 if not)')
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Run `segcap export`; user errors raise cli.UsageError (exit 2)."""
    from pathlib import Path

    from ros_segcap.cli import UsageError, writable_dir

    _fill_defaults(args)
    if args.fp16 and not args.tensorrt:
        raise UsageError('--fp16 applies to TensorRT plans; add --tensorrt (onnxruntime on '
                         'CPU runs the fp32 ONNX files)')
    if args.opset is not None and args.opset < 17:
        raise UsageError(f'--opset {args.opset}: the graphs need opset 17 or newer')
    if not 1 <= args.opt_queries <= args.max_queries:
        raise UsageError('--opt-queries must be between 1 and --max-queries')
    if args.tensorrt and not args.check:
        from ros_segcap.backends.tensorrt_backend import tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            raise UsageError(f"--tensorrt: {why}. On a Jetson, use JetPack's TensorRT "
                             '(a venv made with --system-site-packages sees it)')
    out = Path(args.out) if args.check else writable_dir(args.out)
    from ros_segcap.backends.base import EngineError  # the model and engines: torch from here
    from ros_segcap.core.types import ModelError
    from ros_segcap.models import load_model

    try:
        model = load_model(args.model, allow_pickle=args.allow_pickle)
    except (KeyError, FileNotFoundError, ValueError, ModelError) as exc:
        raise UsageError(str(exc).strip('"')) from None
    if args.check:
        return _check(model, args.model, out, args.tensorrt)
    from ros_segcap.export.build import export_engines
    from ros_segcap.export.onnx_export import OPSET
    from ros_segcap.export.tensorrt_build import QueryProfile

    try:
        export_engines(model, out, model_arg=args.model, fp16=args.fp16,
                       tensorrt=args.tensorrt, opset=args.opset or OPSET, verify=args.verify,
                       profile=QueryProfile(1, args.opt_queries, args.max_queries),
                       echo=lambda s: print(s, file=sys.stderr, flush=True))
    except EngineError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _fill_defaults(args: argparse.Namespace) -> None:
    """The query profile's defaults for the flags not given (the opset's: at export)."""
    from ros_segcap.export.tensorrt_build import QueryProfile

    for name, value in (('max_queries', QueryProfile.max), ('opt_queries', QueryProfile.opt)):
        if getattr(args, name) is None:
            setattr(args, name, value)


def _check(model, model_arg: str, out, tensorrt: bool) -> int:
    from ros_segcap.backends.manifest import check_engines

    kinds = ['onnx'] + (['tensorrt'] if tensorrt else [])
    status = 0
    for kind in kinds:
        key = None
        if kind == 'tensorrt':
            from ros_segcap.backends.tensorrt_backend import tensorrt_available
            from ros_segcap.export.tensorrt_build import plan_key

            ok, why = tensorrt_available()
            if not ok:
                print(f'tensorrt: {why}')
                status = 1
                continue
            key = plan_key()
        check = check_engines(out, model, model_arg, kind=kind, plan_key=key)
        print(f'{"fresh" if check.ok else "NOT usable"}: {check.reason}')
        status = status or (0 if check.ok else 1)
    return status
