"""Secret redaction, applied to ledger records before they are hashed and written.

Two kinds of rule, both documented in docs/redaction.md:

**Keys.** A key is split into words — case, ``_``, ``-``, ``.``, spaces and camelCase
(``accessToken``, ``APIKey``, ``AWS_SECRET_ACCESS_KEY``) all separate words — and the value
under it is replaced by ``"[REDACTED]"`` when the words joined by ``_`` (or with no
separator) are one of :data:`DEFAULT_SECRET_KEYS`, or end with one of
:data:`DEFAULT_SECRET_SUFFIXES` (``token``, ``secret``, ``api_key``, ``private_key``, ...),
or contain one of :data:`DEFAULT_SECRET_WORDS` (``password``, ``pwd``, ...) — unless they
are one of :data:`DEFAULT_SAFE_KEYS` (``next_page_token``, ``eos_token``, ...). A lone
``key`` or ``token_count``, ``max_tokens``, ``usage``, ``primary_key``, ``keyboard`` are
not secrets. ``true``/``false``/``null`` under a secret key are kept (they hold no secret).
Headers given as a list of pairs (``[["Authorization", "Bearer x"]]``) or of
``{"name"|"key": ..., "value": ...}`` objects are judged by the pair's name.

**Values.** Inside every string, wherever it is: PEM private keys, JWTs, ``Bearer ...`` and
``Basic ...`` credentials, well-known provider key formats (:data:`PROVIDER_KEY_PATTERN`),
the password of a ``scheme://user:password@host`` URL, and ``name=value`` / ``name: value``
/ ``"name": "value"`` text whose name is a secret key. Only the secret part of the string
is replaced (``"Bearer [REDACTED]"``), so the rest stays readable.

Workflows add rules with ``Redactor(extra_keys=..., extra_patterns=...)`` or by declaring
``redact_keys`` / ``redact_patterns`` on their module or ``WorkflowSpec``
(:func:`declared_rules`, :meth:`Redactor.for_workflow`).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Iterable, Optional, Pattern, Sequence, Union

from .canonical import find_unstorable
from .errors import InvalidInputError

REDACTED = "[REDACTED]"

# Attributes a workflow module or ``WorkflowSpec`` may set: extra secret keys (a list of str)
# and extra value patterns (a list of regex strings or compiled patterns).
REDACT_KEYS_ATTR, REDACT_PATTERNS_ATTR = "redact_keys", "redact_patterns"

DEFAULT_SECRET_KEYS: frozenset[str] = frozenset({
    "api_key", "apikey", "authorization", "proxy_authorization", "password", "passwd", "pwd",
    "secret", "secrets", "token", "access_token", "refresh_token", "id_token", "session_token",
    "client_secret", "private_key", "cookie", "cookies", "set_cookie", "x_api_key", "credentials",
    "credential", "passphrase", "dsn", "jwt", "auth", "bearer", "connection_string", "conn_str",
})
DEFAULT_SECRET_SUFFIXES: tuple[str, ...] = (
    "_api_key", "_apikey", "_token", "_secret", "_password", "_passwd", "_pwd", "_passphrase", "_passcode",
    "_private_key", "_secret_key", "_access_key", "_signing_key", "_encryption_key", "_master_key",
    "_session_key", "_subscription_key", "_account_key", "_auth", "_authorization", "_cookie", "_cookies",
    "_credentials", "_credential", "_dsn", "_jwt", "_connection_string", "_secret_string", "_secret_binary",
)
DEFAULT_SECRET_WORDS: frozenset[str] = frozenset({"password", "passwd", "pwd", "passphrase", "passcode"})
DEFAULT_SAFE_KEYS: frozenset[str] = frozenset({
    # Pagination cursors and cancellation handles are called tokens but grant nothing.
    "next_token", "page_token", "next_page_token", "prev_page_token", "continuation_token",
    "pagination_token", "sync_token", "cancel_token", "cancellation_token",
    # Counts and tokenizer vocabulary in LLM requests and results.
    "max_token", "min_token", "num_token", "total_token", "eos_token", "bos_token", "pad_token",
    "unk_token", "sep_token", "cls_token", "mask_token", "stop_token", "start_token", "end_token",
})

# Fixed formats of provider credentials, with boundaries so words that merely contain the
# prefix (``task-...``, ``disk-...``) are left alone.
PROVIDER_KEY_PATTERN = (
    r"(?<![A-Za-z0-9_-])(?:sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abposre]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}|(?:AKIA|ASIA)[A-Z0-9]{16}"
    r"|AIza[A-Za-z0-9_-]{30,}|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{20,}"
    r"|hf_[A-Za-z0-9]{30,}|glpat-[A-Za-z0-9_-]{20,}|npm_[A-Za-z0-9]{36}|ya29\.[A-Za-z0-9_-]{20,})"
    r"(?![A-Za-z0-9])"
)
# Each entry: (name, pattern, triggers). A group named ``secret`` marks the part replaced;
# without one the whole match is. ``triggers`` are groups of lower-case substrings the text
# must contain (one of each group) for the pattern to be tried at all: scanning a long text
# with a regex costs far more than a few substring checks.
DEFAULT_VALUE_PATTERNS: tuple[tuple[str, str, tuple[tuple[str, ...], ...]], ...] = (
    ("pem_private_key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----(?s:.*?)"
                        r"(?:-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\Z)", (("-----begin",),)),
    ("jwt", r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", (("eyj",),)),
    # A bearer token has a digit or is long: "the bearer of this letter" is not one.
    ("bearer", r"(?i:\bbearer)\s+(?P<secret>(?=[A-Za-z._~+/-]*[0-9])[A-Za-z0-9._~+/-]{6,}=*"
               r"|[A-Za-z0-9._~+/-]{16,}=*)", (("bearer",),)),
    ("basic", r"(?i:\bbasic)(?P<b64cred>)\s+(?P<secret>[A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])", (("basic",),)),
    ("provider_key", PROVIDER_KEY_PATTERN, (("sk-", "sk_", "rk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
                                             "github_pat_", "xox", "xapp-", "akia", "asia", "aiza", "whsec_",
                                             "hf_", "glpat-", "npm_", "ya29."),)),
    ("url_password", r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@?#]*:(?P<secret>[^\s@/?#]+)@", (("://",), ("@",))),
)
_TRIGGERS = {pattern: triggers for _, pattern, triggers in DEFAULT_VALUE_PATTERNS}
_DEFAULT_PATTERNS: tuple[str, ...] = tuple(p for _, p, _ in DEFAULT_VALUE_PATTERNS)

# ``name=value``, ``name: value`` and ``"name": "value"`` inside text; the name decides.
_NAMED_VALUE = re.compile(
    r"""(?:(?P<q>["'])(?P<qname>[A-Za-z_][A-Za-z0-9_.-]{0,100})(?P=q)\s*:\s*"""
    r"""|(?<![A-Za-z0-9_.])(?P<name>[A-Za-z_][A-Za-z0-9_.-]{0,100})[ \t]*(?:=|:(?!//))[ \t]*)""")
_QUOTED = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'""")
_UNQUOTED = re.compile(r"""(?:(?i:bearer|basic|token)[ \t]+)?(?P<v>\[REDACTED\]|[^\s&;,"'<>()\[\]{}]+)""")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=[0-9])"
                         r"|(?<=[0-9])(?=[A-Za-z])")
_PAIR_NAME_FIELDS = ("name", "key", "header", "field")
_CACHE_LIMIT = 4096
_PLAIN = (str, int, float, bool, type(None))  # exact classes; subclasses take the full path

RedactionPath = tuple[Union[str, int], ...]
PatternLike = Union[str, Pattern[str]]


def key_words(key: str) -> tuple[str, ...]:
    """``"AWS_SECRET_ACCESS_KEY"``, ``"awsSecretAccessKey"`` → ``("aws", "secret", "access", "key")``.

    Trailing all-digit words are dropped (``password2`` reads as ``password``).
    """
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    while words and words[-1].isdigit():
        words.pop()
    return tuple(words)


def _compile(pattern: PatternLike) -> Pattern[str]:
    try:
        return pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise InvalidInputError(f"Invalid redaction pattern {pattern!r}: {exc}") from None


class Redactor:
    """Replaces secrets in a JSON-like value, recursively, returning a new structure.

    ``keys``/``suffixes``/``words``/``safe_keys``/``patterns`` replace the defaults (pass
    ``patterns=()`` to judge by keys only); ``extra_keys``/``extra_suffixes``/``extra_patterns``
    add to them. An extra pattern may mark the secret part with a group named ``secret``.
    """

    def __init__(
        self,
        *,
        keys: Iterable[str] = DEFAULT_SECRET_KEYS,
        suffixes: Iterable[str] = DEFAULT_SECRET_SUFFIXES,
        extra_keys: Iterable[str] = (),
        extra_suffixes: Iterable[str] = (),
        words: Iterable[str] = DEFAULT_SECRET_WORDS,
        safe_keys: Iterable[str] = DEFAULT_SAFE_KEYS,
        patterns: Iterable[PatternLike] = _DEFAULT_PATTERNS,
        extra_patterns: Iterable[PatternLike] = (),
    ) -> None:
        self._args: dict[str, tuple[Any, ...]] = dict(keys=tuple(keys), suffixes=tuple(suffixes), extra_keys=tuple(extra_keys),
                          extra_suffixes=tuple(extra_suffixes), words=tuple(words), safe_keys=tuple(safe_keys),
                          patterns=tuple(patterns), extra_patterns=tuple(extra_patterns))
        a = self._args
        for name in ("keys", "suffixes", "extra_keys", "extra_suffixes", "words", "safe_keys"):
            if any(not isinstance(k, str) for k in a[name]):
                raise InvalidInputError(f"Redactor {name} must be strings")
        explicit = {"_".join(key_words(k)) for k in (*a["keys"], *a["extra_keys"])}
        self.keys = frozenset(explicit | {k.replace("_", "") for k in explicit}) - {""}
        self.suffixes = tuple(w for w in (key_words(s) for s in (*a["suffixes"], *a["extra_suffixes"])) if w)
        self.words = frozenset(w for k in a["words"] for w in key_words(k))
        self.safe_keys = frozenset("_".join(key_words(k)) for k in a["safe_keys"])
        self.patterns = tuple(_compile(p) for p in (*a["patterns"], *a["extra_patterns"]))
        self._scans = tuple((p, _TRIGGERS.get(p.pattern, ())) for p in self.patterns)
        # The last word of every secret name: a text naming a secret key contains one of them.
        names = {w[-1] for w in (*map(key_words, self.keys), *self.suffixes) if w} | self.words
        self._name_triggers = tuple(t for t in names if not any(o != t and o in t for o in names))
        self._verdicts: dict[str, bool] = {}

    def is_secret_key(self, key: object) -> bool:
        """True when values under ``key`` must never be recorded (see the module docstring)."""
        if not isinstance(key, str):
            return False
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) >= _CACHE_LIMIT:
                self._verdicts.clear()
            verdict = self._verdicts[key] = self._judge(key)
        return verdict

    def _judge(self, key: str) -> bool:
        words = key_words(key)
        joined = "_".join(words)
        if not words:
            return False
        if joined in self.keys or joined.replace("_", "") in self.keys:
            return True
        if joined in self.safe_keys:
            return False
        if any(words[-len(s):] == s for s in self.suffixes):
            return True
        return not self.words.isdisjoint(words)

    def redact_text(self, text: str) -> str:
        """``text`` with every secret the value patterns find replaced (the rest kept)."""
        if len(text) < 8:  # shorter than any pattern can match with a secret in it
            return text
        low = text.lower()
        for pattern, triggers in self._scans:
            if all(any(t in low for t in group) for group in triggers):
                text = pattern.sub(self._replace_match, text)
        if ("=" in text or ":" in text) and any(t in low for t in self._name_triggers):
            text = self._redact_named(text)
        return text

    @staticmethod
    def _replace_match(match: re.Match[str]) -> str:
        groups = match.re.groupindex
        if "secret" not in groups or match.group("secret") is None:
            return REDACTED
        if "b64cred" in groups and not _is_basic_credential(match.group("secret")):
            return match.group(0)
        (start, end), offset, whole = match.span("secret"), match.start(), match.group(0)
        return whole[: start - offset] + REDACTED + whole[end - offset:]

    def _redact_named(self, text: str) -> str:
        out: list[str] = []
        pos = 0
        for match in _NAMED_VALUE.finditer(text):
            if match.start() < pos or not self.is_secret_key(match.group("qname") or match.group("name")):
                continue
            quoted = _QUOTED.match(text, match.end())
            if quoted is not None:
                start, end = quoted.start() + 1, quoted.end() - 1
            else:
                plain = _UNQUOTED.match(text, match.end())
                if plain is None:
                    continue
                start, end = plain.span("v")
            if end <= start or text[start:end] == REDACTED:
                continue
            out.append(text[pos:start])
            out.append(REDACTED)
            pos = end
        return "".join(out) + text[pos:] if out else text

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` with secrets replaced by ``"[REDACTED]"`` (tuples become lists)."""
        return self._walk_root(value, None)

    def redact_collect(self, value: Any) -> tuple[Any, list[tuple[RedactionPath, Any]]]:
        """:meth:`redact`, plus ``(path, original)`` for every value it replaced.

        ``path`` holds the keys and list indices from the root to the replaced value (a
        string changed by a value pattern is listed whole). Setting each original back at
        its path in the redacted copy gives a value equal to the input.
        """
        found: list[tuple[RedactionPath, Any]] = []
        return self._walk_root(value, found), found

    def redact_at(self, path: Sequence[Union[str, int]], value: Any) -> tuple[Any, list[tuple[RedactionPath, Any]]]:
        """:meth:`redact_collect` for a ``value`` that sits at ``path`` inside a larger structure.

        For records that carry a change as ``(path, value)`` — a delta setting
        ``vars.password`` holds ``["password"]`` and the value, and no dict key names the
        secret. ``value`` is redacted whole when any key on ``path`` is a secret key;
        returned paths are relative to ``value`` (``()`` for the value itself).
        """
        if any(self.is_secret_key(part) for part in path) and _redactable(value):
            return REDACTED, [((), value)]
        return self.redact_collect(value)

    def _walk_root(self, value: Any, found: Optional[list[tuple[RedactionPath, Any]]]) -> Any:
        try:
            return self._walk(value, () if found is not None else None, found)
        except RecursionError:
            # A cycle recurses until Python stops it; say which, as canonical_json would.
            where = find_unstorable(value)
            detail = f"it contains {where}" if where and "cycle" in where else "it is nested too deeply to store"
            raise InvalidInputError(f"Value is not canonical JSON: {detail}") from None

    # ``path`` is None when nothing is collected: building paths is most of the walk's cost.
    def _walk(self, value: Any, path: Optional[RedactionPath], found: Optional[list[tuple[RedactionPath, Any]]],
              ) -> Any:
        if isinstance(value, str):
            if len(value) < 8:
                return value
            new = self.redact_text(value)
            if found is not None and new != value:
                found.append((path, value))  # type: ignore[arg-type]
            return new
        if isinstance(value, dict):
            return self._walk_dict(value, path, found)
        if not isinstance(value, (list, tuple)):
            return value
        pairs = _is_pair_list(value)
        out: list[Any] = []
        for i, item in enumerate(value):
            if item.__class__ in _PLAIN and (item.__class__ is not str or len(item) < 8):
                out.append(item)  # the common case, without a call
                continue
            sub = None if path is None else (*path, i)
            if pairs and self.is_secret_key(item[0]) and _redactable(item[1]):
                if found is not None:
                    found.append(((*sub, 1), item[1]))  # type: ignore[misc]
                out.append([self._walk(item[0], None if sub is None else (*sub, 0), found), REDACTED])
            else:
                out.append(self._walk(item, sub, found))
        return out

    def _walk_dict(self, value: dict[str, Any], path: Optional[RedactionPath],
                   found: Optional[list[tuple[RedactionPath, Any]]]) -> dict[str, Any]:
        named = _pair_object_name(value) if "value" in value or "Value" in value else None
        named_secret = named is not None and self.is_secret_key(named)
        is_secret = self.is_secret_key
        out: dict[str, Any] = {}
        for k, v in value.items():
            if (is_secret(k) or (named_secret and k in ("value", "Value"))) and _redactable(v):
                if found is not None:
                    found.append(((*path, k), v))  # type: ignore[misc]
                out[k] = REDACTED
            elif v.__class__ in _PLAIN and (v.__class__ is not str or len(v) < 8):
                out[k] = v  # the common case, without a call
            else:
                out[k] = self._walk(v, None if path is None else (*path, k), found)
        return out

    def extended(self, *, extra_keys: Iterable[str] = (), extra_patterns: Iterable[PatternLike] = (),
                 extra_suffixes: Iterable[str] = ()) -> "Redactor":
        """A new redactor with these rules added to this one's."""
        args = dict(self._args)
        args["extra_keys"] = (*args["extra_keys"], *extra_keys)
        args["extra_suffixes"] = (*args["extra_suffixes"], *extra_suffixes)
        args["extra_patterns"] = (*args["extra_patterns"], *extra_patterns)
        return type(self)(**args)

    def for_workflow(self, source: object) -> "Redactor":
        """This redactor plus the rules ``source`` declares (see :func:`declared_rules`)."""
        keys, patterns = declared_rules(source)
        return self.extended(extra_keys=keys, extra_patterns=patterns) if keys or patterns else self


def declared_rules(source: object) -> tuple[tuple[str, ...], tuple[PatternLike, ...]]:
    """The ``redact_keys`` and ``redact_patterns`` a workflow module, ``WorkflowSpec`` or mapping declares.

    Either may be absent. Raises :class:`InvalidInputError` for anything but an iterable of
    strings (keys) or of regex strings / compiled patterns (patterns), or an invalid regex.
    """
    def get(name: str) -> Any:
        return source.get(name) if isinstance(source, dict) else getattr(source, name, None)

    keys, patterns = get(REDACT_KEYS_ATTR) or (), get(REDACT_PATTERNS_ATTR) or ()
    if isinstance(keys, str) or isinstance(patterns, (str, re.Pattern)):
        raise InvalidInputError(f"{REDACT_KEYS_ATTR} and {REDACT_PATTERNS_ATTR} must be lists, not single values")
    try:
        keys, patterns = tuple(keys), tuple(patterns)
    except TypeError:
        raise InvalidInputError(f"{REDACT_KEYS_ATTR} and {REDACT_PATTERNS_ATTR} must be lists") from None
    if any(not isinstance(k, str) or not k.strip() for k in keys):
        raise InvalidInputError(f"{REDACT_KEYS_ATTR} must hold non-empty strings, not {keys!r}")
    for pattern in patterns:
        _compile(pattern)
    return keys, patterns


def _redactable(value: Any) -> bool:
    # true/false/null say nothing secret, and keeping them keeps flags like use_auth readable.
    return value is not None and not isinstance(value, bool)


def _is_pair_list(value: Any) -> bool:
    """A non-empty list of ``[name, value]`` pairs (how many HTTP clients hold headers)."""
    for item in value:
        if item.__class__ not in (list, tuple) or len(item) != 2 or item[0].__class__ is not str:
            return False
    return bool(value)


def _pair_object_name(value: dict[str, Any]) -> Optional[str]:
    """The name in a ``{"name": ..., "value": ...}`` header object (HAR, Postman, AWS tags), if it is one."""
    if ("value" not in value and "Value" not in value) or len(value) > 4:
        return None
    for field in _PAIR_NAME_FIELDS:
        for candidate in (field, field.capitalize()):
            name = value.get(candidate)
            if isinstance(name, str):
                return name
    return None


def _is_basic_credential(text: str) -> bool:
    """``Basic`` auth is base64 of ``user:password``; plain words after "basic" are not."""
    try:
        return b":" in base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False


class NoRedaction(Redactor):
    """Records everything as given (for tests of the redaction itself)."""

    def redact(self, value: Any) -> Any:
        """``value`` unchanged."""
        return value

    def redact_collect(self, value: Any) -> tuple[Any, list[tuple[RedactionPath, Any]]]:
        """``(value, [])``: nothing is replaced."""
        return value, []

    def redact_at(self, path: Sequence[Union[str, int]], value: Any) -> tuple[Any, list[tuple[RedactionPath, Any]]]:
        """``(value, [])``: nothing is replaced."""
        return value, []
