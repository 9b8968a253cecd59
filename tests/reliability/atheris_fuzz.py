"""Coverage-guided fuzzing of one parser with atheris (optional; ``pip install atheris``).

    python -m tests.reliability.atheris_fuzz TARGET SECONDS

TARGET is one of ledger, checkpoint, snapshot, bookmarks (see fuzz_targets.py). Seeds are
valid documents written by the real code. Exits non-zero with the input on the first
exception that is not an AbstractRuntimeError. The targets' files and the corpus live in a
temporary directory; libFuzzer may end the process before it is removed, so
``python -m tests.reliability.run`` points ``TMPDIR`` at a directory of its own and removes that.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main() -> None:
    """Run atheris on one target for a number of seconds."""
    import atheris

    target_name, seconds = sys.argv[1], int(sys.argv[2])
    with atheris.instrument_imports():
        from . import fuzz_targets
    with tempfile.TemporaryDirectory(prefix=f"atheris-{target_name}-") as workdir:
        bench = fuzz_targets.FuzzBench(Path(workdir) / "bench")
        target = bench.targets()[target_name]
        corpus = Path(workdir) / "corpus"
        corpus.mkdir()
        (corpus / "seed0").write_bytes(bench.seeds[target_name])

        def one_input(data: bytes) -> None:
            target(data)  # raises ForeignException for anything but a project error

        atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", "-rss_limit_mb=2048", str(corpus)], one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
