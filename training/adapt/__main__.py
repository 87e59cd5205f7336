"""``python -m training.adapt``: the ``sarveg adapt`` command."""

import sys

from training.adapt.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
