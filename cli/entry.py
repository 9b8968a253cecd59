"""The console script's entry point: the command line, with Ctrl-C covered from the first instant.

``abstractruntime.cli.main`` imports typer, rich and every command module, which takes a
moment; a Ctrl-C (or SIGTERM) arriving then would otherwise end in a Python traceback. This
module imports nothing heavy, so the interrupt is caught while those imports run as well.
"""

from __future__ import annotations

import sys
from typing import Optional

INTERRUPTED, TERMINATED = 130, 143


def run(argv: Optional[list[str]] = None) -> int:
    """Import and run the command line; an interrupt during start-up exits 130 with one line."""
    try:
        from .main import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return INTERRUPTED
    return main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
