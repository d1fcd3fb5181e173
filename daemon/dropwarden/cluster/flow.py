"""Role "watch": a worker begins files and sends their content to the judges, then goes on; whichever
worker is free finishes a file once its answer is in. No thread waits for a verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dropwarden.act.decided import Decided
from dropwarden.judge.judge import Deferred
from dropwarden.watch.activewatch import ActiveWatch
from dropwarden.watch.settle import WorkItem

if TYPE_CHECKING:
    from dropwarden.cluster.remote import RemoteJudging
    from dropwarden.pipeline import Pipeline, PipelineContext
    from dropwarden.watch.workqueue import WorkQueue


@dataclass
class Flight:
    """A file whose content is judged elsewhere: what its decision needs once the answer is in. It owns
    the folder's fd until then."""

    ctx: PipelineContext
    watch: ActiveWatch
    dir_fd: int
    item: WorkItem
    display: str
    started: float
    supersedes: dict[str, Any] | None  # the earlier decision it replaces (`act.decided`)
    deferred: Deferred
    held: int = 0  # bytes of the snapshot budget it holds


def process(
    pipeline: Pipeline, remote: RemoteJudging, work: WorkQueue, answers: list[Flight], items: list[WorkItem]
) -> int:
    """Finish the files whose answers came and begin `items` (admitted by the work queue: each holds its
    room until done with; one whose bytes find no room in the snapshot budget goes back to the queue
    with those after it), then act on every decision made here together (one audit fsync). Returns how
    many of the files taken now and before are done with (the queue's `task_done`)."""
    ctx = pipeline.context
    taken = pipeline.take_in(items)
    remote.unadmit(len(items) - len(taken))  # another worker has them in hand
    decided: list[Decided] = []
    finished: list[Flight] = []
    begun: list[Flight] = []
    put_back: list[WorkItem] = []
    try:
        try:
            for flight in answers:
                content = remote.outcome(flight.deferred.request)
                if content is None:  # its job went out again
                    remote.expect(flight.deferred.request, flight)
                    continue
                finished.append(flight)
                decided += pipeline.finish(flight, content)
            for position, item in enumerate(taken):
                if not remote.reserve():  # no room for its bytes until answers free some
                    put_back = taken[position:]
                    pipeline.let_go(put_back)
                    work.put_back(put_back)
                    remote.unadmit(len(put_back))
                    break
                flights: list[Flight] = []
                decided += pipeline.judged(item, ctx, flights)
                if not flights:
                    remote.done(remote.largest)
                    continue
                flight = flights[0]
                flight.held = remote.read(len(flight.deferred.snapshot.data))
                begun.append(flight)
                remote.expect(flight.deferred.request, flight)  # from here on another worker may finish it
        finally:  # one round trip: the new jobs, and the blobs of those answered
            remote.send([f.deferred.request for f in begun], [f.deferred.request for f in finished])
        if decided:
            pipeline.act_on(ctx, decided)
    finally:
        for flight in finished:
            remote.done(flight.held)
        kept = [flight.item for flight in begun] + put_back
        pipeline.let_go([item for item in taken if item not in kept] + [flight.item for flight in finished])
    return len(items) - len(begun) - len(put_back) + len(finished)
