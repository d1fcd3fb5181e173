"""The vision detector: prepare the image, ask the backend through the circuit breaker, map to findings."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from dropwarden.findings import Finding, Location, Severity
from dropwarden.registry import Incomplete
from dropwarden.verdict import Problem
from dropwarden_vision.backend import VisionBackend, create_backend, plugin_options
from dropwarden_vision.backend_types import endpoint_failure
from dropwarden_vision.circuit import CircuitBreaker
from dropwarden_vision.images import ImageLimits, PreparedImage, prepare_frames
from dropwarden_vision.schema import Answer, VerdictSpec
from dropwarden_vision.settings import VisionCategory, vision_settings

if TYPE_CHECKING:
    from dropwarden.config import Settings
    from dropwarden.registry import DetectContext
    from dropwarden.views import View

log = structlog.get_logger("dropwarden.vision")

VERSION = "1.0.0"
EXCERPT = "[image judged by vision model]"
FALLBACK_CATEGORY = "other"
_FALLBACK = VisionCategory(type="VISION_OTHER", severity="low")


class VisionDetector:
    """Judges image views with a vision-language model.

    A sensitive answer at or above `vision.min_confidence` gives one finding per category; a clean answer
    gives none; every failure raises (the core records the view as unscanned with the message). The
    model's free-text description never leaves this object.

    Attributes: `id` ("vision"), `version` (detector version + hash of what shapes a verdict: model,
    prompt, categories, image limits...), `view_kinds`, `backend`, `circuit` (unused when the backend
    keeps its own breakers: an endpoint pool, `own_circuits`). Methods besides `detect`:
    `health()` for the daemon's degraded state, `close()`.
    """

    id = "vision"
    view_kinds: ClassVar[frozenset[str]] = frozenset({"image"})

    def __init__(self, settings: Settings, backend: VisionBackend | None = None) -> None:
        vision = vision_settings(settings)
        options = plugin_options(settings)
        self.settings = vision
        self.spec = VerdictSpec.from_settings(vision)
        self.limits = ImageLimits(
            max_side=vision.max_side,
            max_pixels=vision.max_pixels,
            max_frames=vision.max_frames,
            encoding=options["image_format"],
        )
        self.categories = {name: vision.categories[name] for name in vision.categories}
        self.severities = {name: Severity.parse(c.severity) for name, c in self.categories.items()}
        self.circuit = CircuitBreaker(vision.circuit_failures, vision.circuit_open_seconds)
        self.version = _version(vision, options)
        self._options = options
        self.backend = backend if backend is not None else create_backend(settings, self.spec)
        # An endpoint pool keeps a breaker per endpoint: `self.circuit` is then unused.
        self._own_circuits = bool(getattr(self.backend, "own_circuits", False))

    def detect(self, view: View, ctx: DetectContext) -> list[Finding]:
        """Findings for the frames judged (up to `[vision] max_frames`). Frames left unjudged raise
        Incomplete ("too_large") with the findings made, as does a later frame's failure after earlier
        findings (a failure with nothing found yet is raised as it is)."""
        if getattr(view, "kind", None) != "image":
            return []
        frames = prepare_frames(view.data, self.limits)  # type: ignore[union-attr]
        findings: list[Finding] = []
        for frame in frames:
            try:
                if self._own_circuits:
                    answer = self.backend.judge(frame)
                else:
                    answer = self.circuit.call(lambda f=frame: self.backend.judge(f), endpoint_failure)
            except Exception as exc:
                if not findings:
                    raise
                # The findings of earlier frames stand; this frame's failure is the file's problem too.
                log.warning(
                    "vision: a later frame failed; keeping the findings of earlier frames",
                    frame=frame.provenance.get("frame"),
                    error=f"{type(exc).__name__}: {exc}",
                )
                failed = Problem.from_exception(exc, "")
                detail = f"frame {frame.provenance.get('frame')}: {failed.detail}"
                raise Incomplete(failed.reason.value, detail, findings) from None
            findings.extend(self._findings(view.name, frame, answer, ctx))
        unjudged = frames[0].provenance.get("unjudged") if frames else None
        if unjudged:
            raise Incomplete("too_large", unjudged, findings)
        return findings

    def settings_digest(self) -> Any:
        """The `[vision]` settings that can change a verdict (endpoint, model, prompt, categories,
        `min_confidence`, image limits, …) and `[plugins.config.vision]`, as JSON; the core's ruleset
        version hashes it. Left out: credentials and how requests are run (timeouts, retries, the
        concurrency limits and gate resources, the circuit breaker, threads and GPU layers)."""
        return {
            "vision": self.settings.model_dump(mode="json", exclude=_OPERATIONAL),
            "options": self._options,
        }

    def health(self) -> dict[str, str]:
        """`{"vision": reason}` while the circuit breaker (of a pool: any endpoint's) is open or
        half-open, `{}` otherwise."""
        reason = self.backend.health() if self._own_circuits else self.circuit.health()
        return {"vision": reason} if reason else {}

    def close(self) -> None:
        self.backend.close()

    def warm_up(self) -> None:
        """Load an embedded model before the daemon reports ready (the daemon extends its start timeout)."""
        load = getattr(self.backend, "load", None)
        if load is not None:
            load()

    def _findings(
        self, view_name: str, frame: PreparedImage, answer: Answer, ctx: DetectContext
    ) -> list[Finding]:
        if not answer.contains_sensitive or answer.confidence < self.settings.min_confidence:
            return []
        names = [name if name in self.categories else FALLBACK_CATEGORY for name in answer.categories]
        extra: dict[str, Any] = {
            "frame": frame.provenance.get("frame", 0),
            "frames_judged": frame.provenance.get("frames_judged", 1),
            "format": frame.provenance.get("format"),
            "model": self.settings.model,
        }
        if frame.provenance.get("frames_unjudged"):
            extra["frames_unjudged"] = True
        findings = []
        for name in dict.fromkeys(names or [FALLBACK_CATEGORY]):
            category = self.categories.get(name, _FALLBACK)
            findings.append(
                Finding(
                    type=category.type,
                    rule=f"vision.{name}",
                    detector=self.id,
                    detector_version=self.version,
                    severity=self.severities.get(name) or Severity.parse(category.severity),
                    confidence=answer.confidence,
                    location=Location(view=view_name),
                    excerpt=EXCERPT,
                    fingerprint=ctx.fingerprint(category.type, frame.sha256),
                    extra=dict(extra),
                )
            )
        return findings


# `[vision]` settings that change how requests run, not what an answer means
_OPERATIONAL = {
    "enabled",
    "api_key_env",
    "api_key_file",
    "timeout",
    "retries",
    "max_in_flight",
    "gate_resource",
    "gpu_resource",
    "n_threads",
    "n_gpu_layers",
    "circuit_failures",
    "circuit_open_seconds",
}


def _version(vision: Any, options: dict[str, Any]) -> str:
    """Changes when what a verdict means changes, so the judged-file index re-judges old files."""
    material = {
        "backend": vision.backend,
        "model": vision.model if vision.backend == "openai" else str(vision.model_path),
        "prompt": vision.prompt,
        "categories": {name: c.model_dump() for name, c in vision.categories.items()},
        "limits": [vision.max_side, vision.max_pixels, vision.max_frames],
        "min_confidence": vision.min_confidence,
        "options": options,
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]
    return f"{VERSION}+vm.{digest}"
