"""``icrt info [BUNDLE] [--verbose] [--json]``: a bundle's model card (``runtime.tools.info``), or its manifest as JSON."""
from __future__ import annotations

import sys

import icrt.runtime.cli.options as options
from icrt.runtime.base.errors import EXIT_OK
from icrt.runtime.cli.command import Command


def arguments(p) -> None:
    p.add_argument("model", nargs="?", metavar="BUNDLE", help="model bundle folder (default: the bundled model)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also the internals: input, preprocessing, files and their SHA-256, engines, parity, "
                        "calibration, library versions")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")


def run(args) -> int:
    from icrt.runtime.bundle.manifest import load_manifest
    from icrt.runtime.tools.info import model_card

    m = load_manifest(options.bundle(args))
    if args.json:
        import json
        sys.stdout.write(json.dumps(m.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(model_card(m, verbose=args.verbose))
    return EXIT_OK


COMMAND = Command(
    "info", help="show a bundle's model card",
    description=("Show a bundle's model card: what the model is, what it was trained on, its licence, what a "
                 "score means, its limits and accuracy."),
    examples=(("icrt info", "the bundled default model"),
              ("icrt info bundles/d2s -v", "with input, preprocessing, files, parity"),
              ("icrt info bundles/d2s --json", "the manifest")),
    arguments=arguments, run=run)
