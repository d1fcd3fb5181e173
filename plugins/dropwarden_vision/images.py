"""Prepare an untrusted image for a vision model: limits before decoding, orientation, RGB, downscale."""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from dropwarden.images import (
    ALLOWED_FORMATS,
    ImageRejected,
    check_size,
    open_untrusted,
    pixel_limit,
    render_frame,
    unread_frames,
)

_SETTING = "vision.max_pixels"

__all__ = [
    "ALLOWED_FORMATS",
    "ImageLimits",
    "ImageRejected",
    "PreparedImage",
    "prepare_frames",
    "prepare_image",
]


@dataclass(frozen=True)
class ImageLimits:
    """How big an image may be before decoding, and what a model receives (longest side, encoding)."""

    max_side: int = 672
    max_pixels: int = 50_000_000
    max_frames: int = 1
    encoding: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = 90

    def pixel_limit(self) -> int:
        """The smaller of `max_pixels` and Pillow's MAX_IMAGE_PIXELS (see dropwarden.images)."""
        return pixel_limit(self.max_pixels)


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
    truncated file, or a decompression bomb raises ImageRejected with the reason. When frames are left
    unjudged, each frame's provenance says so: `frames_unjudged`, and `unjudged` ("10 frames, only
    vision.max_frames=4 read").
    """
    with open_untrusted(data) as image:
        return _frames(image, data, limits)


def prepare_image(data: bytes, limits: ImageLimits) -> PreparedImage:
    """The first frame only (a still image, or the doctor's test image)."""
    single = ImageLimits(limits.max_side, limits.max_pixels, 1, limits.encoding, limits.jpeg_quality)
    return prepare_frames(data, single)[0]


def _frames(image: Image.Image, data: bytes, limits: ImageLimits) -> list[PreparedImage]:
    source = (image.format or "unknown").lower()
    check_size(image.size, limits.max_pixels, _SETTING)
    mime = "image/png" if limits.encoding == "png" else "image/jpeg"
    out: list[PreparedImage] = []
    for index in range(limits.max_frames):
        if index:
            try:
                image.seek(index)
            except EOFError:
                break
            check_size(image.size, limits.max_pixels, _SETTING)  # TIFF pages each have their own size
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
    unjudged = unread_frames(image, data, len(out), "vision.max_frames")
    total = _cheap_frame_count(image)
    for prepared in out:
        prepared.provenance.update(frames_judged=len(out), frames_unjudged=unjudged is not None)
        if unjudged is not None:
            prepared.provenance["unjudged"] = unjudged
        if total is not None:
            prepared.provenance["frames_total"] = total
    return out


def _prepare_one(image: Image.Image, limits: ImageLimits) -> tuple[bytes, tuple[int, int], int]:
    frame, orientation = render_frame(image, limits.max_side)
    out = io.BytesIO()
    if limits.encoding == "png":
        frame.save(out, format="PNG", compress_level=6)
    else:
        frame.save(out, format="JPEG", quality=limits.jpeg_quality)
    return out.getvalue(), frame.size, orientation


def _cheap_frame_count(image: Image.Image) -> int | None:
    """The frame count where the header states it (APNG, WebP, TIFF); a GIF would need a full scan."""
    if image.format == "GIF":
        return None
    try:
        return int(getattr(image, "n_frames", 1))
    except Exception:
        return None
