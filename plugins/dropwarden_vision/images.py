"""Prepare an untrusted image for a vision model: limits before decoding, orientation, RGB, downscale."""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import ExifTags, Image, UnidentifiedImageError

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
    """The image cannot be judged: over a limit, truncated, malformed. `reason` says which, for the audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageLimits:
    """How big an image may be before decoding, and what a model receives (longest side, encoding)."""

    max_side: int = 672
    max_pixels: int = 50_000_000
    max_frames: int = 1
    encoding: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = 90

    def pixel_limit(self) -> int:
        """The smaller of `max_pixels` and Pillow's process-wide MAX_IMAGE_PIXELS (when set): an image
        Pillow would warn about is refused here, so no DecompressionBombWarning can slip through."""
        pillow = Image.MAX_IMAGE_PIXELS
        return min(self.max_pixels, pillow) if pillow else self.max_pixels


@dataclass(frozen=True)
class PreparedImage:
    """One frame, ready for a model: encoded RGB bytes, their size and hash, and where they came from."""

    data: bytes
    mime: str
    width: int
    height: int
    sha256: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def prepare_frames(data: bytes, limits: ImageLimits) -> list[PreparedImage]:
    """Frames to judge: the first `limits.max_frames` of an animation or multi-page file, else one.

    Sizes are checked from the header before any pixel is decoded; anything Pillow cannot read, a
    truncated file, or a decompression bomb raises ImageRejected with the reason.
    """
    if not data:
        raise ImageRejected("empty image file")
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            return _frames(image, limits)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"decompression bomb refused: {_short(exc)}") from None
    except Image.DecompressionBombWarning as exc:  # only when warnings are turned into errors
        raise ImageRejected(f"decompression bomb refused: {_short(exc)}") from None
    except UnidentifiedImageError:
        raise ImageRejected(
            f"not a readable image (none of {', '.join(ALLOWED_FORMATS)} recognised the header)"
        ) from None
    except MemoryError:
        raise ImageRejected("not enough memory to decode the image") from None
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise ImageRejected(f"truncated image file ({_short(exc)})") from None
        raise ImageRejected(f"cannot decode the image: {_short(exc)}") from None
    except Exception as exc:  # Pillow's plugins raise SyntaxError, ValueError, struct.error, EOFError...
        raise ImageRejected(f"malformed image: {type(exc).__name__}: {_short(exc)}") from None


def prepare_image(data: bytes, limits: ImageLimits) -> PreparedImage:
    """The first frame only (a still image, or the doctor's test image)."""
    single = ImageLimits(limits.max_side, limits.max_pixels, 1, limits.encoding, limits.jpeg_quality)
    return prepare_frames(data, single)[0]


def _frames(image: Image.Image, limits: ImageLimits) -> list[PreparedImage]:
    source = (image.format or "unknown").lower()
    limit = limits.pixel_limit()
    _check_size(image.size, limit, limits)
    mime = "image/png" if limits.encoding == "png" else "image/jpeg"
    out: list[PreparedImage] = []
    for index in range(limits.max_frames):
        if index:
            try:
                image.seek(index)
            except EOFError:
                break
            _check_size(image.size, limit, limits)  # TIFF pages each have their own size
        original = list(image.size)
        encoded, (width, height), orientation = _prepare_one(image, limits)
        provenance = {
            "format": source,
            "frame": index,
            "original_size": original,
            "exif_orientation": orientation,
        }
        digest = hashlib.sha256(encoded).hexdigest()
        out.append(PreparedImage(encoded, mime, width, height, digest, provenance))
    more = _has_frame(image, len(out))
    total = _cheap_frame_count(image)
    for prepared in out:
        prepared.provenance.update(frames_judged=len(out), frames_unjudged=more)
        if total is not None:
            prepared.provenance["frames_total"] = total
    return out


def _check_size(size: tuple[int, int], limit: int, limits: ImageLimits) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageRejected(f"image has no pixels ({width}x{height})")
    pixels = width * height
    if pixels > limit:
        which = "vision.max_pixels" if limit == limits.max_pixels else "Pillow's MAX_IMAGE_PIXELS"
        raise ImageRejected(
            f"image is {width}x{height} = {pixels} pixels, over the limit of {limit} ({which});"
            " refused before decoding (possible decompression bomb)"
        )


def _prepare_one(image: Image.Image, limits: ImageLimits) -> tuple[bytes, tuple[int, int], int]:
    orientation = _orientation(image)
    if image.format in ("JPEG", "MPO") and image.tell() == 0:
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that much smaller.
        image.draft("RGB", (limits.max_side, limits.max_side))
    image.load()
    alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    frame = image.convert("RGBA" if alpha else "RGB")  # a copy: later frames may build on `image`
    frame.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    method = _TRANSPOSE.get(orientation)
    if method is not None:
        frame = frame.transpose(method)
    if frame.mode == "RGBA":
        background = Image.new("RGBA", frame.size, _WHITE)
        frame = Image.alpha_composite(background, frame).convert("RGB")
    out = io.BytesIO()
    if limits.encoding == "png":
        frame.save(out, format="PNG", compress_level=6)
    else:
        frame.save(out, format="JPEG", quality=limits.jpeg_quality)
    return out.getvalue(), frame.size, orientation


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = as stored); a malformed EXIF block counts as no orientation."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def _has_frame(image: Image.Image, index: int) -> bool:
    """Whether a frame `index` exists (seeking parses its header; no pixels of it are decoded)."""
    if not getattr(image, "is_animated", False) and getattr(image, "n_frames", 1) <= 1:
        return False
    try:
        image.seek(index)
    except (EOFError, ValueError):
        return False
    return True


def _cheap_frame_count(image: Image.Image) -> int | None:
    """The frame count where the header states it (APNG, WebP, TIFF); a GIF would need a full scan."""
    if image.format == "GIF":
        return None
    try:
        return int(getattr(image, "n_frames", 1))
    except Exception:
        return None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"
