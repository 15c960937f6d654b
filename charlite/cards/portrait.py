"""The picture of a PNG card written without one: a gradient and a silhouette, seeded by name."""

from __future__ import annotations

import hashlib
import struct
import zlib

from charlite.cards.png import PNG_SIGNATURE, png_chunk


def portrait_png(seed: str, width: int = 256, height: int = 384) -> bytes:
    """A small generated portrait: a two-colour gradient and a silhouette, colours from ``seed``."""
    import numpy as np

    h = hashlib.sha256(seed.encode("utf-8")).digest()
    top, bottom = np.array(list(h[0:3]), float), np.array(list(h[3:6]), float)
    top = 60 + top * 0.6  # keep the colours mid-tone
    bottom = 20 + bottom * 0.4
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    img = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()
    yy, xx = np.mgrid[0:height, 0:width]
    cx = width / 2
    head = (xx - cx) ** 2 + (yy - height * 0.38) ** 2 <= (width * 0.18) ** 2
    body = ((xx - cx) / (width * 0.34)) ** 2 + ((yy - height * 0.92) / (height * 0.3)) ** 2 <= 1
    img[head | body] = img[head | body] * 0.35
    pixels = img.clip(0, 255).astype(np.uint8)
    rows = np.concatenate(
        [np.zeros((height, 1), np.uint8), pixels.reshape(height, width * 3)], axis=1
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + png_chunk(b"IEND", b"")
    )
