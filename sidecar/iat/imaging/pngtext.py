"""Text chunks in PNG bytes, added without decoding or re-encoding the image (cheap, and the pixels' bytes stay
exactly as the engine wrote them). UTF-8 iTXt chunks, in sorted key order before IEND, so the same text gives the
same bytes."""

from __future__ import annotations

import struct
import zlib

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def add_text(png: bytes, text: dict[str, str]) -> bytes:
    """`png` with one iTXt chunk per key (keys: 1-79 Latin-1 characters) inserted before its IEND chunk."""
    if not png.startswith(_SIGNATURE) or png[-12:-8] != b"\x00\x00\x00\x00" or png[-8:-4] != b"IEND":
        raise ValueError("not a PNG ending in IEND")
    chunks = b""
    for key in sorted(text):
        keyword = key.encode("latin-1")
        if not 1 <= len(keyword) <= 79:
            raise ValueError(f"PNG text keyword must be 1-79 characters: {key!r}")
        # keyword, NUL, compression flag 0, method 0, empty language tag NUL, empty translated keyword NUL, text
        chunks += _chunk(b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + str(text[key]).encode("utf-8"))
    return png[:-12] + chunks + png[-12:]


def read_text(png: bytes) -> dict[str, str]:
    """The tEXt and iTXt (uncompressed) chunks of PNG bytes."""
    if not png.startswith(_SIGNATURE):
        raise ValueError("not a PNG")
    out: dict[str, str] = {}
    pos = len(_SIGNATURE)
    while pos + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        if kind == b"tEXt":
            key, _, value = data.partition(b"\x00")
            out[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = data.partition(b"\x00")
            if rest[:1] == b"\x00":  # not compressed
                _lang, _, rest = rest[2:].partition(b"\x00")
                _translated, _, value = rest.partition(b"\x00")
                out[key.decode("latin-1")] = value.decode("utf-8")
        if kind == b"IEND":
            break
        pos += 12 + length
    return out
