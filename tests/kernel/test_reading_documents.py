"""Reading stored documents: ``show`` answers as its one-pass definition does (and hands a
marker-free value back itself); a key given twice is refused, named, at any depth."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st

from abstractruntime.core.markers import LIT, REF, SECRET, SHOWN, marker_kind, show

HEX = "ab" * 32


def reference(value: Any) -> Any:
    """The definition: secrets as their text, ``$lit`` unwrapped, the same object when unchanged."""
    if isinstance(value, dict):
        kind = marker_kind(value)
        if kind == "secret":
            return value[SHOWN]
        if kind == "lit":
            return {k: reference(v) for k, v in value[LIT].items()}
        if kind is not None:
            return value
        out = {k: reference(v) for k, v in value.items()}
        return out if any(out[k] is not value[k] for k in value) else value
    if isinstance(value, list):
        items = [reference(item) for item in value]
        return items if any(a is not b for a, b in zip(items, value)) else value
    return value


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
markers = st.sampled_from([{SECRET: HEX, SHOWN: "[REDACTED]"}, {REF: HEX}, {LIT: {"$v": "user data"}},
                           {SECRET: "not hex", SHOWN: "x"}, {"$v": HEX, "other": 1}])
values = st.recursive(scalars | markers, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(["a", "b", "vars", "$val", "k"]), inner, max_size=4),
                      max_leaves=20)


def _outcome(fn: Any, value: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(value)
    except ValueError as exc:
        return "error", str(exc)


@settings(max_examples=300, deadline=None)
@given(values)
def test_show_matches_its_definition(value: Any) -> None:
    assert _outcome(show, value) == _outcome(reference, value)


@settings(max_examples=100, deadline=None)
@given(st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=3).filter(lambda k: not k.startswith("$")), inner, max_size=4)))
def test_a_value_without_markers_is_handed_back_itself(value: Any) -> None:
    assert show(value) is value


def test_a_key_given_twice_is_refused_at_any_depth_and_named() -> None:
    import pytest

    from abstractruntime.core.json_codec import loads_strict

    assert loads_strict(b'{"a": 1, "b": {"c": [{"d": 2}]}}') == {"a": 1, "b": {"c": [{"d": 2}]}}
    for text, key in (('{"a": 1, "b": 2, "b": 3, "a": 4}', "b"), ('{"x": {"y": 1, "y": 1}}', "y"),
                      ('[{"k": 1}, {"k": 1, "j": 2, "k": 3}]', "k")):
        with pytest.raises(ValueError, match=f"duplicate key '{key}'"):
            loads_strict(text)
