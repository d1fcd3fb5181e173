"""The work queue: settled files for the workers, and the answers for files in flight elsewhere, which a
worker takes first; files begin only while the watcher has room for them, and nothing is ever dropped."""

from __future__ import annotations

import queue
import threading

import pytest

from dropwarden.watch.settle import BATCH_MAX, WorkItem
from dropwarden.watch.workqueue import WorkQueue


def files(count: int, start: int = 0) -> list[WorkItem]:
    return [WorkItem("inbox", f"file-{index}.txt", "event") for index in range(start, start + count)]


def taken_in(work: WorkQueue, timeout: float = 5.0) -> tuple[list, list[WorkItem], int, bool]:
    """`work.take(1)` from another thread, so that a take that would wait forever fails the test."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(work.take(1)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert result, "take() did not return"
    return result[0]


def test_answers_are_taken_before_the_files_behind_them():
    work = WorkQueue()
    for item in files(3):
        work.put(item)
    work.answer("verdict-a")
    work.answer("verdict-b")
    answers, taken, count, stop = work.take(1)
    assert answers == ["verdict-a", "verdict-b"]
    assert [item.relpath for item in taken] == ["file-0.txt", "file-1.txt", "file-2.txt"]
    assert (count, stop) == (3, False)


def test_files_wait_in_the_queue_while_the_watcher_has_no_room_for_them():
    work = WorkQueue()
    room = {"left": 2}

    def admit(waiting: int) -> int:
        granted = min(waiting, room["left"])
        room["left"] -= granted
        return granted

    work.admit = admit
    for item in files(5):
        work.put(item)
    assert [item.relpath for item in work.take(1)[1]] == ["file-0.txt", "file-1.txt"]
    assert work.qsize() == 3  # queued, never dropped

    waiting: list = []
    thread = threading.Thread(target=lambda: waiting.append(work.take(1)), daemon=True)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive(), "a file was taken with no room for it"
    room["left"] = 1
    work.reconsider()  # a file in flight was done with
    thread.join(5)
    assert [item.relpath for item in waiting[0][1]] == ["file-2.txt"]


def test_an_answer_wakes_a_worker_that_waits_for_room():
    work = WorkQueue()
    work.admit = lambda waiting: 0  # every file the watcher may have is in flight
    work.put(files(1)[0])
    threading.Timer(0.2, work.answer, args=("verdict",)).start()
    assert taken_in(work) == (["verdict"], [], 0, False)
    assert work.qsize() == 1


def test_an_answer_never_waits_for_a_full_queue():
    work = WorkQueue(maxsize=2)
    for item in files(2):
        work.put(item)
    with pytest.raises(queue.Full):
        work.put(files(1, start=2)[0], timeout=0.1)
    work.answer("verdict")  # the listener of replies never blocks
    assert work.take(1)[0] == ["verdict"]


def test_a_worker_takes_a_fair_share_and_at_most_a_batch():
    """A worker leaves the others their share of what waits, and never takes more than a batch."""
    work = WorkQueue()
    for item in files(20):
        work.put(item)
    assert len(work.take(4)[1]) == 1 + 19 // 4
    for item in files(BATCH_MAX * 3, start=20):
        work.put(item)
    assert len(work.take(1)[1]) == BATCH_MAX


def test_the_stop_marker_waits_for_the_answers_before_it():
    work = WorkQueue()
    work.put(None)
    work.answer("verdict")
    assert work.take(1) == (["verdict"], [], 0, False)
    assert work.take(1) == ([], [], 1, True)


def test_unfinished_tasks_count_files_until_they_are_done_with():
    work = WorkQueue()
    for item in files(3):
        work.put(item)
    assert work.unfinished_tasks == 3
    work.take(1)
    work.task_done(2)  # one is still in flight: a stop waits for it
    assert work.unfinished_tasks == 1
    with pytest.raises(ValueError):
        work.task_done(2)


def test_files_put_back_are_first_in_line_and_still_unfinished():
    """A worker that cannot read a file yet (no room for its bytes) puts it back where it was: ahead of
    the files queued after it, counted as unfinished until a worker is done with it."""
    work = WorkQueue()
    for item in files(4):
        work.put(item)
    taken = work.take(1)[1]
    work.put(files(1, start=4)[0])
    work.put_back(taken[2:])
    assert work.unfinished_tasks == 5
    assert [item.relpath for item in work.take(1)[1]] == ["file-2.txt", "file-3.txt", "file-4.txt"]
