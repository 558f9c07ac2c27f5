"""``python -m icrt``: the ``icrt`` command."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
