"""What the command line prints of text it did not write: made safe for a terminal.

Message bodies, job errors and reasons come from outside (an SQS sender, an
Export API answer). Printed raw, an escape sequence in one of them reaches the
operator's terminal: it can move the cursor, retitle the window, hide text or
reverse it (Unicode's bidirectional overrides). :func:`printable` shows every
such character as a Python-style escape instead, and keeps everything else,
accented letters included, as it is.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

# Control (Cc), format (Cf: the bidi overrides, zero-width characters),
# surrogate, private-use and unassigned code points.
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def _escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` on one line with every control or format character escaped (``\\x1b``)."""
    return "".join(
        _escaped(char) if unicodedata.category(char) in _UNSAFE else char for char in text
    )
