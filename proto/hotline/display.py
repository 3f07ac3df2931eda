"""Text from the other party, made safe to show: on a terminal, in a log line, in JSON.

The validator refuses control characters in every string (`common.proto`, "Conventions"), but
what is shown does not only come through it (a refused delivery's message id, a rejection's
detail, a record journaled before the rule), and a control character is not the only thing a
terminal obeys or hides: format characters (U+202E RIGHT-TO-LEFT OVERRIDE turns the rest of a
line around), line and paragraph separators, unassigned and private-use code points. So every
character that is not printable is written as a visible escape before it is shown:

    `\\n` `\\t` `\\r`     line feed, tab, carriage return
    `\\xNN`            any other character below U+0100 (`\\x1b` for ESC, `\\x9b` for CSI)
    `\\uNNNN`          up to U+FFFF (`\\u202e`)
    `\\UNNNNNNNN`      above

Printable text of any script is kept as it is, spaces included (U+3000 IDEOGRAPHIC SPACE is
ordinary Japanese text). A backslash is printable and stays one: the escapes are for reading,
not for decoding. `escaped` is the one function the CLI's printers (`client.cli_common`), the
demo and the simulator use, and the gateway's log lines (`server.peerlink.status.printable`);
`escaped_json` does the same inside a JSON document, with JSON's own escapes.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["escaped", "escaped_json", "shows_as_is"]

_NAMED: Final = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
# Not printable, but shown as it is: a space of any width is harmless on a terminal.
_SPACE: Final = "Zs"


def shows_as_is(char: str) -> bool:
    """True if `char` may be shown as it is: printable, or a space of any kind."""
    return char.isprintable() or unicodedata.category(char) == _SPACE


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escaped(text: str) -> str:
    """`text` with every character that is not printable written as a visible escape."""
    if text.isprintable():  # the common case, one C loop
        return text
    return "".join(c if shows_as_is(c) else _escape(c) for c in text)


# What json.dumps(ensure_ascii=False) leaves raw that a terminal must not see: C1 controls, DEL,
# format characters, separators, surrogates, private use and unassigned code points. (It has
# escaped U+0000..U+001F already; a raw line feed outside a string is the document's layout.)
_BEYOND_ASCII_PRINTABLE: Final = re.compile("[^\\x00-\\x7e]")


def _json_escape(match: re.Match[str]) -> str:
    char = match[0]
    if shows_as_is(char):
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes characters above U+FFFF
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def escaped_json(document: str) -> str:
    """A JSON document (from `json.dumps(..., ensure_ascii=False)`) with every character that
    is not printable inside its strings written as a JSON `\\uNNNN` escape: the same document
    to a JSON reader, nothing a terminal obeys to a person."""
    if document.isascii() and "\x7f" not in document:
        return document  # json.dumps escaped every other ASCII control already
    return _BEYOND_ASCII_PRINTABLE.sub(_json_escape, document)
