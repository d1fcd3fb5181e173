"""What plugins register (detectors, extractors, actions) and the registry that holds them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from dropwarden.findings import Finding, FindingLimits
from dropwarden.judge.turn import without_turn as without_turn  # part of the plugin API
from dropwarden.views import View

if TYPE_CHECKING:
    from dropwarden.act.quarantine import QuarantineStore
    from dropwarden.config import Settings
    from dropwarden.judge.intake import Snapshot
    from dropwarden.watch.activewatch import ActiveWatch


@dataclass(frozen=True)
class DetectContext:
    """What the core hands a detector besides the view: the fingerprint function, the file's name, and
    `limits`: how many findings of a type (and in all) are kept. A detector that can make many findings
    should count past them without building them (`dropwarden.findings.FindingTally`, returning its
    `findings()`); the core caps whatever a detector returns anyway."""

    fingerprint: Callable[[str, str | bytes], str]
    display_path: str = ""
    limits: FindingLimits | None = field(default_factory=FindingLimits)


class Incomplete(Exception):
    """Raised by a detector or an extractor that judged only part of its input (frames past a limit, a
    later frame that failed): `results` (its findings, or its views) still count, and the file gets a
    problem with `reason` (a `dropwarden.verdict.Reason` value such as "too_large") and `detail`, so
    it is never clean."""

    def __init__(self, reason: str, detail: str, results: Iterable[Any] = ()) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.results = results


@runtime_checkable
class Detector(Protocol):
    """Judges views of the kinds in `view_kinds` ("text", "image"); returns findings, raises on failure.

    The core calls `detect` (not a hook fan-out) so it can apply timeouts, the GPU gate and fault
    isolation per detector. An exception becomes an `unscanned` problem, never "clean".

    A detector that must load something large (a model) may define `warm_up()`: the daemon calls it
    once before reporting ready, extending systemd's start timeout meanwhile (EXTEND_TIMEOUT_USEC).

    A detector whose running time is bounded by construction (linear-time matching, no I/O) may set
    `bounded = True`: the core then calls it in the caller's thread, saving a thread hand-off per call.
    Such a detector that still waits on something (a child process, a server) wraps the wait in
    `without_turn()`, so the other workers judge meanwhile (see `dropwarden.judge.turn`).

    A detector that judged only part of the view (say, the first frames of an animation) raises
    `Incomplete` with the findings it made: they stand, and the file gets the problem too.

    A detector whose settings can change its findings should define `settings_digest() -> Any`: its
    effective settings as a JSON-able value (dicts, lists, strings, numbers, bools, None), the same for
    equal settings. The core calls it whenever it (re)builds the registry (start, each reload) and hashes
    it with every detector's and extractor's `id` and `version` into the ruleset version that keys the
    judged-file index, so changing such a setting re-judges the files left in the folders on the next
    reconcile. Without it (or when it raises or returns something JSON cannot hold) only `id` and
    `version` count: put a hash of the settings into `version` instead, or accept that a settings change
    re-judges nothing.
    """

    id: str
    version: str
    view_kinds: ClassVar[frozenset[str]] | frozenset[str]

    def detect(self, view: View, ctx: DetectContext) -> list[Finding]: ...


@runtime_checkable
class Extractor(Protocol):
    """Turns a snapshot (and the views found so far) into further views (text from PDF, OCR, ...).

    The core calls `extract` in a worker thread bounded by `[limits] detector_timeout` (inline when the
    extractor sets `bounded = True`; one that then waits wraps the wait in `without_turn()`, as a
    detector does). An extractor may set `view_kinds` (e.g. {"image"}): it is then
    called only for files with a view of one of those kinds. To say why it could not extract, raise an
    exception whose `reason` attribute names a `dropwarden.verdict.Reason` value ("timeout",
    "too_large", "decode_error", ...); any other exception is a `detector_error`. Either way the file
    is `unscanned`, never "clean".

    Like a detector, an extractor may define `warm_up()` (called before READY=1) and `close()`.

    A text view read from an image carries `bbox` (and optionally `boxes`, see
    `dropwarden.judge.detect.locate`) in its provenance: findings in it get the bounding box of their match.
    A view made from another view names it in provenance `derived_from`: an image is judged when a
    detector judges it or a view derived from it. An extractor that read only part of its input
    raises `Incomplete` with the views it made.

    Like a detector, an extractor whose settings can change the views it makes (and so a verdict)
    should define `settings_digest() -> Any` (JSON-able; see `Detector`): it enters the ruleset version.
    """

    id: str
    version: str

    def extract(self, snapshot: Snapshot, views: list[View]) -> list[View]: ...


@dataclass(frozen=True)
class MoveRequest:
    """What a move action is handed by the act stage, after the act stage recorded the write-ahead
    intent and re-checked that the file is still the one judged.

    `op_id`: the step's id (the audit record's `actions[].id`, the intent's id, the quarantine item id);
    `watch`: the `ActiveWatch` (`dropwarden.watch.activewatch`: its `release_fd`, `settings`); `store`: the
    quarantine store, checked usable just now (moves go through it: see `dropwarden.act.handover`);
    `dir_fd` and `name`: the file in its folder; `relpath`: its path under the watch root;
    `snapshot`: the bytes judged, or None for a file never read (too large, unreadable: then
    `expected` holds its (st_dev, st_ino)); `sidecar`: the quarantine sidecar the act stage built."""

    op_id: str
    watch: ActiveWatch
    store: QuarantineStore
    dir_fd: int
    name: str
    relpath: str
    snapshot: Snapshot | None
    expected: tuple[int, int] | None = None
    sidecar: dict[str, Any] | None = None


@runtime_checkable
class Action(Protocol):
    """Something done about a verdict, registered through `dropwarden_register_actions`.

    `id` is the name a watch's `on_finding` / `on_unscanned` uses ("quarantine", an alert sink's id, a
    plugin's own name); `kind` is "move" or "notify"; `describe()` says in one line what it does
    (`dropwarden plugins` shows it).

    A **notify** action (`kind = "notify"`) defines `send(payload: dict) -> None`: `payload` is the
    ECS-shaped alert (`dropwarden.act.alerts.alert_payload`; never a sensitive value, only masked paths,
    types, rules and keyed fingerprints) or an `audit.head` event. It is called from the alert
    dispatcher's thread, never from a judging worker, out of the durable outbox: delivery is at least
    once (the same `event.id` may come again; de-duplicate on it), and `send` raises on any failure, the
    outbox then retrying it with exponential backoff (`[alerts] retry_initial`, `retry_max`).
    It may also define `send_batch(payloads: list[dict]) -> list[Exception | None]` for a receiver that
    takes several alerts per request: the dispatcher then calls it instead of `send`, once per delivery
    pass with every row due for it (1 to 100 payloads, oldest first; the action splits them into requests
    as its receiver allows), and reads back one outcome per payload, in the same order: None when that
    alert was delivered, an exception when it was not (that alert alone is retried with backoff, the
    others are done). Raising, or answering a list of another length, fails every payload of the call.
    Without `send_batch`, `send` is called once per alert as before. It may define `close()`, called
    when the daemon stops or a reload replaces it, and
    `use_audit(append)`: called once when the daemon builds its sinks, with `append(type, body)` that
    writes an event to the audit log (`type` such as "action.exec"; `body` JSON, never a raw value).
    A watch names it in `on_finding` / `on_unscanned`; `"alert"` there means every configured
    `[[alerts.sink]]`.
    Third-party plugins register notify actions.

    A **move** action (`kind = "move"`) defines `move(request: MoveRequest) -> str | None`: takes the
    file out of its folder through the quarantine store (`dropwarden.act.handover`), returning the relative
    path it was released to (None when it went into the store). The act stage owns everything around
    it: the write-ahead intent (startup recovery finishes or rolls back an interrupted move by the
    intent's op name, so only the built-in "quarantine" and "release" can be recovered), the identity
    re-check, and the outcome: `NotTheJudgedFile`, `Vanished` (from `dropwarden.act.handover`) and `OSError`
    raised by `move` become `action.aborted` / `action.failed`, never the action's own business.
    The "release" action may also define `move_many(requests: list[MoveRequest]) -> list[str | None |
    BaseException]` (requests of one watch, each intent recorded and identity re-checked): the act stage
    then hands it every clean file of a batch at once (`ActStage.release_batch`) and reads back one
    outcome per request, in order: what `move` would return, or the exception it would raise.
    Move actions are core-only in practice (the built-in actions plugin registers them).
    """

    id: str
    kind: str

    def describe(self) -> str: ...


@dataclass
class Registration:
    plugin: str
    kind: str
    id: str
    version: str
    obj: Any


@dataclass
class Registry:
    """Everything registered, keyed by id, with the plugin that registered it."""

    detectors: dict[str, Detector] = field(default_factory=dict)
    extractors: dict[str, Extractor] = field(default_factory=dict)
    actions: dict[str, Action] = field(default_factory=dict)
    registrations: list[Registration] = field(default_factory=list)

    def add(self, kind: str, plugin: str, obj: Any) -> None:
        table: dict[str, Any] = getattr(self, kind)
        protocol = {"detectors": Detector, "extractors": Extractor, "actions": Action}[kind]
        if not isinstance(obj, protocol):
            raise TypeError(f"{plugin}: {obj!r} does not implement {protocol.__name__}")
        if kind == "actions" and not _usable_action(obj):
            raise TypeError(
                f"{plugin}: action {obj.id!r}: kind must be 'notify' (with send) or 'move' (with move)"
            )
        if obj.id in table:
            owner = next(r.plugin for r in self.registrations if r.kind == kind and r.id == obj.id)
            raise ValueError(f"{plugin}: {kind[:-1]} id {obj.id!r} is already registered by {owner}")
        table[obj.id] = obj
        self.registrations.append(Registration(plugin, kind, obj.id, getattr(obj, "version", ""), obj))

    def by_plugin(self, plugin: str) -> list[Registration]:
        return [r for r in self.registrations if r.plugin == plugin]


def _usable_action(action: Any) -> bool:
    if action.kind == "notify":
        return callable(getattr(action, "send", None))
    return action.kind == "move" and callable(getattr(action, "move", None))


BUILT_IN_ACTION_NAMES = frozenset({"alert", "leave"})


def unknown_actions(settings: Settings, registry: Registry) -> list[tuple[tuple[str | int, ...], str]]:
    """(key, problem) for each action a watch names that no loaded plugin registers. `"alert"` (every
    configured alert sink) and `"leave"` (nothing) need no plugin; `release_to` needs "release"."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for index, watch in enumerate(settings.watch):
        named = [("on_finding", n) for n in watch.on_finding]
        named += [("on_unscanned", n) for n in watch.on_unscanned]
        if watch.release_to is not None:
            named.append(("release_to", "release"))
        for where, name in named:
            action = registry.actions.get(name)
            if name not in BUILT_IN_ACTION_NAMES and action is None:
                message = f"no loaded plugin registers action {name!r} (watch {watch.id} {where})"
                problems.append((("watch", index, where), message))
            elif where != "release_to" and name != "quarantine" and getattr(action, "kind", "") == "move":
                # Only clean files are released (release_to): a finding is never moved out that way.
                message = f"{name!r} moves files and cannot answer a finding or a problem (watch {watch.id})"
                problems.append((("watch", index, where), message))
    return problems
