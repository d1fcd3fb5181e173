"""Watch drop folders with watchdog; the handlers only translate events and enqueue them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from dropwarden.config import WatchSettings
from dropwarden.settle import Hint, Settler, is_ignored


@dataclass(frozen=True)
class WatchedTree:
    """A watch's root and the paths inside it that are ours (quarantine, release) and never judged."""

    settings: WatchSettings
    root: str
    excluded: tuple[str, ...]

    def relative(self, path: str) -> str | None:
        """Path relative to the root, or None when it is outside, excluded, or an ignored name."""
        if not path.startswith(self.root + os.sep):
            return None
        rel = path[len(self.root) + 1 :]
        if any(path == ex or path.startswith(ex + os.sep) for ex in self.excluded):
            return None
        if not self.settings.recursive and os.sep in rel:
            return None
        if is_ignored(os.path.basename(rel), self.settings.ignore):
            return None
        return rel


# Subscribing only to what settling needs keeps the kernel queue (and watchdog's Python work) small:
# no IN_MODIFY per write(2), no IN_OPEN/IN_CLOSE_NOWRITE for our own reads.
_INOTIFY_EVENTS = [
    FileCreatedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(self, tree: WatchedTree, settler: Settler, polling: bool) -> None:
        self.tree = tree
        self.settler = settler
        self.polling = polling

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            # With full events, a move in from outside has an empty source; a move out an empty dest.
            if event.src_path:
                self._notify(os.fsdecode(event.src_path), Hint.DELETED)
            if event.dest_path:
                self._notify(os.fsdecode(event.dest_path), Hint.STAT if self.polling else Hint.MOVED_IN)
            return
        path = os.fsdecode(event.src_path)
        if isinstance(event, FileClosedEvent):
            self._notify(path, Hint.CLOSED)
        elif isinstance(event, FileCreatedEvent):
            self._notify(path, Hint.STAT if (event.is_synthetic or self.polling) else Hint.CREATED)
        elif isinstance(event, FileModifiedEvent):
            self._notify(path, Hint.STAT if self.polling else Hint.MODIFIED)
        elif isinstance(event, FileDeletedEvent):
            self._notify(path, Hint.DELETED)

    def _notify(self, path: str, hint: Hint) -> None:
        rel = self.tree.relative(path)
        if rel is not None:
            self.settler.notify(self.tree.settings.id, rel, hint)


class Watcher:
    """All observers: one inotify observer for the inotify watches, one polling observer per polled watch."""

    def __init__(self, trees: list[WatchedTree], settler: Settler, on_loss: Callable[[str], None]) -> None:
        self._observers: list = []
        inotify_trees = [t for t in trees if t.settings.observer == "inotify"]
        if inotify_trees:
            observer = InotifyObserver(generate_full_events=True)
            for tree in inotify_trees:
                handler = _Handler(tree, settler, polling=False)
                observer.schedule(
                    handler, tree.root, recursive=tree.settings.recursive, event_filter=_INOTIFY_EVENTS
                )
            self._observers.append(observer)
        for tree in trees:
            if tree.settings.observer == "polling":
                observer = PollingObserver(timeout=tree.settings.polling_interval)
                observer.schedule(
                    _Handler(tree, settler, polling=True), tree.root, recursive=tree.settings.recursive
                )
                self._observers.append(observer)
        self._overflow = _OverflowListener(on_loss)

    def start(self) -> None:
        logging.getLogger("watchdog.observers.inotify_c").addHandler(self._overflow)
        for observer in self._observers:
            observer.start()

    def stop(self) -> None:
        for observer in self._observers:
            observer.stop()
        for observer in self._observers:
            observer.join(timeout=5)
        logging.getLogger("watchdog.observers.inotify_c").removeHandler(self._overflow)


class _OverflowListener(logging.Handler):
    """watchdog reports a kernel queue overflow only as a log line; that line is our loss signal."""

    def __init__(self, on_loss: Callable[[str], None]) -> None:
        super().__init__(level=logging.WARNING)
        self._on_loss = on_loss

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._on_loss("inotify queue overflow")
