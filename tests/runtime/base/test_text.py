"""``printable``: untrusted text shown on one line as what it holds (runtime/base/text.py)."""
from __future__ import annotations

import pytest

from icrt.runtime.base.text import printable
from tests.runtime.fixtures import edit_manifest, make_bundle, run_cli


@pytest.mark.parametrize("text, shown", [
    ("plain name.jpg", "plain name.jpg"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\x1b]0;title\x07\x1b[2J", "\\x1b]0;title\\x07\\x1b[2J"),
    ("\x00\x7f\x85\x9b31m", "\\x00\\x7f\\x85\\x9b31m"),
    ("caf\udce9.jpg", "caf\\xe9.jpg"),  # a byte that was not UTF-8, as os.fsdecode gives it
])
def test_ascii_controls_and_undecodable_bytes_are_escaped_as_before(text, shown):
    assert printable(text) == shown


@pytest.mark.parametrize("text, shown", [
    ("invoice\u202egpj.exe", "invoice\\u202egpj.exe"),  # M1: a right-to-left override shows 'invoiceexe.jpg'
    ("a\u2066b\u2069c\u200fd", "a\\u2066b\\u2069c\\u200fd"),  # bidirectional isolates and marks
    ("pay\u200bpal\ufeff", "pay\\u200bpal\\ufeff"),  # zero-width space, byte-order mark
    ("line\u2028para\u2029end", "line\\u2028para\\u2029end"),  # Unicode line and paragraph separators
    ("soft\xadhyphen", "soft\\u00adhyphen"),
    ("tag\U000e0041\U000e007f", "tag\\U000e0041\\U000e007f"),  # tag characters (invisible)
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
])
def test_invisible_unicode_characters_are_escaped_as_code_points(text, shown):
    out = printable(text)
    assert out == shown and out.isascii() and out.isprintable()


def test_visible_text_in_any_script_is_kept():
    text = "Zoë Ærø Ελλάδα Москва 東京 दिल्ली القاهرة שלום 🙂 ½ café\u0301"
    assert printable(text) == text


def test_icrt_info_shows_a_right_to_left_override_in_a_bundle_name_as_an_escape(tmp_path, capsys):
    """M1: a bundle named ``...\\u202eexe.txt`` cannot make ``icrt info`` show another name."""
    bundle = edit_manifest(make_bundle(tmp_path / "b"), lambda d: d.update(name="report\u202etxt.exe"))
    code, out, err = run_cli(capsys, "info", bundle)
    assert code == 0 and err == ""
    assert "\u202e" not in out and "report\\u202etxt.exe" in out
