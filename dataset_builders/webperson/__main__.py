"""``python -m dataset_builders.webperson <stage> ...``: see ``--help``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
