"""``icrt``, the console script: the runtime's commands (``icrt.runtime.cli``), plus ``icrt train`` and ``icrt
export``, the same programs as ``python -m icrt.train`` and ``python -m icrt.export`` (``python -m train`` / ``python
-m export`` from a clone's root), as two :class:`~icrt.runtime.cli.command.Command` s of the same shape as the others.

A console script does not put the working folder first on ``sys.path`` as ``python -m`` does, and every import goes
through ``icrt.``, so a user's own ``train.py`` or ``export.py`` there cannot shadow icrt's. ``train`` and ``export``
load PyTorch: they are imported only when one of them runs (``icrt --help`` stays fast and torch-free); without torch,
one line says which extra to install. Their arguments go to their own parsers untouched (``icrt train d2s --help`` is
``python -m icrt.train d2s --help``).
"""
from __future__ import annotations

import importlib.util
import sys

from icrt.runtime.cli.command import Command


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
        from icrt.export.cli import main
    return main(argv, prog=f"icrt {name}")


def _forwarded(name: str, help: str, example: str) -> Command:
    return Command(name, help=help, description=help, examples=((example, ""), (f"icrt {name} --help", "its options")),
                   arguments=lambda p: None, run=lambda args: run_torch_command(name, args.args), forward=True)


TRAIN = _forwarded("train", "train a D2S or CM-SSA model (PyTorch; the [train] extra): python -m icrt.train",
                   "icrt train d2s --data labels.csv --out runs/d2s --backbone tf_efficientnet_lite0 --pretrained "
                   "imagenet --text none --pool stats --fit ridge --image-size 384")
EXPORT = _forwarded("export", "turn a training checkpoint into a model bundle (PyTorch; the [train] extra): python -m "
                    "icrt.export", "icrt export --checkpoint runs/d2s/checkpoint.pt --out bundles/d2s --int8 "
                    "--calib-data labels.csv")
TORCH_COMMANDS = {c.name: c for c in (TRAIN, EXPORT)}


def main(argv=None) -> int:
    from icrt.runtime.cli.app import main as runtime_main

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TORCH_COMMANDS:  # everything after the name is the command's own
        return run_torch_command(argv[0], argv[1:])
    return runtime_main(argv, more=list(TORCH_COMMANDS.values()))


if __name__ == "__main__":
    sys.exit(main())
