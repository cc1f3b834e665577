"""Random tokens (tags, branches, Call-IDs, nonces, SRTP keys, SDP session ids) from the
operating system's CSPRNG.

``secrets.token_bytes`` makes one system call per token; a busy server makes several tokens per
request. Here ``os.urandom`` is drawn 4 KiB at a time and handed out in slices, each byte once:
the same source and quality, about one system call per few hundred tokens. (The process never
forks, so no two processes share a pool.)
"""

from __future__ import annotations

import os

_DRAW = 4096

_pool = b""
_offset = 0


def token_bytes(n: int) -> bytes:
    """``n`` random bytes."""
    global _pool, _offset
    end = _offset + n
    if end > len(_pool):
        _pool = os.urandom(max(_DRAW, n))
        _offset, end = 0, n
    chunk = _pool[_offset:end]
    _offset = end
    return chunk


def token_hex(n: int) -> str:
    """``n`` random bytes as ``2n`` lower-case hex digits."""
    return token_bytes(n).hex()


def randbits(k: int) -> int:
    """A random integer of ``k`` bits: ``0 <= n < 2**k`` (as ``secrets.randbits``)."""
    if k <= 0:
        raise ValueError("randbits needs at least one bit")
    size = (k + 7) // 8
    return int.from_bytes(token_bytes(size), "big") >> (8 * size - k)
