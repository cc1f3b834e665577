"""Bencode, the encoding of rtpengine's ng control protocol (pure).

Values are ``int``, ``bytes`` (``str`` is encoded as UTF-8 on the way out), ``list`` and
``dict`` with byte-string keys. Decoding is strict about the grammar (no leading zeros, no
``-0``, lengths within the input, nothing after the value, bounded nesting) but accepts dict
keys in any order: rtpengine does not sort the keys of its replies, which is why the
well-kept ``fastbencode`` package (it rejects them, "dict keys disordered") is not used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

from pbx.errors import PbxError

Value: TypeAlias = (
    int | bytes | str | Sequence["Value"] | Mapping[bytes, "Value"] | Mapping[str, "Value"]
)
Decoded: TypeAlias = int | bytes | list["Decoded"] | dict[bytes, "Decoded"]

MAX_DEPTH = 32


class BencodeError(PbxError):
    """Malformed bencoded input (or a value that has no encoding)."""


def encode(value: Value) -> bytes:
    """The bencoding of ``value`` (dict keys sorted, as the format requires)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    match value:
        case bool():
            raise BencodeError("bencode has no booleans")
        case int():
            out.append(b"i%de" % value)
        case bytes():
            out.append(b"%d:%s" % (len(value), value))
        case str():
            _encode(value.encode(), out)
        case list() | tuple():
            out.append(b"l")
            for item in value:
                _encode(item, out)
            out.append(b"e")
        case Mapping():
            items = {(k.encode() if isinstance(k, str) else k): v for k, v in value.items()}
            out.append(b"d")
            for key in sorted(items):
                _encode(key, out)
                _encode(items[key], out)
            out.append(b"e")
        case _:
            raise BencodeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Decoded:
    """The value bencoded in ``data``; BencodeError if it is malformed or has trailing bytes."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"trailing bytes at {end}")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Decoded, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deeply")
    if pos >= len(data):
        raise BencodeError("truncated")
    head = data[pos : pos + 1]
    if head == b"i":
        end = data.find(b"e", pos + 1)
        if end < 0:
            raise BencodeError("unterminated integer")
        return _integer(data[pos + 1 : end]), end + 1
    if head == b"l":
        items: list[Decoded] = []
        pos += 1
        while data[pos : pos + 1] != b"e":
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return items, pos + 1
    if head == b"d":
        mapping: dict[bytes, Decoded] = {}
        pos += 1
        while data[pos : pos + 1] != b"e":
            if pos >= len(data):
                raise BencodeError("truncated")
            key, pos = _decode(data, pos, depth + 1)
            if not isinstance(key, bytes):
                raise BencodeError("dict key is not a string")
            mapping[key], pos = _decode(data, pos, depth + 1)
        return mapping, pos + 1
    if head.isdigit():
        colon = data.find(b":", pos)
        if colon < 0:
            raise BencodeError("string without ':'")
        length = _integer(data[pos:colon])
        end = colon + 1 + length
        if length < 0 or end > len(data):
            raise BencodeError("string longer than the input")
        return data[colon + 1 : end], end
    raise BencodeError(f"unexpected byte {head!r} at {pos}")


def _integer(text: bytes) -> int:
    body = text[1:] if text.startswith(b"-") else text
    if not body.isdigit() or (len(body) > 1 and body.startswith(b"0")) or text == b"-0":
        raise BencodeError(f"bad integer {text[:20]!r}")
    return int(text)
