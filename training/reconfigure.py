"""Carry a trained model directory over to a changed config; new parameters keep their init.

    python -m training.reconfigure --init runs/stage1/model --set fine_pool=true \
        --out runs/init/model

Used when the architecture grows (e.g. fine_pool adds a zero-initialised projection): every
stored tensor is copied, and a stored tensor the new config has no place for is an error.
A part whose shape changes (e.g. colour_from_pool gives the colour head another input) is
left out with --drop PREFIX and keeps its new init.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from ros_segcap.models.segcap.config import SegCapConfig
from ros_segcap.models.segcap.model import SegCapModel
from ros_segcap.models.segcap.weights import CONFIG_FILE, load_state, read_tensors, save_model


def _value(text: str):
    lowered = text.lower()
    if lowered in ('true', 'false'):
        return lowered == 'true'
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def reconfigure(init: str | Path, changes: dict, out: str | Path,
                drop: Sequence[str] = ()) -> SegCapModel:
    init = Path(init)
    info = json.loads((init / CONFIG_FILE).read_text())
    config = SegCapConfig.from_dict(dict(info['config'], **changes))
    model = SegCapModel(config, pretrained=not info.get('full', False))
    if info.get('lora'):
        from ros_segcap.models.segcap.lora import apply_lora
        apply_lora(model, **info['lora'])
    tensors = {k: v for k, v in read_tensors(init).items() if not k.startswith(tuple(drop))}
    load_state(model, tensors, missing_ok=True)  # new and dropped parts keep their init
    model.trained = bool(info.get('trained', False))
    save_model(model, out)
    return model


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--init', required=True, help='model directory to start from')
    ap.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                    help='config change (repeatable), e.g. fine_pool=true')
    ap.add_argument('--drop', action='append', default=[], metavar='PREFIX',
                    help='stored tensors under this name are not carried (repeatable), '
                    'e.g. projectors.colour_head.')
    ap.add_argument('--out', required=True)
    args = ap.parse_args(argv)
    changes = {}
    for item in args.set:
        if '=' not in item:
            ap.error(f'--set takes KEY=VALUE, got {item!r}')
        key, value = item.split('=', 1)
        changes[key] = _value(value)
    try:
        reconfigure(args.init, changes, args.out, args.drop)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f'reconfigure: {exc}') from None
    print(f'{args.out}: {args.init} with {changes}')


if __name__ == '__main__':
    main()
