"""Parser jobs that misbehave on purpose, run in real worker processes by test_documents_isolation."""

from __future__ import annotations

import os
import signal
import time

from dropwarden_documents.formats import walk
from dropwarden_documents.settings import DocumentsSettings
from dropwarden_documents.walk import Outcome


def crash_on_crash(data: bytes, limits: DocumentsSettings) -> Outcome:
    """Segfault-like death on a file that says "crash", a hang on "hang", memory exhaustion on "eat"."""
    if data.startswith(b"crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if data.startswith(b"hang"):
        time.sleep(3600)
    if data.startswith(b"spin"):
        while True:
            pass
    if data.startswith(b"eat"):
        hoard = []
        while True:
            hoard.append(bytearray(64 * 1024 * 1024))
    return walk(data, limits)
