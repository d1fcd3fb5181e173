"""Renames and the event stream: releases do not hold back the next file; directories moved within a
watch keep being watched at their new path; an event goes from the thread that read it straight to the
settler.

watchdog holds an IN_MOVED_FROM while it waits for the IN_MOVED_TO of the same rename, and events
behind it wait too; the daemon sets that wait to zero (`dropwarden.watch.watch`). These tests pin down
what that must not break: a directory renamed inside the tree is watched under its new name, and a
stream of files each released by a rename is judged in order of arrival, none lost.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from dropwarden.config import Settings
from dropwarden.watch.settle import Hint
from dropwarden.watch.watch import InotifyMoveEventGrouper, WatchedTree, Watcher

from .daemon_harness import DaemonProcess


def start(tmp_path: Path) -> tuple[DaemonProcess, Path, Path]:
    inbox, outbound = tmp_path / "inbox", tmp_path / "outbound"
    inbox.mkdir()
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[audit]\npath = "{audit}"\n[metrics]\nlisten = ""\n'
        "[ocr]\nenabled = false\n"
        f'[[watch]]\npath = "{inbox}"\nrelease_to = "{outbound}"\nquarantine_dir = "{tmp_path / "q"}"\n'
    )
    return DaemonProcess(config, audit).start(), inbox, outbound


def test_the_daemon_does_not_hold_events_behind_a_rename() -> None:
    assert InotifyMoveEventGrouper.delay == 0


def test_a_directory_renamed_inside_the_watch_is_watched_at_its_new_path(tmp_path: Path) -> None:
    daemon, inbox, outbound = start(tmp_path)
    try:
        (inbox / "a" / "deep").mkdir(parents=True)
        time.sleep(0.3)  # its watches are armed
        (inbox / "a").rename(inbox / "b")
        time.sleep(0.3)
        (inbox / "b" / "deep" / "new.txt").write_text("nothing to see here\n")
        (inbox / "b" / "card.txt").write_text("card 4111 1111 1111 1111\n")
        new = daemon.wait_for(lambda: daemon.decisions_for("b/deep/new.txt"), what="new.txt judged")
        card = daemon.wait_for(lambda: daemon.decisions_for("b/card.txt"), what="card.txt judged")
    finally:
        daemon.stop()
    assert new[0]["outcome"] == "clean" and (outbound / "b" / "deep" / "new.txt").exists()
    assert card[0]["outcome"] == "finding" and not (inbox / "b" / "card.txt").exists()
    assert not daemon.decisions_for("a/deep/new.txt") and not daemon.decisions_for("a/card.txt")


def test_files_released_one_after_another_are_each_judged_once(tmp_path: Path) -> None:
    """Every release is a rename out of the folder (an unpaired IN_MOVED_FROM): none may hide the next
    file's close-write, and none may be lost."""
    daemon, inbox, outbound = start(tmp_path)
    names = [f"f{index:03d}.txt" for index in range(60)]
    try:
        for name in names:
            fd = os.open(inbox / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"nothing to see here\n")
            os.close(fd)
            time.sleep(0.01)
        daemon.wait_for(
            lambda: all((outbound / name).exists() for name in names), timeout=60, what="all released"
        )
    finally:
        daemon.stop()
    assert sorted(os.listdir(inbox)) == []
    assert all(len(daemon.decisions_for(name)) == 1 for name in names)


# ------------------------------------------------------------------------------ events at once


class Recorder:
    """Stands where the settler stands: records each notification and the thread that made it."""

    def __init__(self, fail_on: str = "") -> None:
        self.seen: list[tuple[str, Hint, threading.Thread]] = []
        self.fail_on = fail_on
        self.arrived = threading.Event()

    def notify(self, watch: str, relpath: str, hint: Hint, origin: str = "event") -> None:
        self.seen.append((relpath, hint, threading.current_thread()))
        self.arrived.set()
        if relpath == self.fail_on:
            raise RuntimeError("the handler fails on this one")


def watching(tmp_path: Path, recorder: Recorder, losses: list[str]) -> tuple[Watcher, Path]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings = Settings.model_validate({"watch": [{"path": str(inbox)}]}).watch[0]
    watcher = Watcher([WatchedTree(settings, str(inbox), ())], recorder, losses.append)  # type: ignore[arg-type]
    watcher.start()
    return watcher, inbox


def closed_write(recorder: Recorder, relpath: str) -> threading.Thread | None:
    """The thread that reported `relpath`'s close-write, once it came (within 5 s)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for seen, hint, thread in list(recorder.seen):
            if seen == relpath and hint is Hint.CLOSED:
                return thread
        recorder.arrived.wait(0.05)
        recorder.arrived.clear()
    return None


def test_an_inotify_event_reaches_the_settler_from_the_thread_that_read_it(tmp_path: Path) -> None:
    """No hop through watchdog's dispatching thread: the observer's own thread never calls a handler."""
    recorder, losses = Recorder(), []
    watcher, inbox = watching(tmp_path, recorder, losses)
    try:
        (inbox / "a.txt").write_bytes(b"hello\n")
        thread = closed_write(recorder, "a.txt")
        observer = watcher._inotify
    finally:
        watcher.stop()
    assert thread is not None and observer is not None
    assert thread is not observer and thread is not threading.main_thread()
    assert not losses


def test_a_handler_that_fails_asks_for_a_sweep_and_the_watch_keeps_reporting(tmp_path: Path) -> None:
    """An exception in the handler must not end the emitter thread (the watch would go silent): it is
    a loss, which the daemon answers with a reconcile sweep, and later events still arrive."""
    recorder, losses = Recorder(fail_on="bad.txt"), []
    watcher, inbox = watching(tmp_path, recorder, losses)
    try:
        (inbox / "bad.txt").write_bytes(b"x\n")
        first = closed_write(recorder, "bad.txt")
        (inbox / "after.txt").write_bytes(b"y\n")
        later = closed_write(recorder, "after.txt")
    finally:
        watcher.stop()
    assert first is not None and later is not None
    assert "watch event handler failed" in losses
