"""``python -m icrt.train KIND`` (``python -m train KIND`` from a clone's root, ``icrt train KIND``): train an image
complexity model of a
registered kind (``train.kinds``: d2s, cmssa).

Each subcommand only parses arguments and calls the library: the kind's train config and trainer.
"""
from __future__ import annotations

import argparse
import os

from icrt.train.kinds import get_kind, kinds
from icrt.train.kinds.common import add_common_args


def build_parser(prog: str = "python -m icrt.train") -> argparse.ArgumentParser:
    from icrt.train.trainers import load_trainers

    load_trainers()
    p = argparse.ArgumentParser(prog=prog, description="Train an image complexity model.")
    trainable = [k for k in kinds() if k.trainable]
    sub = p.add_subparsers(dest="kind", metavar="{" + ",".join(k.name for k in trainable) + "}", required=True)
    for kind in trainable:
        s = sub.add_parser(kind.name, help=kind.help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_common_args(s)
        if kind.defaults:
            s.set_defaults(**kind.defaults)
        if kind.add_arguments is not None:
            kind.add_arguments(s)
    return p


def train_config(args):
    """The train config of ``args.kind`` from the parsed arguments."""
    return get_kind(args.kind).make_train_config(args)


def trainer_for(args, samples=None):
    """The trainer ``python -m train`` would build from ``args``; ``samples`` replaces ``--data``'s training set."""
    kind = get_kind(args.kind)
    return kind.trainer_class()(kind.make_train_config(args), samples=samples)


def run(args) -> int:
    """Train as ``python -m train`` does (``--resume``: continue from last.pt in ``--out``)."""
    from icrt.train.checkpoint import CheckpointError

    last = os.path.join(args.out, "last.pt")
    if args.resume and not os.path.isfile(last):
        raise CheckpointError(f"{last}: nothing to resume")
    trainer = trainer_for(args)
    if args.resume:
        trainer.load_state(last)
    trainer.fit()
    return 0


def main(argv=None, prog: str = "python -m icrt.train") -> int:
    """``prog``: the command's name in messages (``icrt train`` runs this too)."""
    from icrt.runtime.base.errors import run_command, setup_logging

    p = build_parser(prog)
    args = p.parse_args(argv)
    setup_logging()
    return run_command(f"{p.prog} {args.kind}", run, args)

