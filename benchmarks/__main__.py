"""``python -m benchmarks`` (from the repository root): see benchmarks/runner.py."""

from __future__ import annotations

import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
