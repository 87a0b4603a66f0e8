"""The shared command line of the model diagnostics (decoder_eval, referring_errors,
plain_requests)."""
from __future__ import annotations

import argparse
import json
from typing import Callable, Optional, Sequence

import torch

from training.data.tabletop import WORLDS


def add_world_arguments(ap: argparse.ArgumentParser) -> None:
    """--world and --styles (the varied world's style families)."""
    ap.add_argument('--world', default='default', choices=WORLDS,
                    help='varied: the domain-randomised world')
    ap.add_argument('--styles', default='train', choices=('train', 'held_out'),
                    help='style families of the varied world (held_out: test split only)')


def check_world_arguments(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse --styles without --world varied, and held-out styles off the test split."""
    if args.world == 'default' and args.styles != 'train':
        ap.error('--styles applies to --world varied only')
    if args.styles == 'held_out' and args.split != 'test':
        ap.error('held-out styles are evaluated on the test split only; add --split test')


def add_presence_argument(ap: argparse.ArgumentParser) -> None:
    """--no-check-presence (the pipeline option check_presence off)."""
    ap.add_argument('--no-check-presence', dest='check_presence', action='store_false',
                    help="let the LLM alone decide whether a plain request's object is there")


def model_command(doc: str, run: Callable[..., dict], n_default: int,
                  n_help: str, argv: Optional[Sequence[str]] = None,
                  extra: Optional[Callable[[argparse.ArgumentParser], list[str]]] = None
                  ) -> None:
    """--model --split --n --seed-offset --threads --no-refine-edges --world --styles ->
    print run(model, n=, split=, seed_offset=, refine_edges=, world=, styles=) as JSON;
    extra(ap) adds a command's own arguments and names the ones run() also takes."""
    ap = argparse.ArgumentParser(description=doc.split('\n')[0])
    ap.add_argument('--model', default='segcap-tiny', help='model directory or name')
    ap.add_argument('--split', default='test', choices=('train', 'val', 'test'))
    ap.add_argument('--n', type=int, default=n_default, help=n_help)
    ap.add_argument('--seed-offset', type=int, default=0,
                    help='start at scene seed_offset of the split (e.g. 1000: fresh scenes)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--no-refine-edges', dest='refine_edges', action='store_false',
                    help='keep the masks as the mask grid gives them (no edge refinement)')
    add_world_arguments(ap)
    names = extra(ap) if extra is not None else []
    args = ap.parse_args(argv)
    check_world_arguments(ap, args)
    torch.set_num_threads(args.threads)
    print(json.dumps(run(args.model, n=args.n, split=args.split, seed_offset=args.seed_offset,
                         refine_edges=args.refine_edges, world=args.world,
                         styles=args.styles, **{k: getattr(args, k) for k in names}),
                     indent=2))
