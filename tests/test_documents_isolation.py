"""Parser workers: a crash, a hang, CPU spinning or memory exhaustion cost that one file, never the daemon."""

from __future__ import annotations

import io
import zipfile

import pytest

from dropwarden_documents.settings import DocumentsSettings
from dropwarden_documents.worker import WorkerFailed, WorkerPool

JOB = "tests.documents_faults:crash_on_crash"


def a_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.txt", "hello")
    return out.getvalue()


@pytest.fixture
def pool():
    limits = DocumentsSettings(
        file_timeout=3, worker_cpu_seconds=2, worker_memory=512 * 1024 * 1024, worker_max_files=3, workers=1
    )
    made = WorkerPool(limits, JOB)
    yield made
    made.close()


@pytest.mark.parametrize(
    "payload,reason",
    [(b"crash", "detector_error"), (b"hang", "timeout"), (b"spin", "timeout"), (b"eat", "too_large")],
)
def test_a_failing_parse_is_that_files_problem_and_the_next_file_is_parsed(pool, payload, reason):
    with pytest.raises(WorkerFailed) as failed:
        pool.run(payload)
    assert failed.value.reason == reason, failed.value.detail
    outcome = pool.run(a_zip())  # a fresh worker takes the next file
    assert [view[2] for view in outcome.views if view[0] == "text"][-1] == "hello"


def test_workers_are_recycled_after_max_files(pool):
    for _ in range(7):
        pool.run(a_zip())
    assert pool.started == 3  # 3 files per worker
