"""``python -m icrt.export`` (``python -m export`` from a clone's root, ``icrt export``): see docs/export.md. Its flags and
their defaults are ``ExportOptions``' (export/options.py)."""
from __future__ import annotations

import argparse
import os
import sys


def parser(prog: str = "python -m icrt.export") -> argparse.ArgumentParser:
    from icrt.export.options import add_arguments

    p = argparse.ArgumentParser(prog=prog,
                                description="Turn a training checkpoint into a deployable model bundle.")
    p.add_argument("--checkpoint", required=True, help="DIR/checkpoint.pt written by python -m train")
    p.add_argument("--out", required=True,
                   help="bundle folder to write (built beside it, then renamed into place; an old bundle is replaced)")
    add_arguments(p)
    return p


def export(args) -> int:
    from icrt.export.core import export_checkpoint
    from icrt.export.options import from_args
    from icrt.runtime.base.errors import UserInputError
    from icrt.runtime.bundle.manifest import MANIFEST_FILE

    try:
        export_checkpoint(args.checkpoint, args.out, from_args(args))
    except OSError as e:  # e.g. no room or no permission for the bundle folder
        where = f"{e.filename}: " if isinstance(e.filename, str) else ""
        raise UserInputError(f"cannot write the bundle: {where}{e.strerror or e}") from None
    print(f"wrote {os.path.join(args.out, MANIFEST_FILE)}", file=sys.stderr)
    return 0


def main(argv=None, prog: str = "python -m icrt.export") -> int:
    """``prog``: the command's name in messages (``icrt export`` runs this too)."""
    from icrt.runtime.base.errors import run_command, setup_logging

    p = parser(prog)
    args = p.parse_args(argv)
    setup_logging()
    return run_command(p.prog, export, args)

