"""What the command line prints of outside text is safe for a terminal."""

from __future__ import annotations

from pipeline.ops.terminal import printable


def test_escape_sequences_are_shown_not_sent() -> None:
    """ESC, BEL, newlines and DEL become visible escapes; the text stays on one line."""
    assert printable("a\x1b[2Jb\x07c\nd\x7f") == "a\\x1b[2Jb\\x07c\\x0ad\\x7f"


def test_bidi_overrides_and_c1_controls_are_escaped() -> None:
    """Unicode's right-to-left override and the C1 CSI are escaped too."""
    assert printable("x\u202ey\x9bz") == "x\\u202ey\\x9bz"


def test_ordinary_text_is_kept() -> None:
    """Accented letters, punctuation and spaces print as they are."""
    text = 'éé {"exportIds": ["exp-1"]} ✓'
    assert printable(text) == text
