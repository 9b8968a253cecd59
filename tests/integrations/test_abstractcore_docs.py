"""The Python examples in docs/integrations/abstractcore.md run, in order, against a loopback server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from integration_support import HAS_ABSTRACTCORE
from openai_fixture import OpenAIFixture, Reply, chat_completion

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "abstractcore.md"


def doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def calculator(body: Any) -> Reply:
    """A model that calls `add` once, then answers from the tool result."""
    messages = body.get("messages", [])
    tool_turns = [m for m in messages if m.get("role") == "tool"]
    if tool_turns:
        return Reply(body=chat_completion(content=f"2 + 3 = {tool_turns[-1]['content']}"))
    return Reply(body=chat_completion(content="", tool_calls=[{"id": "call_1", "name": "add",
                                                               "arguments": {"a": 2, "b": 3}}]))


def test_doc_examples_run(tmp_path: Path) -> None:
    blocks = doc_blocks()
    assert len(blocks) >= 4
    if not HAS_ABSTRACTCORE:  # the local-mode example needs the extra
        blocks = [b for b in blocks if "create_local_runtime" not in b]
    script = tmp_path / "doc_examples.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    with OpenAIFixture(models=("qwen3:4b", "openai/gpt-4o-mini")) as server:
        server.responder = calculator
        env = dict(os.environ, ABSTRACTCORE_URL=server.base_url, OPENAI_COMPATIBLE_URL=server.v1_url,
                   ABSTRACTCORE_AUTH_TOKEN="doc-token")
        env.pop("ABSTRACTRUNTIME_STORE", None)
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "completed {'answer': '2 + 3 = 5'}" in lines                       # hybrid
    assert any(line.startswith("waiting [{'name': 'add'") for line in lines)  # remote, before approval
    assert lines[-1] == "completed {'answer': '2 + 3 = 5'}"                   # remote, after approval
    if HAS_ABSTRACTCORE:
        assert "{'answer': '2 + 3 = 5'}" in lines                             # local
    assert (tmp_path / ".abstractruntime" / "runs").is_dir()  # default file stores
