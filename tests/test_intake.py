"""Safe intake: no link is followed, nothing non-regular is opened, the snapshot is the file's bytes."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from dropwarden.judge.intake import FileIdentity, Refusal, Snapshot, take_snapshot
from dropwarden.verdict import Reason


@pytest.fixture
def folder(tmp_path: Path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def snap(fd: int, name: str, **kwargs) -> Snapshot | Refusal:
    kwargs.setdefault("max_size", 1 << 20)
    return take_snapshot(fd, name, display_path=name, **kwargs)


def test_a_regular_file_is_snapshotted_with_its_hash_and_identity(folder):
    path, fd = folder
    (path / "a.txt").write_bytes(b"hello world\n")
    result = snap(fd, "a.txt")
    assert isinstance(result, Snapshot)
    assert result.data == b"hello world\n"
    assert result.sha256 == hashlib.sha256(b"hello world\n").hexdigest()
    assert result.identity == FileIdentity.of(os.stat(path / "a.txt"))


def test_a_symlink_is_refused_and_its_target_never_read(folder, tmp_path_factory):
    path, fd = folder
    secret = tmp_path_factory.mktemp("outside") / "secret.txt"
    secret.write_text("top secret")
    (path / "link.txt").symlink_to(secret)
    before = os.stat(secret).st_atime_ns
    result = snap(fd, "link.txt")
    assert isinstance(result, Refusal) and result.reason is Reason.SYMLINK
    assert os.stat(secret).st_atime_ns == before


def test_a_fifo_is_refused_without_blocking(folder):
    path, fd = folder
    os.mkfifo(path / "pipe")
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(snap(fd, "pipe")), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert outcome, "intake blocked on a FIFO"
    assert outcome[0].reason is Reason.NOT_REGULAR and "fifo" in outcome[0].detail


def test_a_socket_is_refused(folder):
    path, fd = folder
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path / "sock"))
        result = snap(fd, "sock")
    finally:
        server.close()
    assert result.reason is Reason.NOT_REGULAR and "socket" in result.detail


def test_a_hard_linked_file_is_refused_when_single_links_are_required(folder):
    path, fd = folder
    (path / "a.txt").write_text("x")
    os.link(path / "a.txt", path / "b.txt")
    assert isinstance(snap(fd, "a.txt"), Snapshot)
    result = snap(fd, "a.txt", require_single_link=True)
    assert result.reason is Reason.HARD_LINKED


def test_a_file_over_the_size_limit_is_refused_before_reading(folder):
    path, fd = folder
    (path / "big.bin").write_bytes(b"x" * 2000)
    result = snap(fd, "big.bin", max_size=1000)
    assert result.reason is Reason.TOO_LARGE


def test_a_vanished_file_is_refused_as_vanished_not_an_exception(folder):
    _, fd = folder
    assert snap(fd, "gone.txt").reason is Reason.VANISHED


def test_names_with_newlines_and_invalid_utf8_are_read(folder):
    path, fd = folder
    raw = b"bad\xff\nname.txt"
    with open(os.path.join(os.fsencode(path), raw), "wb") as handle:
        handle.write(b"content")
    result = take_snapshot(fd, raw, display_path="x", max_size=100)
    assert isinstance(result, Snapshot) and result.data == b"content"
