"""``icrt``, the console script: the runtime's commands (``runtime.cli``), plus ``icrt train`` and ``icrt export``,
the same commands as ``python -m train`` and ``python -m export``.

A console script does not put the working folder first on ``sys.path`` as ``python -m`` does, so a user's own
``train.py`` or ``export.py`` there cannot shadow icrt's. ``train`` and ``export`` load PyTorch: they are imported only
when one of them runs (``icrt --help`` stays fast and torch-free); without torch, one line says which extra to install.
Their arguments go to their own parsers untouched (``icrt train d2s --help`` is ``python -m train d2s --help``).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys

TORCH_COMMANDS = {
    "train": ("train a D2S or CM-SSA model (PyTorch; the [train] extra): python -m train",
              "icrt train d2s --data labels.csv --out runs/d2s --backbone tf_efficientnet_lite0 --pretrained "
              "imagenet --text none --pool stats --fit ridge --image-size 384"),
    "export": ("turn a training checkpoint into a model bundle (PyTorch; the [train] extra): python -m export",
               "icrt export --checkpoint runs/d2s/checkpoint.pt --out bundles/d2s --int8 --calib-data labels.csv"),
}


def _adder(name: str):
    def add_command(subparsers):
        help_text, example = TORCH_COMMANDS[name]
        p = subparsers.add_parser(name, help=help_text, add_help=False, description=help_text,
                                  epilog=f"example:\n  {example}\n\n`icrt {name} --help` lists its options.",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("args", nargs=argparse.REMAINDER, help=f"the arguments of python -m {name}")
        return name, lambda args: run_torch_command(name, args.args)
    return add_command


def run_torch_command(name: str, argv: list[str]) -> int:
    """``icrt train`` / ``icrt export``: the command's own ``main`` with ``argv``; one line without torch."""
    from icrt.runtime.base.errors import UnavailableError, run_command

    try:
        missing = importlib.util.find_spec("torch") is None
    except (ImportError, ValueError):  # a broken or blocked torch
        missing = True
    if missing:
        from icrt.runtime.base.install import extra_hint

        def refuse():
            raise UnavailableError(f"icrt {name} needs PyTorch, which this install leaves out; {extra_hint('train')}")
        return run_command("icrt", refuse)
    if name == "train":
        from icrt.train.cli import main
    else:
        from icrt.export.__main__ import main
    return main(argv, prog=f"icrt {name}")


def main(argv=None) -> int:
    from icrt.runtime.cli.app import main as runtime_main

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TORCH_COMMANDS:  # everything after the name is the command's own
        return run_torch_command(argv[0], argv[1:])
    return runtime_main(argv, more=[_adder(name) for name in TORCH_COMMANDS])


if __name__ == "__main__":
    sys.exit(main())
