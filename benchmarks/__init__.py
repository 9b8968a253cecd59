"""Benchmarks of abstractruntime, run on demand (``python -m benchmarks``), never as unit tests.

Every speed claim is a ratio to a yardstick measured in the same run on the same machine:
an fsync'd append, upstream AbstractRuntime 0.0.1, LangGraph + SqliteSaver, DBOS on SQLite,
a bare hashing loop, the bare interpreter. See docs/performance.md.
"""
