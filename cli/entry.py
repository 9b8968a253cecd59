"""The console script's entry point: the command line, with Ctrl-C covered from the first instant.

``abstractruntime.cli.launch`` imports typer and the command line's application, which takes a
moment; a Ctrl-C (or SIGTERM) arriving then would otherwise end in a Python traceback. This
module imports nothing heavy, so the interrupt is caught while those imports run as well.
"""

from __future__ import annotations

import gc
import sys
from typing import Optional

INTERRUPTED, TERMINATED = 130, 143


def run(argv: Optional[list[str]] = None) -> int:
    """Import and run the command line; an interrupt during start-up exits 130 with one line."""
    # The first import of the command line makes objects that all live as long as the process:
    # the collector, run every few hundred allocations, would scan them some thirty times for
    # nothing (5-15% of a short command). None runs while they are made; then they are frozen
    # out of later collections.
    pause = "abstractruntime.cli.launch" not in sys.modules and gc.isenabled()
    if pause:
        gc.disable()
    try:
        from .launch import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return INTERRUPTED
    finally:
        if pause:
            gc.freeze()
            gc.enable()
    return main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
