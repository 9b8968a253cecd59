"""Escaping for the two places data enters the page: HTML text and an embedded JSON block.

The JSON written here is for display, not storage (:mod:`abstractruntime.core.json_codec`):
HTML-escaped, indented for ``<pre>`` blocks, in the order the page reads it. ``default=str``
only guards the page: the values come from stored runs and records, which are JSON already,
and a report shows an odd value a custom store hands back as its text instead of failing.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any

# Inside <script type="application/json"> the HTML parser ends the element at "</script"
# whatever the JSON says, and "<!--" changes how it looks for that end. Writing "<", ">"
# and "&" as JSON \u escapes means neither can appear; U+2028/U+2029 are escaped too so the
# text is also valid as a JavaScript literal.
_JSON_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                 ("\u2029", "\\u2029"))


def text(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too, so it is safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def script_json(value: Any) -> str:
    """JSON for a ``<script type="application/json">`` element: no sequence can end the element."""
    raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=False, default=str,
                     allow_nan=False)
    for char, escaped in _JSON_ESCAPES:  # str.replace: much faster than translate on megabytes
        raw = raw.replace(char, escaped)
    return raw


def pretty_json(value: Any) -> str:
    """Indented JSON, HTML-escaped (for ``<pre>`` blocks written on the server side)."""
    return text(json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str))


def csp_hash(source: str) -> str:
    """The Content-Security-Policy source expression allowing exactly this inline script or style."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


__all__ = ["text", "script_json", "pretty_json", "csp_hash"]
