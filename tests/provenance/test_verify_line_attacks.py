"""Lines crafted against the fast canonical-line check of ``verify`` (storage/verify_lines.py).

Each line below is one a forger could write so that a plain parse reads the record it wants
while its bytes are not the record's RFC 8785 form: escapes written another way, numbers in
another spelling, keys repeated deeper down, characters whose order differs in UTF-16. The fast
check must leave each one to the careful check (``None``), or agree with it byte for byte.
"""

from __future__ import annotations

import pytest

from abstractruntime.core.canonical import record_hash
from abstractruntime.core.jcs import is_jcs_line
from abstractruntime.storage.fsio import loads_strict
from abstractruntime.storage.verify_lines import canonical_record

H = '"record_hash":"' + "a" * 64 + '"'

CRAFTED = [
    '{"format":3,' + H + ',"x":"\\u0041"}',  # an escape for a character written as itself in JCS
    '{"format":3,' + H + ',"x":"\\/"}',
    '{"format":3,' + H + ',"x":"\\u00e9"}',
    '{"format":3,' + H + ',"x":"\\u00E9"}',
    '{"format":3,' + H + ',"x":"\\u001F"}',  # JCS writes control escapes in lower case
    '{"format":3,' + H + ',"x":"\\b\\f\\n\\r\\t\\u000b"}',
    '{"format":3,' + H + ',"x":"\x7f\u2028"}',
    '{"format":3,' + H + ',"x":1E3}', '{"format":3,' + H + ',"x":1e3}', '{"format":3,' + H + ',"x":10.50}',
    '{"format":3,' + H + ',"x":-0.0}', '{"format":3,' + H + ',"x":1.5e300}', '{"format":3,' + H + ',"x":1e21}',
    '{"format":3,' + H + ',"x":0.000001}', '{"format":3,' + H + ',"x":1e-7}', '{"format":3,' + H + ',"x":01}',
    '{"format":3,' + H + ',"x":100000000000000000000000}', '{"format":3,' + H + ',"x":-9007199254740992}',
    '{"format":3,' + H + ',"x":Infinity}', '{"format":3,' + H + ',"x":-Infinity}',
    '{"format":3,' + H + ',"x":{"a":1,"a":1}}',  # a key repeated deeper down, with the same value
    '{"format":3,' + H + ',"x":{"a":1,"a":2}}',
    '{"format":3,' + H + ',"x":[{"b":1,"a":2}]}',  # keys out of order
    '{"format":3,' + H + ',"x":{"\ufb01":1,"\U00010000":2}}',  # U+FB01 sorts after U+10000 in UTF-16
    '{"format":3,' + H + ',"x":{"\U00010000":1,"\ufb01":2}}',
    '{"format":3,' + H + ',"x":"\\ud83d\\ude00"}',  # a surrogate pair escaped
    '{"format":3,' + H + ',"x":"\ud83d"}',
    '{"format":3,' + H + ',"x":{"record_hash":"' + "a" * 64 + '"}}',  # the member twice
    '{"format":3,' + H + ',"x":true }', '{"format":3,' + H + ',"x":true}\n', '{"format":3,' + H + ',"x":tru}',
    '{"format":3.0,' + H + '}', '{"format":3,' + H + ',"signature":null}', '{"format":3,' + H + ',"x":"\\u0000"}',
    '{"format":3,"record_hash":null}', '{' + H + ',"format":3}', '{"format":3,' + H + ',"x":"e\u0301"}',
    '{"format":3,' + H + ',"x":"\u00e9"}', '{"format":3,' + H + '}',
]


@pytest.mark.parametrize("line", CRAFTED)
def test_the_fast_check_never_accepts_what_the_careful_check_refuses(line: str) -> None:
    body = line.encode("utf-8", "surrogatepass")
    fast = canonical_record(body)
    if fast is None:
        return
    doc, digest = fast
    parsed = loads_strict(body)
    assert doc == parsed
    assert is_jcs_line(body, parsed), "the fast check accepted a line that is not canonical"
    assert digest == record_hash(parsed)
