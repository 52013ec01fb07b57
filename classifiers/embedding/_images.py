"""Image file helpers for `classifiers.images`: content keys and tolerant, memory-bounded decoding."""

from __future__ import annotations

import hashlib
import warnings
from enum import StrEnum
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["DECODE_REASONS", "ImageFailure", "file_digest", "load_square_rgb"]


class ImageFailure(StrEnum):
    """Why an image got a zero vector (the keys of the `failures` counts)."""

    NO_PATH = "no_path"  # the product has no image (null or empty path)
    MISSING = "missing"  # the path does not point at a file
    UNREADABLE = "unreadable"  # the file exists but cannot be read (permissions, I/O error)
    CORRUPT = "corrupt"  # not an image Pillow can decode, or truncated
    TOO_LARGE = "too_large"  # more pixels than max_pixels (decompression-bomb guard)


DECODE_REASONS = (ImageFailure.CORRUPT.value, ImageFailure.TOO_LARGE.value)


def file_digest(path: str | Path | None) -> tuple[bytes | None, str]:
    """sha256 of the file's bytes, or (None, reason) when there is no readable file."""
    if path is None or str(path).strip() == "":
        return None, ImageFailure.NO_PATH.value
    file = Path(path)
    if not file.is_file():
        return None, ImageFailure.MISSING.value
    digest = hashlib.sha256()
    try:
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None, ImageFailure.UNREADABLE.value
    return digest.digest(), ""


def load_square_rgb(
    path: str | Path | None, *, size: int, max_pixels: int, background: tuple[int, int, int] = (255, 255, 255)
) -> tuple[Image.Image | None, str | None]:
    """Decode an image into a `size` x `size` RGB square (whole picture kept, padded with `background`).

    Memory stays bounded: the pixel count is checked from the header before decoding, and JPEGs are
    decoded at reduced scale (`Image.draft`), so a 93-Mpixel photo costs about 1/64 of its full size.
    Returns (image, None) or (None, reason).
    """
    if path is None or str(path).strip() == "":
        return None, ImageFailure.NO_PATH.value
    file = Path(path)
    if not file.is_file():
        return None, ImageFailure.MISSING.value
    try:
        with warnings.catch_warnings():
            # Pillow's own guard warns above MAX_IMAGE_PIXELS; ours (max_pixels) decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as im:
                width, height = im.size
                if width * height > max_pixels:
                    return None, ImageFailure.TOO_LARGE.value
                im.draft("RGB", (size * 2, size * 2))
                im.load()
                picture = ImageOps.exif_transpose(im)
                picture = _to_rgb(picture, background)
    except Image.DecompressionBombError:
        return None, ImageFailure.TOO_LARGE.value
    except PermissionError:
        return None, ImageFailure.UNREADABLE.value
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return None, ImageFailure.CORRUPT.value
    picture.thumbnail((size, size), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), background)
    canvas.paste(picture, ((size - picture.width) // 2, (size - picture.height) // 2))
    return canvas, None


def _to_rgb(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, background)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")
