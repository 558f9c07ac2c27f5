"""``python -m icrt.export`` (``python -m export`` from a clone's root): :mod:`icrt.export.cli`."""
import sys

from icrt.export.cli import main

if __name__ == "__main__":
    sys.exit(main(prog=f"python -m {__spec__.parent}"))  # its name in messages, as it was run
