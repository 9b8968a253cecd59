"""The reliability battery: kill -9 loops, crash-state simulation, races, state machines, bad input, fuzzing.

Fast forms run in CI (``pytest tests/reliability``); long forms run on demand with
``python -m tests.reliability.run`` (see docs/reliability.md).
"""
