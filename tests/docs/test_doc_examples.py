"""Every ```python block in README.md and docs/ runs as written.

A block may be skipped only by an HTML comment ``<!-- not-run: reason -->`` on the line
before it (for fragments that need a live service); each such skip names its reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)```", re.S)


def _blocks() -> list[tuple[str, int, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            if "not-run" in match.group("before"):
                continue
            line = text.count("\n", 0, match.start("code")) + 1
            found.append((str(path.relative_to(ROOT)), line, match.group("code")))
    return found


BLOCKS = _blocks()


def test_docs_have_examples() -> None:
    assert any(name == "README.md" for name, _, _ in BLOCKS)
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize(("doc", "line", "code"), BLOCKS, ids=[f"{d}:{n}" for d, n, _ in BLOCKS])
def test_python_example_runs(doc: str, line: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "store")}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"{doc}:{line} failed:\n{proc.stdout}\n{proc.stderr}"
