"""ActorFingerprint: a stable actor_id, independent of dict order, process and hash seed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime.core.errors import InvalidInputError
from abstractruntime.identity import ActorFingerprint, compute_actor_id

METADATA = {"org": "acme", "model": {"name": "gpt", "v": 2}, "tags": ["a", "é"]}


def recipe(kind: str, display_name: str | None, metadata: dict | None) -> str:
    """The documented derivation, written out independently of the implementation."""
    text = json.dumps({"kind": kind, "display_name": display_name, "metadata": metadata or {}},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "ar_" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def test_actor_id_follows_the_documented_recipe() -> None:
    fp = ActorFingerprint.from_metadata(kind="agent", display_name="Planner", metadata=METADATA)
    assert fp.actor_id == recipe("agent", "Planner", METADATA)
    assert re.fullmatch(r"ar_[0-9a-f]{24}", fp.actor_id)
    assert (fp.kind, fp.display_name, fp.metadata) == ("agent", "Planner", METADATA)


def test_actor_ids_match_abstractruntime_0_0_1() -> None:
    # Ids that AbstractRuntime 0.0.1 computes for these inputs: ledgers written by either
    # version attribute steps to the same actor.
    assert ActorFingerprint.from_metadata(
        kind="agent", display_name="Planner", metadata=METADATA).actor_id == "ar_7a35000b603c6643ad68ffd3"
    assert ActorFingerprint.from_metadata(kind="human").actor_id == "ar_50e704cfaa2db8d9660c4968"


def test_same_inputs_give_the_same_id_in_another_process() -> None:
    code = (
        "import json, sys\n"
        "from abstractruntime.identity import ActorFingerprint\n"
        "args = json.loads(sys.argv[1])\n"
        "print(ActorFingerprint.from_metadata(**args).actor_id)\n"
    )
    args = {"kind": "service", "display_name": "billing", "metadata": {"z": [1, 2.5, None], "a": {"b": True}}}
    ids = set()
    for seed in ("0", "1", "12345"):
        out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        ids.add(out.stdout.strip())
    assert ids == {ActorFingerprint.from_metadata(**args).actor_id}


def test_metadata_order_does_not_matter_at_any_depth() -> None:
    one = {"a": 1, "b": {"x": 1, "y": [{"p": 1, "q": 2}]}}
    two = {"b": {"y": [{"q": 2, "p": 1}], "x": 1}, "a": 1}
    assert (ActorFingerprint.from_metadata(kind="agent", metadata=one).actor_id
            == ActorFingerprint.from_metadata(kind="agent", metadata=two).actor_id)


@settings(max_examples=50, deadline=None)
@given(items=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=8),
       seed=st.randoms(use_true_random=False))
def test_any_insertion_order_gives_the_same_id(items: dict, seed) -> None:
    pairs = list(items.items())
    seed.shuffle(pairs)
    assert compute_actor_id(kind="agent", metadata=dict(pairs)) == compute_actor_id(kind="agent", metadata=items)


def test_distinct_inputs_give_distinct_ids() -> None:
    ids = {
        compute_actor_id(kind="agent", metadata={"org": "acme"}),
        compute_actor_id(kind="human", metadata={"org": "acme"}),
        compute_actor_id(kind="service", metadata={"org": "acme"}),
        compute_actor_id(kind="agent", metadata={"org": "other"}),
        compute_actor_id(kind="agent", display_name="Renamed", metadata={"org": "acme"}),
        compute_actor_id(kind="agent", metadata={"org": ["acme"]}),
    }
    assert len(ids) == 6


def test_none_and_empty_metadata_are_the_same_actor() -> None:
    assert compute_actor_id(kind="agent") == compute_actor_id(kind="agent", metadata={})


@pytest.mark.parametrize("metadata", [{"x": float("nan")}, {"x": float("inf")}, {"x": {1, 2}}, {"x": object()}])
def test_metadata_that_is_not_json_is_refused(metadata: dict) -> None:
    with pytest.raises(InvalidInputError, match="not canonical JSON"):
        ActorFingerprint.from_metadata(kind="agent", metadata=metadata)


@pytest.mark.parametrize("kind", ["", "   ", None, 3])
def test_kind_must_be_a_non_empty_string(kind: object) -> None:
    with pytest.raises(InvalidInputError, match="kind"):
        ActorFingerprint.from_metadata(kind=kind)  # type: ignore[arg-type]


def test_fingerprint_is_frozen_hashable_and_owns_its_metadata() -> None:
    meta = {"team": {"name": "ops"}}
    fp = ActorFingerprint.from_metadata(kind="agent", metadata=meta)
    meta["team"]["name"] = "changed"
    assert fp.metadata == {"team": {"name": "ops"}}
    assert fp.matches_metadata()
    with pytest.raises(dataclasses.FrozenInstanceError):
        fp.kind = "human"  # type: ignore[misc]
    assert {fp, ActorFingerprint.from_metadata(kind="agent", metadata={"team": {"name": "ops"}})} == {fp}


def test_dict_round_trip_and_tamper_check() -> None:
    fp = ActorFingerprint.from_metadata(kind="agent", display_name="A", metadata={"k": [1, 2]})
    data = fp.to_dict()
    assert json.loads(json.dumps(data)) == {"actor_id": fp.actor_id, "kind": "agent", "display_name": "A",
                                            "metadata": {"k": [1, 2]}}
    assert ActorFingerprint.from_dict(data) == fp
    # Without an id it is derived; with edited metadata the stored id no longer matches.
    assert ActorFingerprint.from_dict({k: v for k, v in data.items() if k != "actor_id"}) == fp
    edited = ActorFingerprint.from_dict({**data, "metadata": {"k": [1, 3]}})
    assert edited.actor_id == fp.actor_id and not edited.matches_metadata()
