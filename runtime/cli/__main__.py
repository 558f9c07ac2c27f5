"""``python -m icrt.runtime.cli``: the runtime's ``icrt`` commands."""
import sys

from icrt.runtime.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
