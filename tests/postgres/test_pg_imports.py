"""psycopg is loaded when a PostgreSQL store is opened, not when its modules are imported."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = ["schema", "db", "runs", "ledger", "marks", "artifacts", "store", "transfer", "copy", "verify"]

PROBE = """
import importlib, json, sys
import abstractruntime.storage.postgres as package
for name in sys.argv[1:]:
    importlib.import_module("abstractruntime.storage.postgres." + name)
for name in package.__all__:
    getattr(package, name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "psycopg")))
"""


def test_importing_the_postgres_package_loads_no_driver() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, *MODULES], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
