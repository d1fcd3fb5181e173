"""Configuration: the core's settings models, plugins' tables composed onto them, and the errors."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SerializeAsAny,
    Tag,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dropwarden.cluster.settings import ClusterSettings
from dropwarden.findings import Severity

DEFAULT_CONFIG_PATH = Path("/etc/dropwarden/dropwarden.toml")
ENV_PREFIX = "DROPWARDEN_"
ENV_NESTED = "__"


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, so a typo cannot silently disable a rule."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def check_regex(pattern: str) -> str:
    """A field validator for plugins' models: the value must compile as a Python regular expression."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


def check_severity(value: str) -> str:
    """A field validator for plugins' models: a severity name ("low" … "critical"), lower-cased."""
    Severity.parse(value)
    return value.lower()


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


# An action's name: "quarantine", "alert" (every configured alert sink), or any registered action's id
# (an alert sink's, a plugin's). Whether a plugin registers it is checked when the registry is built.
Action = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,199}$")]


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

    _severity = field_validator("min_severity")(check_severity)

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
    """Base of every alert sink type's settings. An `[[alerts.sink]]` entry is validated with the model
    its `type` names (hook `dropwarden_alert_sink_types`); that model subclasses this one."""

    type: str
    name: str | None = None
    # Filters, applied as an alert is put in the outbox: one a sink does not accept is not queued for it.
    min_severity: str | None = None  # the alert's highest finding severity (medium without findings)
    watches: list[str] = []  # watch ids; empty: every watch
    types: list[str] = []  # finding types, any case ("unscanned": an alert without findings); empty: any
    # Flood control: beyond `rate_limit` alerts per `rate_interval` seconds (0: no limit) an alert is not
    # queued for this sink but summarised: one summary alert per interval, counts per watch and type.
    rate_limit: int = Field(default=0, ge=0)
    rate_interval: float = Field(default=60.0, gt=0)

    @field_validator("min_severity")
    @classmethod
    def _severity_name(cls, value: str | None) -> str | None:
        return None if value is None else check_severity(value)

    @property
    def id(self) -> str:
        return self.name or self.type

    def accepts(self, watch: str, severity: Severity, types: Collection[str]) -> bool:
        """Whether an alert about `watch`, at `severity`, with these finding types goes to this sink."""
        if self.min_severity is not None and severity < Severity.parse(self.min_severity):
            return False
        if self.watches and watch not in self.watches:
            return False
        wanted = {kind.casefold() for kind in self.types}
        return not wanted or any(kind.casefold() in wanted for kind in types)


class AlertsSettings(Strict):
    sink: list[SerializeAsAny[SinkSettings]] = []
    retry_initial: float = Field(default=1.0, gt=0)
    retry_max: float = Field(default=300.0, gt=0)
    # Undelivered outbox rows (one per alert and sink) beyond which a new alert is not queued: it is recorded
    # in the audit log instead (`alert.overflow`), counted, and the daemon is degraded until rows drain.
    max_queued: int = Field(default=100000, ge=1)


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
    # Compatibility path: untyped per-plugin tables. A plugin should own a table of its own instead
    # (hook `dropwarden_config_tables`) and read it with `Settings.table`.
    config: dict[str, dict[str, Any]] = {}


M = TypeVar("M", bound=BaseModel)


class Settings(BaseSettings):
    """The core's tables. Defaults are the embedded default (see etc/dropwarden/dropwarden.toml).

    Plugins' tables (`[rules]`, `[vision]`, a third party's own) are not fields of this class: loading
    (`dropwarden.configload.load_config`) validates each with the model its plugin declares and returns a
    subclass that has them. Built in code (tests, tools), `Settings(vision={...})` keeps such a table as
    given; `table()` validates it when asked.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        extra="allow",
        validate_default=True,
    )

    state: StateSettings = StateSettings()
    audit: AuditSettings = AuditSettings()
    limits: LimitsSettings = LimitsSettings()
    plugins: PluginsSettings = PluginsSettings()
    daemon: DaemonSettings = DaemonSettings()
    metrics: MetricsSettings = MetricsSettings()
    gpu: GpuSettings = GpuSettings()
    alerts: AlertsSettings = AlertsSettings()
    cluster: ClusterSettings = ClusterSettings()
    watch: list[WatchSettings] = []

    _loaded_plugins: Any = PrivateAttr(default=None)

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

    def table(self, name: str, model: type[M]) -> M:
        """A plugin's table `[name]` as its `model`; the model's defaults when the table is absent."""
        value = self.__dict__.get(name, (self.model_extra or {}).get(name))
        if value is None:
            return model()
        if isinstance(value, model):
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump()
        return model.model_validate(value)

    def plugin_config(self, name: str) -> dict[str, Any]:
        """Compatibility path: the untyped `[plugins.config.<name>]` table; prefer `table()`."""
        return self.plugins.config.get(name, {})

    @property
    def loaded_plugins(self) -> Any:
        """The `dropwarden.plugins.Plugins` whose tables these settings were validated with; None for
        settings built in code."""
        return self._loaded_plugins


CORE_TABLES = frozenset(Settings.model_fields)


def compose_settings(
    tables: tuple[tuple[str, type[BaseModel]], ...],
    sink_types: tuple[tuple[str, type[SinkSettings]], ...] | None,
) -> type[Settings]:
    """The Settings class for one set of plugins: a field per owned table, `[[alerts.sink]]` entries
    validated by the model of their type. `sink_types` None: sinks are not validated yet and tables
    nobody declared are ignored (the first pass, which only needs `[plugins]`)."""
    return _compose(tables, sink_types)


@functools.cache
def _compose(
    tables: tuple[tuple[str, type[BaseModel]], ...],
    sink_types: tuple[tuple[str, type[SinkSettings]], ...] | None,
) -> type[Settings]:
    if sink_types is None:
        sink_item: Any = Any
    elif not sink_types:
        sink_item = SinkSettings
    elif len(sink_types) == 1:
        sink_item = sink_types[0][1]
    else:
        members = tuple(Annotated[model, Tag(name)] for name, model in sink_types)
        sink_item = Annotated[Union[members], Discriminator(_sink_type)]  # noqa: UP007
    alerts = type(
        "AlertsSettings",
        (AlertsSettings,),
        {"__annotations__": {"sink": list[sink_item]}, "sink": [], "__module__": __name__},
    )
    namespace: dict[str, Any] = {
        "__annotations__": {"alerts": alerts, **{name: model for name, model in tables}},
        "alerts": Field(default_factory=alerts),
        "model_config": SettingsConfigDict(extra="ignore" if sink_types is None else "forbid"),
        "__module__": __name__,
    }
    for name, model in tables:
        namespace[name] = Field(default_factory=model)
    return type("Settings", (Settings,), namespace)


def _sink_type(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


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
    plugins: Any = None  # the dropwarden.plugins.Plugins loaded for these settings

    def source_of(self, loc: tuple[str | int, ...]) -> str:
        return _source_of(self.origins, loc)


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


def problem_of(
    error: Any, origins: dict[tuple[str | int, ...], str], model: type[BaseModel] = Settings
) -> ConfigProblem:
    """One pydantic error as `source: key: problem`; `model` is the class that was validated."""
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    if len(loc) > 3 and loc[:2] == ("alerts", "sink") and isinstance(loc[2], int) and error.get("input"):
        loc = _without_sink_tag(loc, model)
    source = _source_of(origins, loc)
    if error["type"] == "extra_forbidden":
        message = "unknown key" + _suggestion(loc, model)
    else:
        message = error["msg"].removeprefix("Value error, ")
        if "input" in error and error["type"] not in ("missing",) and not isinstance(error["input"], dict):
            message += f" (got {error['input']!r})"
    return ConfigProblem(source, format_key(loc), message)


def _without_sink_tag(loc: tuple[str | int, ...], model: type[BaseModel]) -> tuple[str | int, ...]:
    """A discriminated union of sink types puts the type's tag into the location: not a key."""
    annotation = model.model_fields["alerts"].annotation
    sink = getattr(annotation, "model_fields", {}).get("sink")
    if sink is not None and "Discriminator" in repr(sink.annotation):
        return loc[:3] + loc[4:]
    return loc


def _suggestion(loc: tuple[str | int, ...], model: type[BaseModel]) -> str:
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
