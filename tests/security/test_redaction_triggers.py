"""The word groups that decide which texts are scanned for secret names: the fast computation
gives exactly what the pairwise definition gives (``_implies`` over every pair)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime.core import redaction
from abstractruntime.core.redaction import Redactor, _implies, _trigger_of, key_words


def _by_definition(keys: frozenset[str], suffixes: tuple[tuple[str, ...], ...],
                   words: frozenset[str]) -> tuple[tuple[str, ...], ...]:
    names = {_trigger_of(w) for w in (*map(key_words, keys), *suffixes, *((w,) for w in words)) if w}
    return tuple(sorted(t for t in names if not any(o != t and _implies(t, o) for o in names)))


def _computed(redactor: Redactor) -> tuple[tuple[str, ...], ...]:
    redaction._name_triggers.cache_clear()
    return redaction._name_triggers(redactor.keys, redactor.suffixes, redactor.words)


def test_the_default_rules_give_the_groups_of_the_definition() -> None:
    r = Redactor()
    assert _computed(r) == _by_definition(r.keys, r.suffixes, r.words)
    assert ("auth",) in _computed(r) and ("api", "key") in _computed(r)


_WORD = st.sampled_from(["api", "key", "secret", "token", "pass", "password", "client", "id", "auth", "a", "ab",
                         "session", "access", "x", "pwd"])
_NAME = st.lists(_WORD, min_size=1, max_size=3).map("_".join)


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(_NAME, max_size=12), suffixes=st.lists(_NAME, max_size=6), words=st.lists(_WORD, max_size=4))
def test_any_rule_set_gives_the_groups_of_the_definition(keys: list[str], suffixes: list[str],
                                                         words: list[str]) -> None:
    r = Redactor(keys=keys, suffixes=suffixes, words=words)
    assert _computed(r) == _by_definition(r.keys, r.suffixes, r.words)
