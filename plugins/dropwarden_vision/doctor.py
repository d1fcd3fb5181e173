"""`dropwarden doctor`: check the vision backend end to end, one `ok:`/`FAIL:` line per check."""

from __future__ import annotations

import io
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
from PIL import Image

from dropwarden.cli import app_context, config_option
from dropwarden.config import SettingError, Settings
from dropwarden_vision.images import ImageLimits, PreparedImage, prepare_image
from dropwarden_vision.schema import VerdictSpec

if TYPE_CHECKING:
    from dropwarden_vision.openai_backend import OpenAIBackend

Check = tuple[bool, str]


@click.command()
@config_option
@click.pass_context
def doctor(ctx: click.Context, config_path: Path | None) -> None:
    """Check the vision backend (endpoint reachable, model served, accepted response format, an image
    round trip), OCR (Tesseract and its languages, a test image) and that the audit log's K_0 is off
    the host. Exit status 0 when every check passes, 1 otherwise; `note:` lines are not failures."""
    from dropwarden.logs import configure

    configure("warning")
    settings = app_context(ctx, config_path).config().settings
    ok = True
    if not settings.vision.enabled:
        click.echo("note: [vision] enabled = false: the daemon does not use this backend; checking it anyway")
    checks: list[Iterator[tuple[bool | None, str]]] = [run_checks(settings)]
    try:
        from dropwarden_ocr.doctor import run_checks as ocr_checks
    except ImportError:  # the OCR plugin is not installed
        pass
    else:
        checks.append(ocr_checks(settings))
    from dropwarden.commands.audit import doctor_checks as audit_checks

    checks.append(audit_checks(settings))
    for passed, text in itertools.chain(*checks):
        click.echo(f"{'note' if passed is None else 'ok' if passed else 'FAIL'}: {text}")
        ok = ok and passed is not False
    sys.exit(0 if ok else 1)


def doctor_image(settings: Settings) -> PreparedImage:
    """A 32x32 PNG made here, prepared the way the detector prepares images."""
    picture = Image.new("RGB", (32, 32), (200, 200, 200))
    picture.paste((30, 60, 200), (8, 8, 24, 24))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    vision = settings.vision
    return prepare_image(out.getvalue(), ImageLimits(vision.max_side, vision.max_pixels, 1))


def run_checks(settings: Settings) -> Iterator[Check]:
    if settings.vision.backend == "llama-cpp":
        yield from _llamacpp_checks(settings)
    else:
        yield from _openai_checks(settings)


def _openai_checks(settings: Settings) -> Iterator[Check]:
    from dropwarden_vision.openai_backend import OpenAIBackend, resolve_api_key

    vision = settings.vision
    try:
        key = resolve_api_key(vision)
    except SettingError as exc:
        yield False, f"api key: {exc}"
        return
    yield True, f"api key: {key}"
    spec = VerdictSpec.from_settings(vision)
    try:
        # No GPU gate: one diagnostic request, and the gate's lock directory may not be ours to write.
        backend = OpenAIBackend(settings, spec, gate=None, api_key=key)
    except SettingError as exc:
        yield False, str(exc)
        return
    try:
        yield from _endpoint_checks(backend, settings)
    finally:
        backend.close()


def _endpoint_checks(backend: OpenAIBackend, settings: Settings) -> Iterator[Check]:
    vision = settings.vision
    try:
        models = backend.list_models()
    except Exception as exc:
        yield False, f"endpoint {backend.endpoint}: GET /models failed: {exc}"
        return
    yield True, f"endpoint {backend.endpoint}: answers GET /models ({len(models)} model(s))"
    if vision.model in models:
        yield True, f"model {vision.model!r} is served"
    else:
        shown = ", ".join(repr(m) for m in models[:10]) or "none"
        yield False, f"model {vision.model!r} is not served (the server lists: {shown})"
    result = backend.probe(doctor_image(settings))
    if result.mode is None and result.rejected:
        yield False, "response_format: the server rejects " + "; ".join(result.rejected)
        return
    if result.mode is None:
        yield False, f"image round trip: {result.error}"
        return
    how = "configured" if vision.response_format != "auto" else "probed"
    if result.rejected:
        how += "; rejected: " + "; ".join(result.rejected)
    yield True, f"response_format: {result.mode} accepted ({how})"
    if result.error is not None:
        yield False, f"image round trip: {type(result.error).__name__}: {result.error}"
    else:
        yield True, f"image round trip: a valid verdict in {result.seconds:.2f}s"


def _llamacpp_checks(settings: Settings) -> Iterator[Check]:
    import time

    from dropwarden_vision.backend import create_backend

    vision = settings.vision
    for key in ("model_path", "mmproj_path"):
        path = getattr(vision, key)
        if path is None or not Path(path).is_file():
            yield False, f"vision.{key}: {path or 'not set'} is not a readable file"
            return
    spec = VerdictSpec.from_settings(vision)
    try:
        backend = create_backend(settings, spec)
    except Exception as exc:
        yield False, f"llama-cpp backend: {exc}"
        return
    yield True, f"llama-cpp backend: {getattr(backend, 'name', 'loaded')}"
    try:
        started = time.monotonic()
        backend.judge(doctor_image(settings))
        yield True, f"image round trip: a valid verdict in {time.monotonic() - started:.2f}s"
    except Exception as exc:
        yield False, f"image round trip: {type(exc).__name__}: {exc}"
    finally:
        backend.close()
