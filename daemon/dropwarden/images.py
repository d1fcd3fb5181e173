"""Open untrusted image bytes safely: allowed formats, size limits before decoding, orientation, RGB."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import ExifTags, Image, UnidentifiedImageError

from dropwarden.judge.framing import frame_count

# Only the formats the core sniffs as images: no exotic Pillow plugin ever parses attacker bytes.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
_MESSAGE_CHARS = 200
_WHITE = (255, 255, 255, 255)
# Same table as PIL.ImageOps.exif_transpose; applied to the downscaled frame (cheaper than full size),
# with the orientation read from the source, which also covers TIFF pages and animation frames.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageRejected(Exception):
    """The image cannot be judged: over a limit, truncated, malformed. `reason` says which, for the audit;
    `too_large` is true when a size limit (not a defect of the file) refused it."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large


def pixel_limit(max_pixels: int) -> int:
    """The smaller of `max_pixels` and Pillow's process-wide MAX_IMAGE_PIXELS (when set): an image
    Pillow would warn about is refused here, so no DecompressionBombWarning can slip through."""
    pillow = Image.MAX_IMAGE_PIXELS
    return min(max_pixels, pillow) if pillow else max_pixels


def check_size(size: tuple[int, int], max_pixels: int, setting: str) -> None:
    """Refuse a frame over the pixel limit from its header size, before any pixel is decoded.
    `setting` names the configuration key of `max_pixels` in the message."""
    width, height = size
    if width < 1 or height < 1:
        raise ImageRejected(f"image has no pixels ({width}x{height})")
    limit = pixel_limit(max_pixels)
    pixels = width * height
    if pixels > limit:
        which = setting if limit == max_pixels else "Pillow's MAX_IMAGE_PIXELS"
        raise ImageRejected(
            f"image is {width}x{height} = {pixels} pixels, over the limit of {limit} ({which});"
            " refused before decoding (possible decompression bomb)",
            too_large=True,
        )


@contextmanager
def open_untrusted(data: bytes) -> Iterator[Image.Image]:
    """Open `data` as one of ALLOWED_FORMATS. Any failure inside the `with` block (opening, decoding,
    a decompression bomb, a truncated file, Pillow plugin errors) is raised as ImageRejected."""
    if not data:
        raise ImageRejected("empty image file")
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            yield image
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"decompression bomb refused: {short(exc)}", too_large=True) from None
    except Image.DecompressionBombWarning as exc:  # only when warnings are turned into errors
        raise ImageRejected(f"decompression bomb refused: {short(exc)}", too_large=True) from None
    except UnidentifiedImageError:
        raise ImageRejected(
            f"not a readable image (none of {', '.join(ALLOWED_FORMATS)} recognised the header)"
        ) from None
    except MemoryError:
        raise ImageRejected("not enough memory to decode the image", too_large=True) from None
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise ImageRejected(f"truncated image file ({short(exc)})") from None
        raise ImageRejected(f"cannot decode the image: {short(exc)}") from None
    except Exception as exc:  # Pillow's plugins raise SyntaxError, ValueError, struct.error, EOFError...
        raise ImageRejected(f"malformed image: {type(exc).__name__}: {short(exc)}") from None


def render_frame(image: Image.Image, max_side: int) -> tuple[Image.Image, int]:
    """Decode the current frame as RGB (transparency over white), downscaled to `max_side` and turned
    upright by its EXIF orientation. Returns the frame and the orientation (1 = as stored)."""
    orientation = exif_orientation(image)
    if image.format in ("JPEG", "MPO") and image.tell() == 0:
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that much smaller.
        image.draft("RGB", (max_side, max_side))
    image.load()
    alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    frame = image.convert("RGBA" if alpha else "RGB")  # a copy: later frames may build on `image`
    frame.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    method = _TRANSPOSE.get(orientation)
    if method is not None:
        frame = frame.transpose(method)
    if frame.mode == "RGBA":
        background = Image.new("RGBA", frame.size, _WHITE)
        frame = Image.alpha_composite(background, frame).convert("RGB")
    return frame, orientation


def has_frame(image: Image.Image, index: int) -> bool:
    """Whether a frame `index` exists (seeking parses its header; no pixels of it are decoded)."""
    if not getattr(image, "is_animated", False) and getattr(image, "n_frames", 1) <= 1:
        return False
    try:
        image.seek(index)
    except (EOFError, ValueError):
        return False
    return True


def unread_frames(image: Image.Image, data: bytes, read: int, setting: str) -> str | None:
    """None when `image` (opened from `data`) has no frame past the first `read`; else what the problem
    says: "10 frames, only ocr.max_frames=4 read" (`setting` names the limit). The count comes from the
    GIF's blocks or the TIFF's IFD chain, or the header (APNG, WebP); never from decoding."""
    if not has_frame(image, read):
        return None
    fmt = (image.format or "").lower()
    total = frame_count(data, fmt) if fmt in ("gif", "tiff") else _stated_frames(image)
    frames = f"{total} frames" if total is not None and total > read else f"more than {read} frames"
    return f"{frames}, only {setting}={read} read"


def _stated_frames(image: Image.Image) -> int | None:
    try:
        return int(getattr(image, "n_frames", 1))
    except Exception:
        return None


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The size of a stored frame once turned upright (orientations 5-8 swap width and height)."""
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = as stored); a malformed EXIF block counts as no orientation."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"
