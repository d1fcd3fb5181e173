"""Dying between steps, as kill -9 would: wrap a process's steps so it exits after the n-th one."""

from __future__ import annotations

import os
from typing import Any

KILLED = 99  # the exit status of a process that died at its step


def die_after(crash_after: int, steps: list[tuple[Any, str]]) -> None:
    """Wrap each (owner, attribute) of `steps` (a class's method, a module's function) so that this
    process exits at once (os._exit: no cleanup, no flush, as kill -9) right after the `crash_after`-th
    call to any of them returns."""
    done = {"n": 0}

    def step(fn):
        def wrapped(*args, **kwargs):
            result = fn(*args, **kwargs)
            done["n"] += 1
            if done["n"] >= crash_after:
                os._exit(KILLED)
            return result

        return wrapped

    for owner, name in steps:
        setattr(owner, name, step(getattr(owner, name)))


def handover_steps() -> list[tuple[Any, str]]:
    """The file-system steps of a hand-over (act.handover): copy written, original held, copy placed,
    original unlinked."""
    from dropwarden.act import handover, quarantine

    store = quarantine.QuarantineStore
    return [
        (store, "write_copy"),
        (store, "hold"),
        (store, "discard"),
        (handover, "place_tagged"),
        (handover, "rename_noreplace"),
    ]
