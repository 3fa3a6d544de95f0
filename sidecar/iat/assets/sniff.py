"""What a file is, judged from its bytes: MIME type, the extension its content address gets, and the size of an
image read from its header (Pillow's lazy `Image.open`, no decode of the pixels).

The extension a file arrived with is a claim; `check_claim` refuses a file whose content contradicts it (a `.png`
holding JPEG or text). An extension this module does not know is no claim: such files are taken for what their
content is. Plain text cannot tell CSV from prose, so for text content the claimed text type (csv, tsv, md, txt)
decides the MIME type; every other type comes from the content alone.
"""

from __future__ import annotations

import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

# Enough for every signature below and, in practice, for image headers; sniffing reads no more than this.
HEAD_BYTES = 64 * 1024

OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class Sniffed:
    mime_type: str
    ext: str  # the extension of the content address, no dot ("png", "tar.gz", "bin" when unknown)
    width: int | None = None
    height: int | None = None

    @property
    def is_image(self) -> bool:
        return self.mime_type.startswith("image/")


class ContentMismatch(ValueError):
    """The content is not what the file's extension claims, or an image header cannot be read."""

    def __init__(self, message: str, *, claimed: str | None, actual: str):
        super().__init__(message)
        self.claimed = claimed
        self.actual = actual


# (mime, canonical ext, Pillow format) of the binary types told apart by their first bytes.
_IMAGE_FORMATS = {
    "image/png": ("png", "PNG"),
    "image/jpeg": ("jpg", "JPEG"),
    "image/webp": ("webp", "WEBP"),
    "image/gif": ("gif", "GIF"),
    "image/tiff": ("tif", "TIFF"),
    "image/bmp": ("bmp", "BMP"),
}
_OTHER_EXT = {
    "application/json": "json", "text/csv": "csv", "text/tab-separated-values": "tsv", "text/markdown": "md",
    "text/plain": "txt", "text/html": "html", "image/svg+xml": "svg", "application/xml": "xml",
    "audio/wav": "wav", "audio/mpeg": "mp3", "audio/ogg": "ogg", "audio/flac": "flac", "application/pdf": "pdf",
    "application/zip": "zip", "application/gzip": "gz", "application/x-tar": "tar", OCTET_STREAM: "bin",
}

# What an extension claims: the MIME types its content may have. `tar.gz` content is application/gzip too.
CLAIMS: dict[str, frozenset[str]] = {ext: frozenset(mimes) for ext, mimes in {
    "png": {"image/png"}, "jpg": {"image/jpeg"}, "jpeg": {"image/jpeg"}, "jpe": {"image/jpeg"},
    "webp": {"image/webp"}, "gif": {"image/gif"}, "tif": {"image/tiff"}, "tiff": {"image/tiff"},
    "bmp": {"image/bmp"}, "json": {"application/json"}, "csv": {"text/csv"},
    "tsv": {"text/tab-separated-values"}, "txt": {"text/plain"}, "text": {"text/plain"}, "log": {"text/plain"},
    "md": {"text/markdown"}, "html": {"text/html"}, "htm": {"text/html"}, "svg": {"image/svg+xml"},
    "xml": {"application/xml", "image/svg+xml"}, "wav": {"audio/wav"}, "mp3": {"audio/mpeg"},
    "ogg": {"audio/ogg"}, "oga": {"audio/ogg"}, "flac": {"audio/flac"}, "pdf": {"application/pdf"},
    "zip": {"application/zip"},
    "gz": {"application/gzip"}, "tgz": {"application/gzip"}, "tar.gz": {"application/gzip"},
    "tar": {"application/x-tar"},
}.items()}
# Text types the content cannot tell apart: the claim names them.
_TEXT_CLAIMS = {"csv": "text/csv", "tsv": "text/tab-separated-values", "md": "text/markdown", "txt": "text/plain",
                "text": "text/plain", "log": "text/plain"}
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}


def claimed_ext(name: str) -> str | None:
    """The extension a file name claims, lowercased ("tar.gz" for a compressed tarball); None if none."""
    lower = name.lower()
    if lower.endswith(".tar.gz"):
        return "tar.gz"
    return os.path.splitext(lower)[1][1:] or None


def sniff(head: bytes, *, claimed: str | None = None, path: Path | str | None = None) -> Sniffed:
    """Sniffs `head` (the first HEAD_BYTES of a file, or all of it). `claimed` only picks among text types that
    content cannot tell apart; `path`, when given, is read again only if an image header lies past `head`."""
    mime = _binary_type(head)
    if mime is None:
        mime = _text_type(head, claimed)
    if mime in _IMAGE_FORMATS:
        ext, fmt = _IMAGE_FORMATS[mime]
        width, height = _image_size(head, fmt, path, mime)
        return Sniffed(mime, ext, width, height)
    if mime == "application/gzip" and _gzip_holds_tar(head):
        return Sniffed(mime, "tar.gz")
    return Sniffed(mime, _OTHER_EXT[mime])


def check_claim(name: str, sniffed: Sniffed) -> None:
    """Raises ContentMismatch when the extension of `name` claims another type than the content has."""
    claimed = claimed_ext(name)
    allowed = CLAIMS.get(claimed) if claimed else None
    if allowed is None:
        return  # no extension, or one we know nothing about: nothing is claimed
    ok = sniffed.mime_type in allowed
    if ok and claimed in ("tar.gz", "tgz"):
        ok = sniffed.ext == "tar.gz"
    if not ok:
        raise ContentMismatch(f"the extension .{claimed} claims {'/'.join(sorted(allowed))} but the content is "
                              f"{_describe(sniffed)}", claimed=claimed, actual=sniffed.mime_type)


def _describe(sniffed: Sniffed) -> str:
    if sniffed.mime_type == OCTET_STREAM:
        return "unrecognised binary data"
    return sniffed.mime_type


def _binary_type(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head.startswith(b"BM") and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "image/bmp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "application/zip"
    if head.startswith(b"\x1f\x8b"):
        return "application/gzip"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2):
        return "audio/mpeg"  # an ID3 tag, or an MPEG-1/2 Layer III frame sync (0xFFE, layer bits 01)
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "application/x-tar"
    return None


def _text_type(head: bytes, claimed: str | None) -> str:
    text = _as_text(head)
    if text is None:
        return OCTET_STREAM
    start = text.lstrip()[:512].lower()
    if start.startswith(("{", "[")):
        return "application/json"
    if claimed == "json" and start[:1] in ('"', "-", "t", "f", "n", *"0123456789"):
        return "application/json"  # a JSON scalar: only a .json claim makes it more than text
    if start.startswith(("<!doctype html", "<html")) or (claimed in ("html", "htm") and start.startswith("<")):
        return "text/html"
    if start.startswith("<svg") or (start.startswith("<?xml") and "<svg" in start):
        return "image/svg+xml"
    if start.startswith("<?xml"):
        return "application/xml"
    return _TEXT_CLAIMS.get(claimed or "", "text/plain")


def _as_text(head: bytes) -> str | None:
    """The head as text if it is UTF-8 (a multi-byte character cut at the end is fine) or BOM-marked UTF-16."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return head[2:len(head) - (len(head) % 2)].decode("utf-16-be" if head[0] == 0xFE else "utf-16-le",
                                                                errors="strict")
        except UnicodeDecodeError:
            return None
    if b"\x00" in head:
        return None
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    for cut in range(4):  # up to 3 bytes of a character split by the end of the head
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        # Control characters other than whitespace mark binary data that happens to decode.
        if any(ord(c) < 32 and c not in "\t\n\r\f\v" for c in text[:4096]):
            return None
        return text
    return None


def _gzip_holds_tar(head: bytes) -> bool:
    try:
        inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 512)
    except zlib.error:
        return False
    return len(inner) >= 262 and inner[257:262] == b"ustar"


def _image_size(head: bytes, fmt: str, path: Path | str | None, mime: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    sources: list = [io.BytesIO(head)]
    if path is not None and len(head) >= HEAD_BYTES:
        sources.append(path)  # the header may lie past the head (a JPEG with a large EXIF or ICC block)
    for source in sources:
        try:
            with Image.open(source, formats=[fmt]) as image:  # lazy: reads the header, decodes no pixels
                return image.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            continue
    raise ContentMismatch(f"the content starts like {mime} but its image header cannot be read", claimed=None,
                          actual=mime)
