"""Plot per-step cost against ledger length from a results file (needs matplotlib: bench venv).

    .bench-venv/bin/python benchmarks/plot.py benchmarks/results/<timestamp>.json docs/performance-flat-cost.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Read ``argv[0]`` (a results JSON), write the PNG ``argv[1]``."""
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(Path(argv[0]).read_text())
    flat = results["scenarios"]["flat_cost"]
    series = [("abstractruntime, fsync on", flat.get("fsync", []), "o-"),
              ("abstractruntime, fsync off", flat.get("none", []), "s-")]
    upstream = results["baselines"].get("upstream", {})
    if "flat" in upstream:
        series.append(("upstream 0.0.1 (never fsyncs)", upstream["flat"]["points"], "^-"))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, points, style in series:
        if points:
            ax.plot([p["ledger_length"] for p in points], [p["step_seconds"] * 1e3 for p in points], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ledger length before the step (records)")
    ax.set_ylabel("cost of one effect step (ms, median)")
    machine = results.get("machine", {})
    ax.set_title(f"Per-step cost vs ledger length ({machine.get('cpus', '?')} CPUs, {results['started_at'][:10]})",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(argv[1])
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
