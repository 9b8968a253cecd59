"""A throwaway PostgreSQL cluster for the tests: ``initdb`` into a temporary directory, the
server on a free 127.0.0.1 port, stopped and removed at the end.

As root the server runs as the ``postgres`` OS user (PostgreSQL refuses to run as root).
Nothing listens anywhere but 127.0.0.1 and a private socket directory. ``fsync`` is off: the
tests are about the store's logic and locking, not about the server's own crash safety.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

DATABASE = "abstractruntime_test"


def find_bindir() -> Optional[Path]:
    """The directory of ``initdb`` and ``pg_ctl`` (the newest Debian cluster version), or ``None``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
                   if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def require_bindir(bindir: Optional[Path], ci: Optional[str]) -> Path:
    """``bindir``, else skip the test — or fail it when ``ci`` is ``"true"``: CI installs
    PostgreSQL (.ci/run), so there a missing server is a broken setup, never a skip."""
    import pytest

    if bindir is not None:
        return bindir
    message = "PostgreSQL is not installed (no initdb; Debian: apt-get install postgresql)"
    if ci == "true":
        pytest.fail(f"{message}: CI must run the PostgreSQL tests", pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One temporary cluster; :meth:`start` returns the URL of a fresh database in it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="abstractruntime-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.port = 0
        self.as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                               + self.log_tail())
        return done

    def log_tail(self) -> str:
        """The end of the server log (for failure messages)."""
        log = self.root / "server.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else ""

    def start(self) -> str:
        """initdb + pg_ctl start; returns ``postgresql://postgres@127.0.0.1:PORT/abstractruntime_test``."""
        self.sockets.mkdir()
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
        for attempt in range(3):
            self.port = _free_port()
            options = (f"-k {self.sockets} -h 127.0.0.1 -p {self.port} -c fsync=off -c full_page_writes=off "
                       "-c max_connections=300")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
                          "-w", "-t", "60", "start")
                break
            except RuntimeError:
                if attempt == 2:
                    raise  # the port was taken between choosing and binding it, three times
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        return self.url(DATABASE)

    def url(self, database: str) -> str:
        """A URL of ``database`` in this cluster (superuser, trust authentication)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server (fast: the data is thrown away) and remove the directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
