"""``python -m icrt``: the ``icrt`` command."""
import sys

from icrt.cli import main

if __name__ == "__main__":
    sys.exit(main())
