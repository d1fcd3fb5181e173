"""The actions a decision announces in its record: an id for each move and alert, or why it waits."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from dropwarden.act.alerts import filter_sinks
from dropwarden.act.policy import Decision
from dropwarden.config import SinkSettings
from dropwarden.watch.activewatch import ActiveWatch

MOVES = ("quarantine", "release")


def plan_actions(
    store_problem: Callable[[ActiveWatch], str | None],
    sinks: list[str],
    sink_filters: Mapping[str, SinkSettings],
    watch: ActiveWatch,
    decision: Decision,
    have_bytes: bool,
) -> list[dict[str, Any]]:
    """The actions the decision record announces: an id for each, or why it is deferred (the watch's
    quarantine directory is unusable: `store_problem`)."""
    planned: list[dict[str, Any]] = []
    moves = "quarantine" in decision.actions or ("release" in decision.actions and have_bytes)
    problem = store_problem(watch) if moves else None
    if "quarantine" in decision.actions:
        if problem is not None:
            planned.append({"op": "quarantine", "deferred": problem})
        elif have_bytes:
            planned.append({"op": "quarantine", "id": uuid.uuid4().hex})
        else:
            planned.append({"op": "quarantine", "id": uuid.uuid4().hex, "unread": True})
    if "release" in decision.actions and have_bytes:
        if problem is not None:
            planned.append({"op": "release", "deferred": problem})
        else:
            planned.append({"op": "release", "id": uuid.uuid4().hex})
    targets, filtered = filter_sinks(
        notify_targets(decision.actions, sinks), sink_filters, watch.id, decision.acting_findings
    )
    if targets:
        planned.append({"op": "alert", "id": uuid.uuid4().hex, "sinks": targets})
    if filtered:  # the record says which sinks' filters left this alert out
        planned.append({"op": "alert.filtered", "sinks": filtered})
    return planned


def notify_targets(actions: tuple[str, ...], sinks: list[str]) -> list[str]:
    """The notify actions an alert goes to: every configured alert sink for "alert", and each other
    action a watch names that is not a move (a plugin's notify action, an alert sink by id)."""
    targets = list(sinks) if "alert" in actions else []
    targets += [name for name in actions if name not in ("alert", "leave", *MOVES) and name not in targets]
    return targets
