"""Secret redaction, applied to ledger records before they are hashed and written.

Two kinds of rule, both documented in docs/redaction.md:

**Keys.** A key is a secret when the whole key or its last segment is in the vocabulary. It
is split into segments — case, ``_``, ``-``, ``.``, spaces and camelCase (``accessToken``,
``APIKey``, ``AWS_SECRET_ACCESS_KEY``) all separate them — and the value under it is replaced
by ``"[REDACTED]"`` when the segments joined by ``_`` (or with no separator) are one of
:data:`DEFAULT_SECRET_KEYS`, or end with one of :data:`DEFAULT_SECRET_SUFFIXES` (``token``,
``pass``, ``pin``, ``otp``, ``cvv``, or longer entries such as ``api_key``, ``private_key_id``
whose last word alone is no secret), or contain one of :data:`DEFAULT_SECRET_WORDS`
(``password``, ``pwd``, ...) — unless they are one of :data:`DEFAULT_SAFE_KEYS`
(``next_page_token``, ``eos_token``, ...). ``db_pass``, ``PASS``, ``userPin`` are secrets;
a lone ``key``, ``passenger``, ``pinned``, ``pass_rate``, ``token_count``, ``max_tokens``,
``primary_key`` are not. ``true``/``false``/``null`` under a secret key are kept.
Headers given as a list of pairs (``[["Authorization", "Bearer x"]]``) or of
``{"name"|"key": ..., "value": ...}`` objects are judged by the pair's name.

**Values.** Inside every string, wherever it is: PEM private keys, JWTs, ``Bearer ...``,
``Token ...`` and ``Basic ...`` credentials, well-known provider key formats
(:data:`PROVIDER_KEY_PATTERN`), the password of a ``scheme://user:password@host`` URL (also
with ``/``, spaces or ``@`` in it), ``curl -u user:pw``, ``mysql -pPW``, Slack and Discord
webhook URLs, HTTP Digest ``response=``, and ``name=value`` / ``name: value`` /
``"name": "value"`` text whose name is a secret key. Only the secret part of the string is
replaced (``"Bearer [REDACTED]"``), so the rest stays readable. :meth:`Redactor.redact_error`
applies the same to the text of an error, plus values the caller knows are secret.

Workflows add rules with ``Redactor(extra_keys=..., extra_patterns=...)`` or by declaring
``redact_keys`` / ``redact_patterns`` on their module or ``WorkflowSpec``
(:func:`declared_rules`, :meth:`Redactor.for_workflow`).
"""

from __future__ import annotations

import binascii
import functools
import re
from typing import Any, Iterable, Optional, Pattern, Sequence, Union

from .storable import find_unstorable
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
# A key whose last segment(s) are one of these is a secret: ``db_pass``, ``userPin``, ``github_token``.
DEFAULT_SECRET_SUFFIXES: tuple[str, ...] = (
    "_api_key", "_apikey", "_token", "_secret", "_password", "_passwd", "_pwd", "_passphrase", "_passcode",
    "_pass", "_pin", "_otp", "_totp", "_cvv", "_cvc", "_private_key", "_private_key_id", "_secret_key",
    "_access_key", "_signing_key", "_encryption_key", "_master_key", "_session_key", "_subscription_key",
    "_account_key", "_auth", "_authorization", "_cookie", "_cookies", "_credentials", "_credential", "_dsn", "_jwt",
    "_connection_string", "_secret_string", "_secret_binary", "_pin_code", "_pincode", "_otp_code", "_mfa_code",
    "_totp_code", "_security_code", "_verification_code", "_auth_code", "_authorization_code",
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
# The password of a URL (any scheme) in text, as group ``secret``. It runs to the last ``@``
# before a host, so one holding ``/``, a space or an unencoded ``@`` goes whole;
# ``host:8080/...`` (a port, no password) is left alone. Shared with the connection-string
# rules (storage/dsn.py), so a message and a ledger hide the same part of a URL.
URL_PASSWORD_PATTERN = (r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@?#\"']*:(?!\d+(?:[/?#\s]|$))"
                        r"(?P<secret>[^\s\"'](?:[^\r\n\t\"']{0,254}?[^\s\"'])?)"
                        r"@(?=[A-Za-z0-9\[][A-Za-z0-9.:%_\[\]-]*(?:[/?#\s\"'<>,;)\]}]|$))")
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
    # ``Token ...`` (Django REST framework and others), as opaque as a bearer token, anywhere.
    ("token_scheme", r"\b(?:Token|TOKEN)[ \t]+(?P<secret>(?=[A-Za-z._~+/-]*[0-9])[A-Za-z0-9._~+/-]{20,}=*)",
     (("token",),)),
    ("basic", r"(?i:\bbasic)(?P<b64cred>)\s+(?P<secret>[A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])", (("basic",),)),
    ("provider_key", PROVIDER_KEY_PATTERN, (("sk-", "sk_", "rk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
                                             "github_pat_", "xox", "xapp-", "akia", "asia", "aiza", "whsec_",
                                             "hf_", "glpat-", "npm_", "ya29."),)),
    ("url_password", URL_PASSWORD_PATTERN, (("://",), ("@",))),
    # curl's ``-u user:password`` / ``--user user:password`` (quoted or not).
    ("curl_user", r"\bcurl\b[^\n]*?(?<!\S)(?:-u|--user)(?:[ \t]+|=)?(?P<q>['\"])?[^\s:'\"]*:"
                  r"(?P<secret>(?(q)[^'\"\n]+|[^\s'\"]+))", (("curl",), ("-u", "--user"))),
    # The MySQL/MariaDB clients' ``-pPASSWORD`` (``-p`` alone prompts and is left alone).
    ("mysql_password", r"\b(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mariadb)\b[^\n]*?"
                       r"(?<!\S)-p(?P<q>['\"])?(?P<secret>(?(q)[^'\"\n]+|[^\s'\"]+))",
     (("mysql", "mariadb"), ("-p",))),
    # Incoming webhooks: whoever has the URL can post.
    ("slack_webhook", r"\bhooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/-]{8,})",
     (("hooks.slack.com",),)),
    ("discord_webhook", r"\bdiscord(?:app)?\.com/api/webhooks/(?P<secret>[0-9]+/[A-Za-z0-9_-]{16,})",
     (("discord",),)),
    # HTTP Digest: the response is a hash of the password, open to offline guessing.
    ("digest_response", r"(?i:\bdigest\b)[^\n]*?\bresponse\s*=\s*(?P<q>\\?[\"'])?(?P<secret>[A-Za-z0-9+/=_-]{8,})",
     (("digest",), ("response",))),
)
_TRIGGERS = {pattern: triggers for _, pattern, triggers in DEFAULT_VALUE_PATTERNS}
_DEFAULT_PATTERNS: tuple[str, ...] = tuple(p for _, p, _ in DEFAULT_VALUE_PATTERNS)

# ``name=value``, ``name: value`` and ``"name": "value"`` inside text; the name decides.
# A quoted name may have escaped quotes: JSON inside a JSON string (``{\\"password\\": ...}``).
_NAMED_VALUE = re.compile(
    r"""(?:(?P<q>\\?["'])(?P<qname>[A-Za-z_][A-Za-z0-9_.-]{0,100})(?P=q)\s*:\s*"""
    r"""|(?<![A-Za-z0-9_.])(?P<name>[A-Za-z_][A-Za-z0-9_.-]{0,100})[ \t]*(?:=|:(?!//))[ \t]*)""")
_QUOTED = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"""  # "...", '...'
                     r'|\\"(?:[^"\\]|\\(?!"))*\\"')  # \"...\" (escaped, in a JSON string)
_UNQUOTED = re.compile(r"""(?:(?i:bearer|basic|token)[ \t]+)?(?P<v>\[REDACTED\]|[^\s&;,"'<>()\[\]{}]+)""")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=[0-9])"
                         r"|(?<=[0-9])(?=[A-Za-z])")
_PAIR_NAME_FIELDS = ("name", "key", "header", "field")
_CACHE_LIMIT = 4096
_PLAIN = (str, int, float, bool, type(None))  # exact classes; subclasses take the full path

RedactionPath = tuple[Union[str, int], ...]
PatternLike = Union[str, Pattern[str]]


@functools.lru_cache(maxsize=4096)  # every Redactor splits the same default names; a run, the same keys
def key_words(key: str) -> tuple[str, ...]:
    """``"AWS_SECRET_ACCESS_KEY"``, ``"awsSecretAccessKey"`` → ``("aws", "secret", "access", "key")``.

    Trailing all-digit words are dropped (``password2`` reads as ``password``).
    """
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    while words and words[-1].isdigit():
        words.pop()
    return tuple(words)


@functools.lru_cache(maxsize=None)
def _compile_builtin(pattern: str) -> Pattern[str]:
    """A built-in value pattern, compiled once per process on first use."""
    return re.compile(pattern)


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
        # The built-in patterns are compiled when a text first passes their triggers (most
        # never do in a process); any other is compiled now, so a bad one is refused here.
        sources = tuple(p if isinstance(p, str) and p in _TRIGGERS else _compile(p)
                        for p in (*a["patterns"], *a["extra_patterns"]))
        self._scans: list[tuple[PatternLike, tuple[tuple[str, ...], ...]]] = [
            (p, _TRIGGERS.get(p if isinstance(p, str) else p.pattern, ())) for p in sources]
        self._name_triggers = _name_triggers(self.keys, self.suffixes, self.words)
        self._verdicts: dict[str, bool] = {}

    @property
    def patterns(self) -> tuple[Pattern[str], ...]:
        """The value patterns, compiled, in the order they are tried."""
        return tuple(_compile_builtin(p) if isinstance(p, str) else p for p, _ in self._scans)

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
        return self._scan(text, None)

    def redact_error(self, error: object, *, known: Iterable[object] = ()) -> str:
        """The text of an error (a message or an exception) as it may be recorded or printed.

        The value patterns and the ``name=value`` rules of :meth:`redact_text` apply to the
        whole text; every string of ``known`` (values the caller knows are secret, e.g. the
        password of the store's URL) of four characters or more is replaced wherever it
        appears, whatever its shape. ``str(exc)`` is what is judged for an exception.
        """
        text = error if isinstance(error, str) else str(error)
        for value in sorted({k for k in known if isinstance(k, str) and len(k) >= 4}, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        return self.redact_text(text)

    def secrets_in(self, text: str) -> list[str]:
        """The parts of ``text`` that :meth:`redact_text` would replace, in order."""
        found: list[str] = []
        if isinstance(text, str) and len(text) >= 8:
            self._scan(text, found)
        return found

    def _scan(self, text: str, found: Optional[list[str]]) -> str:
        low = text.lower()
        replace = self._replace_match if found is None else self._collecting(found)
        # Plain loops, not any()/all() over generators: this runs for every string of every record.
        for pattern, triggers in self._scans:
            for group in triggers:
                for trigger in group:
                    if trigger in low:
                        break
                else:
                    break  # no trigger of this group: the pattern cannot match
            else:
                if isinstance(pattern, str):
                    pattern = _compile_builtin(pattern)
                text = pattern.sub(replace, text)
        if "=" in text or ":" in text:
            for words in self._name_triggers:
                for word in words:
                    if word not in low:
                        break
                else:
                    return self._redact_named(text, found)
        return text

    @staticmethod
    def _secret_span(match: re.Match[str]) -> Optional[tuple[int, int]]:
        """Where the secret is in ``match`` (``None``: the match is no secret after all)."""
        groups = match.re.groupindex
        if "secret" not in groups or match.group("secret") is None:
            return match.span()
        if "b64cred" in groups and not _is_basic_credential(match.group("secret")):
            return None
        return match.span("secret")

    @classmethod
    def _replace_match(cls, match: re.Match[str]) -> str:
        span = cls._secret_span(match)
        if span is None:
            return match.group(0)
        (start, end), offset, whole = span, match.start(), match.group(0)
        return whole[: start - offset] + REDACTED + whole[end - offset:]

    @classmethod
    def _collecting(cls, found: list[str]) -> Any:
        def replace(match: re.Match[str]) -> str:
            span = cls._secret_span(match)
            if span is not None and match.string[span[0]:span[1]] != REDACTED:
                found.append(match.string[span[0]:span[1]])
            return cls._replace_match(match)
        return replace

    def _redact_named(self, text: str, found: Optional[list[str]] = None) -> str:
        out: list[str] = []
        pos = 0
        for match in _NAMED_VALUE.finditer(text):
            if match.start() < pos or not self.is_secret_key(match.group("qname") or match.group("name")):
                continue
            if text.startswith(("Digest ", "digest "), match.end()):
                continue  # only its response= is secret: the digest_response pattern has it
            quoted = _QUOTED.match(text, match.end())
            if quoted is not None:
                width = 2 if text[quoted.start()] == "\\" else 1
                start, end = quoted.start() + width, quoted.end() - width
            else:
                plain = _UNQUOTED.match(text, match.end())
                if plain is None:
                    continue
                start, end = plain.span("v")
            if end <= start or text[start:end] == REDACTED:
                continue
            if found is not None:
                found.append(text[start:end])
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


@functools.lru_cache(maxsize=32)
def _name_triggers(keys: frozenset[str], suffixes: tuple[tuple[str, ...], ...],
                   words: frozenset[str]) -> tuple[tuple[str, ...], ...]:
    """The word groups a text must contain (all words of one group) to be worth scanning for names.

    A text naming a secret key contains every word of the name (lower-cased). Checking for its
    least common word is enough (``secret`` for ``client_secret``); a name of common words only
    is checked for all of them (``api`` and ``key`` for ``api_key``). Computed once per rule set.
    """
    names = {_trigger_of(w) for w in (*map(key_words, keys), *suffixes, *((w,) for w in words)) if w}
    # Every process that writes a record makes a Redactor: the pairwise test below is written
    # for speed (one joined string per trigger, plain loops), as ``_implies`` over every pair.
    others = sorted(names, key=len)  # one-word groups first: most triggers are implied by one of them
    kept = []
    for trigger in names:
        joined = "\0".join(trigger)  # a word is in one of trigger's words iff it is in the joined text
        for other in others:
            if other != trigger:
                for word in other:
                    if word not in joined:
                        break
                else:
                    break  # trigger passes whenever other does: redundant
        else:
            kept.append(trigger)
    return tuple(sorted(kept))


# Words too common in ordinary text to tell that a text may name a secret key on their own.
_COMMON_WORDS = frozenset({"api", "key", "id", "code", "client", "session", "access", "account", "master", "string",
                           "binary", "set", "x", "proxy", "connection", "conn", "str", "private", "public", "security"})


def _trigger_of(words: tuple[str, ...]) -> tuple[str, ...]:
    """The words a text must contain to be worth scanning for the key ``words`` (see ``_name_triggers``)."""
    rare = [w for w in words if w not in _COMMON_WORDS]
    return (max(rare, key=len),) if rare else tuple(sorted(set(words)))


def _implies(trigger: tuple[str, ...], other: tuple[str, ...]) -> bool:
    """True when a text that passes ``trigger`` always passes ``other`` (so ``trigger`` is redundant)."""
    return all(any(o in t for t in trigger) for o in other)


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
    import base64  # only when a "Basic" header is seen: not on every start-up

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

    def redact_text(self, text: str) -> str:
        """``text`` unchanged."""
        return text

    def redact_error(self, error: object, *, known: Iterable[object] = ()) -> str:
        """The error's text, unchanged."""
        return error if isinstance(error, str) else str(error)

    def secrets_in(self, text: str) -> list[str]:
        """``[]``: nothing is replaced."""
        return []
