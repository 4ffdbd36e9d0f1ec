"""Images on the wire: base64 PNG or JPEG in, PIL images out, with every limit checked before decoding.

The scoring protocol is ``scorers/remote.py``'s (``RemoteScorer`` speaks it). A server on a shared machine must
not let one request take its memory: the pixel count is read from the file header and refused *before* the pixels
are decompressed (a 50 KB PNG can declare 100,000 x 100,000 pixels: a decompression bomb), only PNG and JPEG are
accepted (no TIFF, PSD, ... decoder surface), and base64 must be strict RFC 4648.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image

from flowbase.errors import UserError

FORMATS = ("PNG", "JPEG")
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


class WireError(UserError):
    """A request the server refuses, with its HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def sniff(raw: bytes) -> str | None:
    """PNG or JPEG by magic bytes, else None."""
    for sig, name in _SIGNATURES.items():
        if raw.startswith(sig):
            return name
    return None


def decode_image(data: str, index: int, max_pixels: int) -> Image.Image:
    """One base64 PNG/JPEG to a loaded PIL image; WireError 400 (not an image) or 413 (too many pixels)."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise WireError(400, f"image {index}: not valid base64 ({e})") from None
    return decode_bytes(raw, f"image {index}", max_pixels)


def decode_bytes(
    raw: bytes, label: str, max_pixels: int, formats: tuple[str, ...] = FORMATS
) -> Image.Image:
    """PNG/JPEG file bytes to a fully decoded PIL image, every limit checked first: WireError 400 (not one of
    ``formats``, broken, truncated) or 413 (more than ``max_pixels``, or a decompression bomb)."""
    kind = sniff(raw)
    if kind is None or kind not in formats:
        want = " or ".join(formats)
        raise WireError(400, f"{label}: not a {want} file (starts with {raw[:8]!r}); send {want}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # judged below
            image = Image.open(
                io.BytesIO(raw), formats=[kind]
            )  # header only: no pixels decoded yet
    except Image.DecompressionBombError as e:  # PIL refuses past twice its own limit, at open
        raise WireError(413, f"{label}: refused as a decompression bomb ({e})") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken headers
        raise WireError(400, f"{label}: broken {kind} header ({type(e).__name__}: {e})") from None
    w, h = image.size
    if w < 1 or h < 1:
        raise WireError(400, f"{label}: has zero size ({w} x {h})")
    if w * h > max_pixels:
        raise WireError(
            413,
            f"{label}: {w} x {h} = {w * h} pixels is over this server's limit of {max_pixels}; "
            "downscale it before sending",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise WireError(413, f"{label}: refused as a decompression bomb ({e})") from None
    except Exception as e:  # noqa: BLE001 - truncated data, bad chunks, ...
        raise WireError(400, f"{label}: cannot be decoded ({type(e).__name__}: {e})") from None
    return image
