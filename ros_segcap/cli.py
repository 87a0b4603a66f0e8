"""`segcap` command line: infer (no ROS needed), and the ROS / engine subcommands."""
from __future__ import annotations

import argparse
import importlib
import json
import os
from pathlib import Path
import sys
from typing import Optional, Sequence

from ros_segcap.core.options import check, describe, in_scope, pipeline_values

# Subcommand modules; each has register(subparsers). Missing ones are skipped quietly so the
# core CLI keeps working in a partial install.
SUBCOMMAND_MODULES = ('ros_segcap.ros.commands', 'ros_segcap.engine_cli')


class UsageError(Exception):
    """A user error: printed as one line, exit code 2."""


def _pair(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(','))
    except ValueError:
        raise UsageError(f'{what} must be {n} comma-separated numbers, got {text!r}') from None
    if len(values) != n:
        raise UsageError(f'{what} must be {n} comma-separated numbers, got {text!r}')
    return values


def read_image(path: str):
    """RGB uint8 array of an image file; UsageError naming the problem."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise UsageError(f'image file not found: {path}')
    bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UsageError(f'not an image (cannot decode): {path}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def visual_prompt_from_args(args, height: int, width: int):
    """The one VisualPrompt given by --point/--box/--mask, or None."""
    import cv2

    from ros_segcap.core.types import VisualPrompt

    given = [k for k in ('point', 'box', 'mask') if getattr(args, k)]
    if len(given) > 1:
        raise UsageError(f'give at most one visual prompt, got --{" and --".join(given)}')
    if not given:
        return None
    if args.point:
        prompt = VisualPrompt('point', point=_pair(args.point, 2, '--point'))
    elif args.box:
        prompt = VisualPrompt('box', box=_pair(args.box, 4, '--box'))
    else:
        if not Path(args.mask).is_file():  # before imread, which warns on stderr
            raise UsageError(f'--mask: file not found: {args.mask}')
        m = cv2.imread(args.mask, cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise UsageError(f'--mask: cannot read {args.mask} as an image')
        prompt = VisualPrompt('mask', mask=m > 127)
    prompt.validate(height, width)
    return prompt


def cmd_infer(args) -> int:
    from ros_segcap.core.types import InputError

    image = read_image(args.image)
    prompts = [p for p in args.prompt]
    if not prompts or any(not p.strip() for p in prompts):
        raise UsageError('empty prompt: say what to segment or ask a question')
    try:
        vp = visual_prompt_from_args(args, image.shape[0], image.shape[1])
    except InputError as exc:
        raise UsageError(str(exc)) from None
    pipe = make_pipeline(pipeline_values(vars(args)))
    if not pipe.trained:
        from ros_segcap.models import weights_warning

        print(f'warning: {weights_warning(args.model) or "untrained weights"}',
              file=sys.stderr)
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
    (out / 'result.json').write_text(json.dumps(info, indent=2) + '\n')
    overlay = draw_overlay(image, result)
    cv2.imwrite(str(out / 'overlay.png'), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))


def add_infer(sub) -> None:
    p = sub.add_parser('infer', help='segment / caption one image (no ROS needed)')
    p.add_argument('image', help='image file (png, jpg, ...)')
    p.add_argument('--prompt', action='append', required=True,
                   help='the command, e.g. "segment the red cup"; repeat for several '
                        'prompts on the same image (encoded once)')
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
    parser = argparse.ArgumentParser(prog='segcap', description=__doc__)
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
        print(f'segcap {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
