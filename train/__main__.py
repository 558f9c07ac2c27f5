"""``python -m train KIND``: see :mod:`train.cli`."""
import sys

from icrt.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
