"""``icrt info [BUNDLE] [--json]``: a bundle's model card (``runtime.info``), or its manifest as JSON."""
from __future__ import annotations

import sys

from ..errors import EXIT_OK


def add_command(subparsers):
    p = subparsers.add_parser("info", help="show a bundle's model card")
    p.add_argument("model", nargs="?", metavar="BUNDLE", help="model bundle folder (default: the bundled model)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    return "info", run


def run(args) -> int:
    from ..info import model_card
    from ..manifest import load_manifest
    from . import options

    m = load_manifest(options.bundle(args))
    if args.json:
        import json
        sys.stdout.write(json.dumps(m.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(model_card(m))
    return EXIT_OK
