"""Text from untrusted sources (file names, bundle fields, engine messages) made safe to print on one line."""
from __future__ import annotations

import re

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udcff]")


def printable(text: str) -> str:
    """``text`` on one line: control characters as ``\\n``, ``\\t``, ``\\xNN``, undecodable bytes as ``\\xNN``."""
    def esc(m):
        c = m.group()
        if "\udc80" <= c <= "\udcff":
            return f"\\x{ord(c) - 0xdc00:02x}"
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or f"\\x{ord(c):02x}"
    return _UNPRINTABLE.sub(esc, text)
