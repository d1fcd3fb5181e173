"""Watch drop folders with watchdog; the handlers only translate events and enqueue them."""

from __future__ import annotations

import logging
import os
import queue
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, EventDispatcher, EventQueue, ObservedWatch
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
from watchdog.observers.polling import PollingObserver

from dropwarden.act.fsops import DIR_FLAGS
from dropwarden.config import WatchSettings
from dropwarden.watch.settle import Hint, Settler, is_ignored

log = structlog.get_logger("dropwarden.watch")

# watchdog holds an IN_MOVED_FROM at the head of its event queue for `delay` (0.5 s by default) while it
# waits for the IN_MOVED_TO of the same rename, and every later event waits behind it. Each file the
# daemon releases or quarantines leaves the folder by a rename, so each judged file delayed the next
# file's close-write by up to half a second: files written in place 0.3 s apart left the inbox 0.22 s
# after close() instead of 0.03 s. Any wait at all is paid once per rename in a stream (5 ms made 100
# files/s slower than 0.5 s). Our handler treats the two halves of a move separately, and a directory
# moved within the tree whose halves are not paired is watched anew at its new path.
InotifyMoveEventGrouper.delay = 0


class Mounts:
    """Other file systems mounted inside a watched tree. inotify does not see into them (a watch on the
    mount point is on the directory underneath) and nothing can be renamed across them, so files under
    them are not watched, judged or moved; the daemon reports them instead.

    Two sources, each replaced whole (atomic for readers): the mount table, and directories whose
    device differs from the root's, which the sweeps find (btrfs subvolumes are not in the table)."""

    def __init__(self) -> None:
        self.from_table: frozenset[str] = frozenset()
        self.from_walk: frozenset[str] = frozenset()

    @property
    def paths(self) -> frozenset[str]:
        return self.from_table | self.from_walk

    def covers(self, path: str) -> bool:
        return any(path == m or path.startswith(m + os.sep) for m in self.paths)


@dataclass(frozen=True)
class WatchedTree:
    """A watch's root and the paths inside it that are ours (quarantine, release) and never judged."""

    settings: WatchSettings
    root: str
    excluded: tuple[str, ...]
    mounts: Mounts = field(default_factory=Mounts, compare=False)

    def inside(self, path: str) -> bool:
        """Under the root, and neither one of our own directories nor under another file system."""
        if not path.startswith(self.root + os.sep):
            return False
        if any(path == ex or path.startswith(ex + os.sep) for ex in self.excluded):
            return False
        return not self.mounts.covers(path)

    def relative(self, path: str) -> str | None:
        """Path relative to the root, or None when it is outside, excluded, or an ignored name."""
        if not self.inside(path):
            return None
        rel = path[len(self.root) + 1 :]
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
    DirDeletedEvent,  # the root's own IN_DELETE_SELF; IN_DELETE is subscribed for files anyway
]


class _Handler(FileSystemEventHandler):
    def __init__(
        self,
        tree: WatchedTree,
        settler: Settler,
        polling: bool,
        scanner: _DirScanner | None = None,
        on_root_gone: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.tree = tree
        self.settler = settler
        self.polling = polling
        self.scanner = scanner
        self.on_root_gone = on_root_gone

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            self._directory_event(event)
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

    def _directory_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if isinstance(event, DirDeletedEvent):
            if src == self.tree.root:
                # IN_DELETE_SELF (watchdog then stops this emitter). A rename of the root has no event
                # at all (watchdog drops IN_MOVE_SELF): the service's periodic check finds both.
                self.on_root_gone(f"watch root deleted: {self.tree.settings.id}")
            return
        if self.scanner is None:
            return
        if isinstance(event, DirCreatedEvent):
            self.scanner.submit(self.tree, src)
        elif isinstance(event, DirMovedEvent) and event.dest_path:
            self.scanner.submit(self.tree, os.fsdecode(event.dest_path))

    def _notify(self, path: str, hint: Hint) -> None:
        rel = self.tree.relative(path)
        if rel is not None:
            self.settler.notify(self.tree.settings.id, rel, hint)


class _DirScanner:
    """Lists each directory that appears in an inotify-watched tree and hands its files to the settler.

    A file written right after mkdir can be complete before watchdog watches the new directory: no
    close-write ever comes for it, and watchdog reports it only as a plain create (its own listing
    of the new directory), which would wait open_writer_timeout for the close-write. The handler
    runs after watchdog has added the directory's watch, so this listing, done afterwards, sees every
    file the watch could have missed; later files have their own events. Bounded: past `limit`
    entries the rest is left to a reconcile sweep.
    """

    def __init__(self, settler: Settler, on_loss: Callable[[str], None], limit: int = 10_000) -> None:
        self._settler = settler
        self._on_loss = on_loss
        self._limit = limit
        self._queue: queue.SimpleQueue[tuple[WatchedTree, str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="dir-scan", daemon=True)

    def submit(self, tree: WatchedTree, path: str) -> None:
        if tree.settings.recursive and tree.inside(path):
            self._queue.put((tree, path))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            tree, path = item
            try:
                fd = os.open(path, DIR_FLAGS)  # O_NOFOLLOW: a symlink swapped in is not listed
            except OSError:
                continue  # gone again (or not a directory): nothing to find
            try:
                left = self._list(tree, fd, path, os.fstat(fd).st_dev, self._limit)
            except (OSError, RecursionError):
                left = -1
            if left < 0:
                self._on_loss("new directory not fully listed")  # a reconcile sweep finds the rest

    def _list(self, tree: WatchedTree, fd: int, path: str, dev: int, budget: int) -> int:
        """Notify every file under the open directory `fd` (closed here); returns the budget left."""
        try:
            with os.scandir(fd) as listing:
                entries = list(listing)
            for entry in entries:
                budget -= 1
                if budget < 0:
                    return budget
                child = os.path.join(path, entry.name)
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if st.st_dev != dev or not tree.inside(child):
                        continue  # another file system, or one of ours: never listed
                    try:
                        sub = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                    except OSError:
                        continue
                    budget = self._list(tree, sub, child, dev, budget)
                    if budget < 0:
                        return budget
                    continue
                rel = tree.relative(child)
                if rel is not None:
                    self._settler.notify(tree.settings.id, rel, Hint.FOUND, "new-dir")
        finally:
            os.close(fd)
        return budget


class _DispatchAtOnce:
    """Stands in for the inotify observer's event queue: each event goes to its watch's handler at once,
    in the emitter thread that read it; only the observer's stop marker is queued.

    watchdog hands every event from its emitter thread to its dispatching thread through a queue. Under
    load that hop is a lock, a wake-up and a switch of the GIL per event, two or three events per file:
    ~5 % of a plain watch's CPU per file (bench/README.md, session 11). Our handlers only translate an
    event and append it to the settler's inbox, which is safe from any thread."""

    def __init__(self, queue_: EventQueue, handlers: dict[str, _Handler], on_loss: Callable[[str], None]):
        self._queue = queue_
        self._handlers = handlers  # watch root -> handler; registered before the watch is scheduled
        self._on_loss = on_loss

    def put(self, entry: object, block: bool = True, timeout: float | None = None) -> None:
        if entry is EventDispatcher.stop_event or not isinstance(entry, tuple):
            self._queue.put(entry, block, timeout)
            return
        event, watch = entry
        handler = self._handlers.get(watch.path)
        if handler is None:
            return  # unscheduled meanwhile: as watchdog drops the events of a watch taken off
        try:
            handler.dispatch(event)
        except Exception:  # an emitter thread must not die of it: its watch would go silent
            log.exception("watch event handler failed", kind=type(event).__name__)
            self._on_loss("watch event handler failed")

    def put_nowait(self, entry: object) -> None:
        self.put(entry, False)

    def __getattr__(self, name: str) -> object:  # get, task_done, ...: the observer's own loop
        return getattr(self._queue, name)


class _InotifyObserver(InotifyObserver):
    """watchdog's inotify observer (full move events) whose emitters call the handlers themselves."""

    def __init__(self, handlers: dict[str, _Handler], on_loss: Callable[[str], None]) -> None:
        super().__init__(generate_full_events=True)
        self._at_once = _DispatchAtOnce(super().event_queue, handlers, on_loss)

    @property
    def event_queue(self) -> EventQueue:
        return self._at_once  # type: ignore[return-value]


class Watcher:
    """All observers: one inotify observer for the inotify watches, one polling observer per polled watch.

    A watch can be taken off (its root is gone) and put back (re-armed on a new root) while running.
    """

    def __init__(
        self,
        trees: list[WatchedTree],
        settler: Settler,
        on_loss: Callable[[str], None],
    ) -> None:
        self._settler = settler
        self._on_loss = on_loss
        self._lock = threading.Lock()
        self._inotify: InotifyObserver | None = None
        self._observers: list[BaseObserver] = []
        self._scheduled: dict[str, tuple[BaseObserver, ObservedWatch]] = {}
        self._inotify_handlers: dict[str, _Handler] = {}  # watch root -> its handler
        self._scanner = _DirScanner(settler, on_loss)
        self._started = False
        for tree in trees:
            self.schedule(tree)
        self._overflow = _OverflowListener(on_loss)

    def schedule(self, tree: WatchedTree) -> None:
        """Watch `tree` (again); raises OSError when its root cannot be watched."""
        try:  # known before the first event: nothing under a mount is ever judged
            tree.mounts.from_table = mounts_inside(tree, mount_points())
        except OSError:
            pass
        with self._lock:
            if tree.settings.observer == "inotify":
                if self._inotify is None:
                    self._inotify = _InotifyObserver(self._inotify_handlers, self._on_loss)
                    self._add(self._inotify)
                handler = _Handler(tree, self._settler, False, self._scanner, self._on_loss)
                self._inotify_handlers[tree.root] = handler  # before its emitter reads an event
                try:
                    observed = self._inotify.schedule(
                        handler, tree.root, recursive=tree.settings.recursive, event_filter=_INOTIFY_EVENTS
                    )
                except BaseException:
                    del self._inotify_handlers[tree.root]
                    raise
                self._scheduled[tree.settings.id] = (self._inotify, observed)
            else:
                observer = PollingObserver(timeout=tree.settings.polling_interval)
                handler = _Handler(tree, self._settler, True, None, self._on_loss)
                observed = observer.schedule(handler, tree.root, recursive=tree.settings.recursive)
                self._add(observer)
                self._scheduled[tree.settings.id] = (observer, observed)

    def unschedule(self, watch_id: str) -> None:
        """Stop watching the watch's tree; its events stop (pending ones find no watch and are dropped)."""
        with self._lock:
            scheduled = self._scheduled.pop(watch_id, None)
            if scheduled is None:
                return
            observer, observed = scheduled
            if observer is self._inotify:
                self._inotify_handlers.pop(observed.path, None)
            try:
                observer.unschedule(observed)
            except KeyError:
                pass  # already gone with its emitter
            if observer is not self._inotify and observer in self._observers:
                self._observers.remove(observer)
                observer.stop()

    def _add(self, observer: BaseObserver) -> None:
        self._observers.append(observer)
        if self._started:
            observer.start()

    def start(self) -> None:
        logging.getLogger("watchdog.observers.inotify_c").addHandler(self._overflow)
        with self._lock:
            self._started = True
            self._scanner.start()
            for observer in self._observers:
                observer.start()

    def stop(self) -> None:
        with self._lock:
            observers = list(self._observers)
        for observer in observers:
            observer.stop()
        for observer in observers:
            observer.join(timeout=5)
        self._scanner.stop()
        logging.getLogger("watchdog.observers.inotify_c").removeHandler(self._overflow)


class _OverflowListener(logging.Handler):
    """watchdog reports a kernel queue overflow only as a log line; that line is our loss signal."""

    def __init__(self, on_loss: Callable[[str], None]) -> None:
        super().__init__(level=logging.WARNING)
        self._on_loss = on_loss

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._on_loss("inotify queue overflow")


_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


class Mount(NamedTuple):
    """One line of the mount table: where, what type ("ext4", "nfs4"; "" when the line has none), and
    the file system's own options ("rw,discard")."""

    point: str
    kind: str
    options: str


def mount_table(mountinfo: str = "/proc/self/mountinfo") -> list[Mount]:
    """Every mount this process sees (its mount namespace: a sandboxed service sees its own), in the
    order they were mounted."""
    with open(mountinfo, "rb") as handle:
        lines = handle.read().splitlines()
    mounts = []
    for line in lines:
        fields = line.split(b" ")
        if len(fields) <= 4:
            continue
        # Spaces, tabs, newlines and backslashes in the path are written as \ooo.
        point = os.fsdecode(_OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4]))
        after = fields.index(b"-", 6) + 1 if b"-" in fields[6:] else len(fields)  # type, source, options
        kind = os.fsdecode(fields[after]) if after < len(fields) else ""
        options = os.fsdecode(fields[after + 2]) if after + 2 < len(fields) else ""
        mounts.append(Mount(point, kind, options))
    return mounts


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Every mount point this process sees."""
    return [mount.point for mount in mount_table(mountinfo)]


# File systems whose calls wait on another host: a read, a stat or a rename there can stall for as long
# as the server is away (a hard NFS mount: forever). inotify sees only this host's own writes on them.
NETWORK_FILE_SYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs"}
    | {"fuse.sshfs", "fuse.s3fs", "fuse.rclone", "fuse.glusterfs", "fuse.cephfs", "fuse.gcsfuse"}
)


def mount_holding(path: str, mountinfo: str = "/proc/self/mountinfo") -> Mount | None:
    """The mount `path` (absolute, symlinks resolved by the caller) lies on: the deepest one holding
    it, the last one mounted where two share a point; None when no mount with a type holds it."""
    held = None
    for mount in mount_table(mountinfo):
        point = mount.point
        inside = path == point or path.startswith(point.rstrip(os.sep) + os.sep)
        if inside and mount.kind and (held is None or len(point) >= len(held.point)):
            held = mount
    return held


def file_system_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The type of the file system `path` lies on: "ext4", "nfs4", "fuse.sshfs"; "" when unknown (no
    mount holds it, or the mount table cannot be read). Symlinks in `path` are resolved first."""
    try:
        held = mount_holding(os.path.realpath(path), mountinfo)
    except OSError:
        return ""
    return held.kind if held is not None else ""


def mounts_inside(tree: WatchedTree, points: list[str]) -> frozenset[str]:
    """The mount points strictly under the tree's root, except our own directories."""
    prefix = tree.root + os.sep
    return frozenset(
        p
        for p in points
        if p.startswith(prefix) and not any(p == ex or p.startswith(ex + os.sep) for ex in tree.excluded)
    )
