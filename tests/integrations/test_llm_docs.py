"""docs/llm.md shows real sessions: each is replayed against the scripted server and its output compared.

Times, hashes, ports and latencies are normalised (``llm_sessions.normalise``); everything
else — every line a command printed, every exit code — must be what the page shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_sessions import DOC, normalise, replay, sessions

SESSIONS = sessions(DOC.read_text(encoding="utf-8"))


def test_the_page_has_a_session_for_each_feature() -> None:
    text = "\n".join(s.body for s in SESSIONS)
    for command in ("--prices", "usage", "--budget", "--raise-budget", "--answer stop", "worker --once",
                    "--max-in-flight", "watch", "--stream"):
        assert command in text, command


@pytest.mark.parametrize("session", SESSIONS, ids=[f"line{DOC.read_text()[:s.start].count(chr(10)) + 1}"
                                                   for s in SESSIONS])
def test_session_output_is_what_the_page_shows(session, tmp_path: Path) -> None:
    assert normalise(replay(session, tmp_path)) == normalise(session.body)
