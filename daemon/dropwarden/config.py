"""Configuration: the settings model, TOML file + drop-ins + DROPWARDEN_* environment, and its errors."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dropwarden.findings import Severity

DEFAULT_CONFIG_PATH = Path("/etc/dropwarden/dropwarden.toml")
ENV_PREFIX = "DROPWARDEN_"
ENV_NESTED = "__"


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, so a typo cannot silently disable a rule."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


def _check_severity(value: str) -> str:
    Severity.parse(value)
    return value.lower()


class CustomRule(Strict):
    """A rule written by the operator: a regex, the finding type it reports, and optional checks."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    type: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    pattern: str
    severity: str = "medium"
    confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    validator: str | None = None
    context: list[str] = []
    context_window: int = Field(default=64, ge=1, le=4096)
    ignore_case: bool = False

    _pattern = field_validator("pattern")(_check_regex)
    _severity = field_validator("severity")(_check_severity)


class AllowList(Strict):
    """Findings to drop: by value, by fingerprint (keeps secrets out of the config), regex, path glob."""

    values: list[str] = []
    fingerprints: list[str] = []
    patterns: list[str] = []
    paths: list[str] = []

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            _check_regex(pattern)
        return patterns


class RulesSettings(Strict):
    packs: list[Literal["pii", "secrets"]] = ["pii", "secrets"]
    disable: list[str] = []
    custom: list[CustomRule] = []
    allow: AllowList = AllowList()
    engine: Literal["auto", "hyperscan", "python"] = "auto"
    max_match_length: int = Field(default=512, ge=16, le=65536)


class LimitsSettings(Strict):
    max_file_size: ByteSize = ByteSize(64 * 1024 * 1024)
    detector_timeout: float = Field(default=30.0, gt=0)
    max_findings_per_type: int = Field(default=50, ge=1)
    max_findings: int = Field(default=200, ge=1)
    max_findings_counted: int = Field(default=100_000, ge=1)
    max_trailing_bytes: ByteSize = ByteSize(16 * 1024 * 1024)


class StateSettings(Strict):
    dir: Path = Path("/var/lib/dropwarden")


class AuditSettings(Strict):
    path: Path = Path("/var/log/dropwarden/audit.jsonl")
    checkpoint_every: int = Field(default=1000, ge=1)
    checkpoint_interval: float = Field(default=10.0, gt=0)
    fsync: Literal["always", "batch", "never"] = "batch"
    spool_timeout: float = Field(default=15.0, gt=0)
    head_interval: float = Field(default=60.0, ge=0)  # seconds between audit.head events; 0: none


Action = Literal["quarantine", "alert"]


def _actions(value: Any) -> Any:
    """`"leave"` means no action; a single action may be written without brackets."""
    if value == "leave":
        return []
    return [value] if isinstance(value, str) else value


class WatchSettings(Strict):
    """One drop folder and what to do with what lands in it."""

    path: Path
    name: str | None = None
    recursive: bool = True
    ignore: list[str] = ["*.part", "*.tmp", ".~lock*", "*.crdownload", ".*.swp"]
    min_severity: str = "medium"
    on_finding: list[Action] = ["quarantine", "alert"]
    on_unscanned: list[Action] = ["quarantine", "alert"]
    release_to: Path | None = None
    quarantine_dir: Path | None = None
    observer: Literal["inotify", "polling"] = "inotify"
    polling_interval: float = Field(default=2.0, gt=0)
    settle_quiet: float | None = Field(default=None, ge=0)  # None: [daemon] settle_quiet
    require: list[str] = []  # detector ids that must judge each file of a kind they judge

    _severity = field_validator("min_severity")(_check_severity)

    @field_validator("on_finding", "on_unscanned", mode="before")
    @classmethod
    def _leave_means_nothing(cls, value: Any) -> Any:
        return _actions(value)

    @field_validator("path", "release_to", "quarantine_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    @property
    def id(self) -> str:
        return self.name or str(self.path)


class SinkSettings(Strict):
    """Where alerts go. `jsonl` appends one ECS-shaped JSON object per line to `path`."""

    type: Literal["jsonl"]
    name: str | None = None
    path: Path

    @property
    def id(self) -> str:
        return self.name or f"{self.type}:{self.path}"


class AlertsSettings(Strict):
    sink: list[SinkSettings] = []
    retry_initial: float = Field(default=1.0, gt=0)
    retry_max: float = Field(default=300.0, gt=0)


class DaemonSettings(Strict):
    """How the daemon runs: concurrency, settling, reconciliation, shutdown."""

    workers: int = Field(default=2, ge=1, le=64)
    queue_size: int = Field(default=1000, ge=1)
    settle_quiet: float = Field(default=0.02, ge=0)
    settle_stat: float = Field(default=1.0, gt=0)
    open_writer_timeout: float = Field(default=60.0, gt=0)
    reconcile_interval: float = Field(default=300.0, gt=0)
    drain_timeout: float = Field(default=20.0, ge=0)
    stall_timeout: float = Field(default=120.0, gt=0)


class GpuSettings(Strict):
    """The GPU gate: named resources with capacities; host-wide slots are flock'ed files in lock_dir."""

    lock_dir: Path = Path("/run/dropwarden/gate")
    resources: dict[str, int] = {"gpu0": 2, "vision-endpoint": 16}
    min_free_memory_mib: int = Field(default=0, ge=0)

    @field_validator("resources")
    @classmethod
    def _positive(cls, resources: dict[str, int]) -> dict[str, int]:
        for name, capacity in resources.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(f"resource name {name!r} may use letters, digits, '.', '_' and '-' only")
            if capacity < 1:
                raise ValueError(f"resource {name!r} needs a capacity of at least 1")
        return resources


class VisionCategory(Strict):
    type: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    severity: str = "high"

    _severity = field_validator("severity")(_check_severity)


_VISION_CATEGORIES = {
    name: VisionCategory(type=f"VISION_{name.upper()}", severity=severity)
    for name, severity in (
        ("id_document", "high"),
        ("payment_card", "high"),
        ("bank_document", "high"),
        ("medical", "high"),
        ("screenshot_with_personal_data", "medium"),
        ("handwriting_personal", "medium"),
        ("other", "low"),
    )
}


class VisionSettings(Strict):
    """The vision-language detector: an OpenAI-compatible endpoint or an embedded llama.cpp model."""

    enabled: bool = False
    backend: Literal["openai", "llama-cpp"] = "openai"
    # openai backend
    base_url: str = "http://127.0.0.1:8080/v1"
    model: str = "llava"
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: Path | None = None
    response_format: Literal["auto", "json_schema", "json_object", "prompt"] = "auto"
    timeout: float = Field(default=25.0, gt=0)
    retries: int = Field(default=1, ge=0, le=10)
    max_in_flight: int = Field(default=4, ge=1)
    gate_resource: str = "vision-endpoint"
    # llama-cpp backend
    model_path: Path | None = None
    mmproj_path: Path | None = None
    chat_handler: str = "llava-1-5"
    n_gpu_layers: int = 0
    n_ctx: int = Field(default=4096, ge=512)
    n_threads: int | None = None
    gpu_resource: str = "gpu0"
    # images and answers
    max_side: int = Field(default=672, ge=32, le=8192)
    max_pixels: int = Field(default=50_000_000, ge=1)
    max_frames: int = Field(default=1, ge=1)
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    prompt: str | None = None
    categories: dict[str, VisionCategory] = _VISION_CATEGORIES
    circuit_failures: int = Field(default=5, ge=1)
    circuit_open_seconds: float = Field(default=30.0, gt=0)


class TesseractSettings(Strict):
    """The Tesseract OCR engine: a CLI run per image (CPU), bounded in time and memory."""

    binary: str = "tesseract"
    tessdata_dir: Path | None = None
    languages: str = Field(default="jpn+jpn_vert+eng", pattern=r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
    psm: int = Field(default=3, ge=1, le=13)
    threads: int = Field(default=1, ge=1, le=64)
    max_memory_mib: int = Field(default=1024, ge=64)
    region_languages: str = Field(default="osd", pattern=r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
    region_level: Literal["block", "paragraph", "line"] = "block"


class MangaOcrSettings(Strict):
    """The MangaOCR engine (extra `mangaocr`): one text block per call, regions found by Tesseract."""

    model: str = "kha-white/manga-ocr-base"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpu_resource: str = "gpu0"


class OcrSettings(Strict):
    """OCR extractors: text read from images becomes text views that every text detector judges."""

    enabled: bool | Literal["auto"] = "auto"
    engines: list[Literal["tesseract", "mangaocr"]] = Field(default=["tesseract"], min_length=1)
    timeout: float = Field(default=25.0, gt=0)
    max_pixels: int = Field(default=50_000_000, ge=1)
    max_side: int = Field(default=4096, ge=32, le=32768)
    max_frames: int = Field(default=4, ge=1)
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    tesseract: TesseractSettings = TesseractSettings()
    mangaocr: MangaOcrSettings = MangaOcrSettings()

    @field_validator("engines")
    @classmethod
    def _unique(cls, engines: list[str]) -> list[str]:
        if len(set(engines)) != len(engines):
            raise ValueError("each engine may be named once")
        return engines


class MetricsSettings(Strict):
    """Prometheus metrics and /healthz on a loopback address ("" switches them off; port 0 picks one)."""

    listen: str = "127.0.0.1:9468"

    @field_validator("listen")
    @classmethod
    def _loopback(cls, value: str) -> str:
        if value:
            from dropwarden.metrics import parse_listen

            try:
                parse_listen(value)
            except ValueError as exc:
                raise ValueError(f"expected a loopback HOST:PORT ({exc})") from None
        return value


class PluginsSettings(Strict):
    allow: list[str] | None = None
    strict: bool = False
    config: dict[str, dict[str, Any]] = {}


class Settings(BaseSettings):
    """The whole configuration. Defaults are the embedded default (see etc/dropwarden/dropwarden.toml)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        extra="forbid",
        validate_default=True,
    )

    state: StateSettings = StateSettings()
    audit: AuditSettings = AuditSettings()
    rules: RulesSettings = RulesSettings()
    limits: LimitsSettings = LimitsSettings()
    plugins: PluginsSettings = PluginsSettings()
    daemon: DaemonSettings = DaemonSettings()
    metrics: MetricsSettings = MetricsSettings()
    gpu: GpuSettings = GpuSettings()
    vision: VisionSettings = VisionSettings()
    ocr: OcrSettings = OcrSettings()
    alerts: AlertsSettings = AlertsSettings()
    watch: list[WatchSettings] = []

    @field_validator("watch")
    @classmethod
    def _unique_watch_ids(cls, watches: list[WatchSettings]) -> list[WatchSettings]:
        seen: set[str] = set()
        for watch in watches:
            if watch.id in seen:
                raise ValueError(f"two watches share the id {watch.id!r}; give them distinct names")
            seen.add(watch.id)
        return watches

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the files, which arrive as init kwargs.
        return (env_settings, init_settings)

    def plugin_config(self, name: str) -> dict[str, Any]:
        return self.plugins.config.get(name, {})


@dataclass(frozen=True)
class ConfigProblem:
    source: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.key or '(top level)'}: {self.message}"


class SettingError(ValueError):
    """A plugin's complaint about one configuration key, raised from its registration hook."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(f"{format_key(loc)}: {message}")
        self.loc = loc
        self.message = message


class ConfigError(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


@dataclass(frozen=True)
class LoadedConfig:
    settings: Settings
    files: tuple[Path, ...]
    origins: dict[tuple[str | int, ...], str]

    def source_of(self, loc: tuple[str | int, ...]) -> str:
        return _source_of(self.origins, loc)


def dropin_dir(config_path: Path) -> Path:
    return config_path.with_name(config_path.stem + ".d")


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> LoadedConfig:
    """Read the file (default path when None; missing default means embedded defaults), its drop-ins
    (`<stem>.d/*.toml`, name order, deep merge), then environment overrides. Raises ConfigError."""
    environ = dict(os.environ if environ is None else environ)
    explicit = path is not None
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    problems: list[ConfigProblem] = []
    merged: dict[str, Any] = {}
    origins: dict[tuple[str | int, ...], str] = {}
    files: list[Path] = []

    if path.exists():
        candidates = [path, *sorted(dropin_dir(path).glob("*.toml"))]
    elif explicit:
        raise ConfigError([ConfigProblem(str(path), "", "configuration file not found")])
    else:
        candidates = sorted(dropin_dir(path).glob("*.toml"))

    for candidate in candidates:
        try:
            with candidate.open("rb") as handle:
                data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            problems.append(ConfigProblem(str(candidate), "", f"TOML syntax error: {exc}"))
            continue
        except OSError as exc:
            problems.append(ConfigProblem(str(candidate), "", f"cannot read: {exc.strerror}"))
            continue
        files.append(candidate)
        _deep_merge(merged, data, str(candidate), (), origins)
    if problems:
        raise ConfigError(problems)

    env_keys = _env_origins(environ)
    try:
        settings = _build(merged, environ)
    except ValidationError as exc:
        all_origins = {**origins, **env_keys}
        raise ConfigError([_problem(err, all_origins) for err in exc.errors()]) from None
    return LoadedConfig(settings, tuple(files), {**origins, **env_keys})


def _build(merged: dict[str, Any], environ: dict[str, str]) -> Settings:
    saved = os.environ.copy()
    try:
        os.environ.clear()
        os.environ.update({k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)})
        return Settings(**merged)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _deep_merge(
    into: dict[str, Any],
    new: dict[str, Any],
    source: str,
    prefix: tuple[str | int, ...],
    origins: dict[tuple[str | int, ...], str],
) -> None:
    """Tables merge recursively; arrays of tables append (a drop-in adds a rule); other values replace."""
    for key, value in new.items():
        loc = (*prefix, key)
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value, source, loc, origins)
        elif _is_table_array(value) and _is_table_array(into.get(key)):
            start = len(into[key])
            into[key].extend(value)
            for index, item in enumerate(value, start):
                _record_origins(item, source, (*loc, index), origins)
        else:
            into[key] = value
            _record_origins(value, source, loc, origins)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _record_origins(value: Any, source: str, loc: tuple[str | int, ...], origins: dict) -> None:
    origins[loc] = source
    if isinstance(value, dict):
        for key, sub in value.items():
            _record_origins(sub, source, (*loc, key), origins)
    elif _is_table_array(value):
        for index, sub in enumerate(value):
            _record_origins(sub, source, (*loc, index), origins)


def _env_origins(environ: dict[str, str]) -> dict[tuple[str | int, ...], str]:
    out: dict[tuple[str | int, ...], str] = {}
    for name in environ:
        if name.startswith(ENV_PREFIX) and name != "DROPWARDEN_LOAD_PLUGINS":
            loc = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_NESTED))
            out[loc] = f"environment {name}"
    return out


def _source_of(origins: dict[tuple[str | int, ...], str], loc: tuple[str | int, ...]) -> str:
    for length in range(len(loc), 0, -1):
        if loc[:length] in origins:
            return origins[loc[:length]]
    return "defaults"


def format_key(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(error: Any, origins: dict[tuple[str | int, ...], str]) -> ConfigProblem:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    source = _source_of(origins, loc)
    if error["type"] == "extra_forbidden":
        message = "unknown key" + _suggestion(loc)
    else:
        message = error["msg"].removeprefix("Value error, ")
        if "input" in error and error["type"] not in ("missing",) and not isinstance(error["input"], dict):
            message += f" (got {error['input']!r})"
    return ConfigProblem(source, format_key(loc), message)


def _suggestion(loc: tuple[str | int, ...]) -> str:
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return ""
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        nested = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nested is None:
            return ""
        model = nested
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
