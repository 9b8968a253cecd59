"""``python -m abstractruntime``: the same command line as the ``abstractruntime`` script."""

from __future__ import annotations

import sys

from abstractruntime.cli.entry import run

if __name__ == "__main__":
    sys.exit(run())
