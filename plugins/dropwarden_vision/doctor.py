"""The vision plugin's `dropwarden doctor` checks: the backend end to end (endpoint, models, the accepted
response format, an image round trip), contributed through `dropwarden_doctor_checks`."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from dropwarden.config import SettingError, Settings
from dropwarden.hookspecs import Check
from dropwarden_vision.images import ImageLimits, PreparedImage, prepare_image
from dropwarden_vision.schema import VerdictSpec
from dropwarden_vision.settings import vision_settings

if TYPE_CHECKING:
    from dropwarden_vision.openai_backend import OpenAIBackend


def run_checks(settings: Settings) -> Iterator[Check]:
    """Off: one line saying so (no endpoint is contacted). On: the configured backend, checked end to end
    (every endpoint of a pool)."""
    if not vision_settings(settings).enabled:
        yield Check(
            "vision",
            "ok",
            "off ([vision] enabled = false); to check a backend before enabling it:"
            " DROPWARDEN_VISION__ENABLED=true dropwarden doctor",
        )
    elif vision_settings(settings).backend == "llama-cpp":
        yield from _llamacpp_checks(settings)
    else:
        yield from _openai_checks(settings)


def doctor_image(settings: Settings) -> PreparedImage:
    """A 32x32 PNG made here, prepared the way the detector prepares images."""
    picture = Image.new("RGB", (32, 32), (200, 200, 200))
    picture.paste((30, 60, 200), (8, 8, 24, 24))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    vision = vision_settings(settings)
    return prepare_image(out.getvalue(), ImageLimits(vision.max_side, vision.max_pixels, 1))


def _openai_checks(settings: Settings) -> Iterator[Check]:
    from dropwarden_vision.openai_backend import OpenAIBackend, resolve_api_key

    vision = vision_settings(settings)
    try:
        key = resolve_api_key(vision)
    except SettingError as exc:
        yield Check("vision api key", "fail", str(exc))
        return
    yield Check("vision api key", "ok", str(key))
    spec = VerdictSpec.from_settings(vision)
    pooled = len(vision.base_urls) > 1
    for url in vision.base_urls:
        try:
            # No GPU gate: one diagnostic request, and the gate's lock directory may not be ours to write.
            backend = OpenAIBackend(settings, spec, gate=None, api_key=key, base_url=url)
        except SettingError as exc:
            yield Check("vision backend", "fail", str(exc))
            return
        # With an endpoint pool every check names its endpoint: "vision model @ http://host:8080/v1".
        where = f" @ {backend.endpoint}" if pooled else ""
        try:
            yield from _endpoint_checks(backend, settings, where)
        finally:
            backend.close()


def _endpoint_checks(backend: OpenAIBackend, settings: Settings, where: str = "") -> Iterator[Check]:
    vision = vision_settings(settings)
    try:
        models = backend.list_models()
    except Exception as exc:
        yield Check(f"vision endpoint{where}", "fail", f"{backend.endpoint}: GET /models failed: {exc}")
        return
    yield Check(
        f"vision endpoint{where}", "ok", f"{backend.endpoint} answers GET /models ({len(models)} model(s))"
    )
    if vision.model in models:
        yield Check(f"vision model{where}", "ok", f"{vision.model!r} is served")
    else:
        shown = ", ".join(repr(m) for m in models[:10]) or "none"
        yield Check(
            f"vision model{where}", "fail", f"{vision.model!r} is not served (the server lists: {shown})"
        )
    result = backend.probe(doctor_image(settings))
    if result.mode is None and result.rejected:
        rejects = "the server rejects " + "; ".join(result.rejected)
        yield Check(f"vision response_format{where}", "fail", rejects)
        return
    if result.mode is None:
        yield Check(f"vision image round trip{where}", "fail", str(result.error))
        return
    how = "configured" if vision.response_format != "auto" else "probed"
    if result.rejected:
        how += "; rejected: " + "; ".join(result.rejected)
    yield Check(f"vision response_format{where}", "ok", f"{result.mode} accepted ({how})")
    yield _round_trip(result.error, result.seconds, where)


def _round_trip(error: BaseException | None, seconds: float | None, where: str = "") -> Check:
    if error is not None:
        return Check(f"vision image round trip{where}", "fail", f"{type(error).__name__}: {error}")
    return Check(f"vision image round trip{where}", "ok", f"a valid verdict in {seconds or 0:.2f}s")


def _llamacpp_checks(settings: Settings) -> Iterator[Check]:
    import time

    from dropwarden_vision.backend import create_backend

    vision = vision_settings(settings)
    for key in ("model_path", "mmproj_path"):
        path = getattr(vision, key)
        if path is None or not Path(path).is_file():
            yield Check(f"vision {key}", "fail", f"{path or 'not set'} is not a readable file")
            return
    spec = VerdictSpec.from_settings(vision)
    try:
        backend = create_backend(settings, spec)
    except Exception as exc:
        yield Check("vision backend", "fail", f"llama-cpp: {exc}")
        return
    yield Check("vision backend", "ok", f"llama-cpp: {getattr(backend, 'name', 'loaded')}")
    try:
        started = time.monotonic()
        backend.judge(doctor_image(settings))
        yield _round_trip(None, time.monotonic() - started)
    except Exception as exc:
        yield _round_trip(exc, None)
    finally:
        backend.close()
