"""The shell sessions of docs/llm.md: replayed by the tests, and recorded again by running this file.

A session is a ```console block preceded by ``<!-- session: SERVER ARGS -->``; its ``$ ``
lines are commands (a trailing ``\\`` continues one), everything else is what they printed,
stdout and stderr together; ``[exit N]`` follows a command that exited with N (not 0). Each
session runs in a fresh store, from the repository's root, against its own
``docs/examples/llm/llm_server.py`` started with SERVER ARGS, whose URL is in ``$LLM``.

Values that differ from one run to the next — times, hashes, latencies, ports — are
normalised before output is compared (:func:`normalise`).

    python tests/integrations/llm_sessions.py            # print docs/llm.md with fresh outputs
    python tests/integrations/llm_sessions.py --write    # and write it back
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "llm.md"
SERVER = REPO / "docs" / "examples" / "llm" / "llm_server.py"
SESSION = re.compile(r"<!-- session:(?P<args>[^>]*)-->\n```console\n(?P<body>.*?)```", re.S)

_NORMAL = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00"), "<time>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<sha256>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"\b\d+(\.\d+)? ms\b"), "<n> ms"),
    (re.compile(r'"latency_ms":\s*\d+(\.\d+)?'), '"latency_ms":<n>'),
    (re.compile(r"/tmp/\S+?/store\b"), "<store>"),
    (re.compile(r" as \S+ \(Ctrl-C to stop\)"), " as <worker> (Ctrl-C to stop)"),
]


def normalise(text: str) -> str:
    """``text`` with what changes between runs replaced by placeholders, and no trailing spaces."""
    for pattern, replacement in _NORMAL:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


@dataclass
class Session:
    """One session of the page: where it is, the server's arguments, its commands and its text."""

    start: int
    end: int
    server_args: list[str]
    body: str

    @property
    def commands(self) -> list[str]:
        out: list[str] = []
        lines = self.body.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command[:-1].rstrip() + "\n" + lines[i]
                out.append(command)
            i += 1
        return out


def sessions(text: str) -> list[Session]:
    """The sessions of a page."""
    return [Session(m.start("body"), m.end("body"), shlex.split(m.group("args")), m.group("body"))
            for m in SESSION.finditer(text)]


def replay(session: Session, workdir: Path) -> str:
    """Run the session's commands; the transcript in the page's form (commands, output, exits)."""
    url_file = workdir / "llm-url"
    server = subprocess.Popen([sys.executable, str(SERVER), str(url_file), *session.server_args],
                              cwd=workdir)
    try:
        deadline = time.monotonic() + 20
        while not (url_file.exists() and url_file.read_text().strip()):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the session's LLM server did not start")
            time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ABSTRACTRUNTIME_", "OTEL_"))}
        env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
                   LLM=url_file.read_text().strip(), ABSTRACTRUNTIME_STORE=str(workdir / "store"),
                   ABSTRACTRUNTIME_WORKFLOWS=str(REPO / "docs" / "examples" / "llm"), WORK=str(workdir),
                   ABSTRACTRUNTIME_NO_INPUT="1", NO_COLOR="1", HOME=str(workdir), COLUMNS="120")
        script = ["exec 2>&1"]
        for command in session.commands:
            shown = "\n".join(("$ " if i == 0 else "") + part + (" \\" if i < command.count("\n") else "")
                              for i, part in enumerate(command.split("\n")))
            script.append(f"printf '%s\\n' {shlex.quote(shown)}")
            script.append(command.replace("\n", " "))
            script.append('rc=$?; [ "$rc" -eq 0 ] || echo "[exit $rc]"')
        proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        return proc.stdout
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str]) -> int:
    """Print (``--write``: also save) docs/llm.md with every session's output recorded afresh."""
    text = DOC.read_text(encoding="utf-8")
    out, last = [], 0
    for session in sessions(text):
        with tempfile.TemporaryDirectory() as tmp:
            # The page shows a readable place for the store; the tests accept any.
            transcript = replay(session, Path(tmp)).replace(tmp, "/tmp/llm-demo")
        out.append(text[last:session.start])
        out.append(transcript if transcript.endswith("\n") else transcript + "\n")
        last = session.end
    out.append(text[last:])
    page = "".join(out)
    if "--write" in argv:
        DOC.write_text(page, encoding="utf-8")
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
