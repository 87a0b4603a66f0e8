"""`segcap` command line: infer (no ROS needed), and the ROS / engine subcommands."""
from __future__ import annotations

import argparse
import importlib
import json
import os
from pathlib import Path
import sys
from typing import Optional, Sequence

from ros_segcap.core.files import one_line
from ros_segcap.core.options import check, describe, in_scope, option, pipeline_values

# Subcommand modules; each has register(subparsers). Missing ones are skipped quietly so the
# core CLI keeps working in a partial install.
SUBCOMMAND_MODULES = ('ros_segcap.ros.commands', 'ros_segcap.engine_cli',
                      'ros_segcap.convert_cli')


class UsageError(Exception):
    """A user error: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), like every other `segcap` error."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def _pair(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(','))
    except ValueError:
        raise UsageError(f'{what} must be {n} comma-separated numbers, got {text!r}') from None
    if len(values) != n:
        raise UsageError(f'{what} must be {n} comma-separated numbers, got {text!r}')
    return values


def read_image(path: str, max_megapixels: float = option('max_image_megapixels').default,
               what: str = 'image'):
    """RGB uint8 array of an image file, its size checked from the header before decoding;
    UsageError naming the problem."""
    import cv2

    from ros_segcap.core.image_header import ImageSizeError, checked_decode

    p = Path(path)
    if p.is_dir():
        raise UsageError(f'{what} {path} is a directory, not an image file')
    if not p.is_file():
        raise UsageError(f'{what} file not found: {path}')
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise UsageError(f'cannot read {what} {path}: {exc.strerror}') from None
    if not data:
        raise UsageError(f'{what} file is empty: {path}')
    try:
        bgr = checked_decode(data, int(max_megapixels * 1e6), f'{what} {path}')
    except ImageSizeError as exc:
        raise UsageError(f'{exc} (--max-image-megapixels)') from None
    except (ValueError, cv2.error) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def visual_prompt_from_args(args, height: int, width: int):
    """The one VisualPrompt given by --point/--box/--mask (not yet checked), or None."""
    import cv2

    from ros_segcap.core.types import VisualPrompt

    given = [k for k in ('point', 'box', 'mask') if getattr(args, k)]
    if len(given) > 1:
        raise UsageError(f'give at most one visual prompt, got --{" and --".join(given)}')
    if not given:
        return None
    if args.point:
        return VisualPrompt('point', point=_pair(args.point, 2, '--point'))
    if args.box:
        return VisualPrompt('box', box=_pair(args.box, 4, '--box'))
    m = read_image(args.mask, args.max_image_megapixels, '--mask')
    return VisualPrompt('mask', mask=cv2.cvtColor(m, cv2.COLOR_RGB2GRAY) > 127)


def writable_dir(path: str, flag: str = '--out') -> Path:
    """Create directory `path` (and parents) and prove it writable, before any model runs;
    UsageError saying why not."""
    import tempfile

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f'{flag} {path} exists and is not a directory')
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(f'{flag} {path}: cannot write there ({exc.strerror or exc})') from None
    return out


def cmd_infer(args) -> int:
    from ros_segcap.core.types import InputError

    image = read_image(args.image, args.max_image_megapixels)
    prompts = list(args.prompt or [])
    if args.panoptic and (prompts or args.point or args.box or args.mask):
        raise UsageError('--panoptic lists every object without a command: drop --prompt, '
                         '--point, --box and --mask')
    if not args.panoptic and not prompts:
        raise UsageError('say what to segment with --prompt "..." (or list every object '
                         'with --panoptic)')
    try:
        vp = visual_prompt_from_args(args, image.shape[0], image.shape[1])
        check_requests(prompts, vp, image.shape[0], image.shape[1])
    except InputError as exc:
        raise UsageError(str(exc)) from None
    if args.out:
        writable_dir(args.out)
    pipe = make_pipeline(pipeline_values(vars(args)))
    if not pipe.trained:
        from ros_segcap.models import weights_warning

        print(f'warning: {weights_warning(args.model) or "untrained weights"}',
              file=sys.stderr)
    if args.panoptic:
        return panoptic(pipe, image, args.out)
    results = []
    for i, prompt in enumerate(prompts):
        try:
            result = pipe.run(image, prompt, vp, frame_key='cli')
        except InputError as exc:
            raise UsageError(str(exc)) from None
        results.append(result)
        print(result.answer if result.answer else '(empty answer)')
        if args.out:
            out = Path(args.out) if len(prompts) == 1 else Path(args.out) / f'{i:02d}'
            write_result(out, image, result)
    if args.out:
        print(f'wrote {args.out}', file=sys.stderr)
    return 0


def panoptic(pipe, image, out: Optional[str]) -> int:
    """Print one line per object (id, class, score, box); write masks / overlay to `out`."""
    result = pipe.panoptic(image, frame_key='cli')
    for i, phrase, score, box, stuff in zip(result.ids, result.phrases, result.scores,
                                            result.boxes, result.stuff):
        kind = 'stuff' if stuff else 'thing'
        print(f'{i:3d} {phrase:<12} {kind} score {score:.2f} box {",".join(map(str, box))}')
    if not result.ids:
        print('(no objects)')
    if out:
        write_result(Path(out), image, result)
        print(f'wrote {out}', file=sys.stderr)
    return 0


def check_requests(prompts: Sequence[str], vp, height: int, width: int) -> None:
    """Check the prompts as the Pipeline will, before the model loads; InputError."""
    from ros_segcap.core.tokens import MARK_TOKEN, REGION_TOKEN, check_prompt

    prompts = [check_prompt(p) for p in prompts]  # the text alone, without torch
    if vp is not None or any(REGION_TOKEN in p or MARK_TOKEN in p for p in prompts):
        from ros_segcap.core.pipeline import check_request

        for prompt in prompts:
            check_request(prompt, vp, height, width)


def make_pipeline(values: dict):
    """The one place the CLI opens its Pipeline; UsageError with the reason if it cannot."""
    from ros_segcap.core.types import ModelError
    from ros_segcap.runtime import PipelineConfig, open_pipeline

    try:
        return open_pipeline(PipelineConfig(**values))
    except (KeyError, FileNotFoundError, ValueError, ModelError) as exc:
        raise UsageError(str(exc).strip('"')) from None


def write_result(out: Path, image, result) -> None:
    """result.json, masks/NN.png (0/255) and overlay.png into `out`."""
    import cv2

    from ros_segcap.core.overlay import draw_overlay

    (out / 'masks').mkdir(parents=True, exist_ok=True)
    mask_files = []
    for i, m in enumerate(result.masks):
        name = f'masks/{i:02d}.png'
        cv2.imwrite(str(out / name), m.astype('uint8') * 255)
        mask_files.append(name)
    info = {'answer': result.answer, 'phrases': result.phrases, 'masks': mask_files,
            'scores': [round(s, 4) for s in result.scores],
            'boxes': [list(b) for b in result.boxes],
            'timing_ms': {k: round(v, 2) for k, v in result.timing.ms.items()},
            'model': result.model, 'status': result.status, 'raw_text': result.raw_text}
    if result.ids:
        info.update(ids=result.ids, stuff=result.stuff)
    (out / 'result.json').write_text(json.dumps(info, indent=2) + '\n')
    overlay = draw_overlay(image, result)
    cv2.imwrite(str(out / 'overlay.png'), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))


def add_infer(sub) -> None:
    p = sub.add_parser('infer', help='segment / caption one image (no ROS needed)')
    p.add_argument('image', help='image file (png, jpg, ...)')
    p.add_argument('--prompt', action='append',
                   help='the command, e.g. "segment the red cup"; repeat for several '
                        'prompts on the same image (encoded once)')
    p.add_argument('--panoptic', action='store_true',
                   help='list every object the decoder keeps (class, score, box), no LLM')
    p.add_argument('--point', help='X,Y point prompt in pixels')
    p.add_argument('--box', help='X1,Y1,X2,Y2 box prompt in pixels')
    p.add_argument('--mask', help='PNG mask prompt, the size of the image (nonzero = inside)')
    add_option_flags(p)
    p.add_argument('--out', help='write result.json, masks/NN.png and overlay.png here')
    p.set_defaults(func=cmd_infer)


def checked(name: str, kind: type):
    """An argparse type for option `name`: converts, then checks its range or choices."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not of type {kind.__name__}') from None
        reason = check(name, value)
        if reason:
            raise argparse.ArgumentTypeError(reason)
        return value
    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def add_option_flags(parser: argparse.ArgumentParser, names: Sequence[str] = ()) -> None:
    """Add a --flag per option of scope 'cli' (or just `names`), help and checks from the
    option table; booleans are --x / --no-x."""
    for opt in in_scope('cli'):
        if names and opt.name not in names:
            continue
        flag = '--' + opt.name.replace('_', '-')
        text = describe(opt).replace('%', '%%')
        if opt.type is bool:
            given = flag if opt.default else '--no-' + flag[2:]
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=opt.default, help=f'{text} (default: {given})')
        else:
            parser.add_argument(flag, type=checked(opt.name, opt.type), default=opt.default,
                                metavar=opt.name.upper(), help=f'{text} (default: %(default)r)')


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog='segcap', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    add_infer(sub)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f'segcap {args.command}: error: {one_line(exc, limit=1000)}', file=sys.stderr)
        return 2
    except MemoryError:
        print(f'segcap {args.command}: error: out of memory (a smaller image or model, or '
              '--max-image-megapixels, may help)', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
