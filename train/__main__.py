"""``python -m icrt.train KIND`` (``python -m train KIND`` from a clone's root): :mod:`icrt.train.cli`."""
import sys

from icrt.train.cli import main

if __name__ == "__main__":
    sys.exit(main(prog=f"python -m {__spec__.parent}"))  # its name in messages, as it was run
