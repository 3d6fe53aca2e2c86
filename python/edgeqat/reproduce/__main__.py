"""``python -m edgeqat.reproduce``: see :mod:`edgeqat.reproduce.cli`."""

import sys

from .cli import main

sys.exit(main(prog="python -m edgeqat.reproduce"))
