"""The shell example of docs/integrations/abstractcore.md runs against the scripted sample LLM server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "integrations" / "abstractcore.md"
SERVER = REPO / "sample_runs" / "scripted_llm.py"


def test_cli_shell_example_runs(tmp_path: Path) -> None:
    (block,) = re.findall(r"```sh\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    # Only `run` names the LLM (no ABSTRACTRUNTIME_* variable is set below): `tools approve`
    # completing the run shows the configuration was stored with it.
    assert block.count("--llm") == 1 and "ABSTRACTRUNTIME_LLM" not in block
    url_file = tmp_path / "url"
    server = subprocess.Popen([sys.executable, str(SERVER), str(url_file)])
    try:
        deadline = time.monotonic() + 10
        while not (url_file.exists() and url_file.read_text().strip()):
            assert time.monotonic() < deadline and server.poll() is None, "scripted server did not start"
            time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_")}
        env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
                   ABSTRACTCORE_URL=url_file.read_text().strip(), HOME=str(tmp_path), NO_COLOR="1")
        script = block + '\nabstractruntime runs show "$RUN" --json\n'
        proc = subprocess.run(["sh", "-eu", "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert "tool_call\tcall_email send_email" in proc.stdout
    assert '"status": "completed"' in proc.stdout
    assert "Sent the Paris forecast to ana@example.com." in proc.stdout
