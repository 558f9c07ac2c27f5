"""Text from untrusted sources (file names, bundle fields, engine messages) made safe to print on one line."""
from __future__ import annotations

import re
import unicodedata

# Characters that may need escaping: C0 and C1 controls, U+00AD (a format character), and everything from U+0600 on
# (the first format characters past Latin-1); Latin, Greek and Cyrillic letters never reach the slower check below.
_SUSPECT = re.compile("[\x00-\x1f\x7f-\x9f\xad\u0600-\U0010ffff]")
# Unicode categories that change how text around them is shown without showing themselves: format characters (Cf:
# the bidirectional overrides U+202A-U+202E and isolates U+2066-U+2069, zero-width spaces and joiners, ...), line
# and paragraph separators (Zl, Zp) and lone surrogates (Cs) that no terminal can print.
_INVISIBLE = frozenset({"Cf", "Zl", "Zp", "Cs"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match) -> str:
    c = m.group()
    n = ord(c)
    if n <= 0x9f:
        return _NAMED.get(c) or f"\\x{n:02x}"
    if 0xdc80 <= n <= 0xdcff:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{n - 0xdc00:02x}"
    if unicodedata.category(c) in _INVISIBLE:
        return f"\\u{n:04x}" if n <= 0xffff else f"\\U{n:08x}"
    return c


def printable(text: str) -> str:
    """``text`` on one line that shows what it holds: control characters as ``\\n``, ``\\t``, ``\\xNN``,
    undecodable bytes as ``\\xNN``, and invisible Unicode characters that could make it read as something else (a
    right-to-left override in ``photo\\u202egpj.exe``, zero-width spaces, line separators) as ``\\uXXXX``."""
    return _SUSPECT.sub(_escape, text)
