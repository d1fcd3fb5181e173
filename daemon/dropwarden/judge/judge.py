"""Judge one file: intake → views → detectors → verdict. Shared by `scan` and the daemon."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dropwarden.config import Settings
from dropwarden.findings import Finding, Findings
from dropwarden.judge.detect import DetectorRun, DetectorRunner
from dropwarden.judge.extract import extract_views
from dropwarden.judge.intake import Refusal, Snapshot, take_snapshot
from dropwarden.judge.names import DECODED_VIEW, NAME_VIEW, NAME_VIEWS, WORDS_VIEW, JudgedName, name_views
from dropwarden.judge.sniff import FileType
from dropwarden.redact import Fingerprinter
from dropwarden.registry import DetectContext, Registry
from dropwarden.verdict import Problem, Verdict, VerdictBuilder

# Names of members inside a file (findings' `within`) judged per file for masking, and shown at most.
MAX_WITHIN_PARTS = 1000
MAX_WITHIN_CHARS = 200


@dataclass
class Judgement:
    """The outcome for one file, with everything the audit record and reports need.

    `display_path` shows the file's name redacted where a rule matched it (`name`: the judged name)."""

    display_path: str
    verdict: Verdict
    snapshot: Snapshot | None = None
    refusal: Refusal | None = None
    file_type: FileType | None = None
    runs: list[DetectorRun] = field(default_factory=list)
    name: JudgedName | None = None

    @property
    def sha256(self) -> str | None:
        if self.snapshot is not None:
            return self.snapshot.sha256
        return self.refusal.sha256 if self.refusal else None


@dataclass
class Content:
    """What judging a snapshot's bytes found (`Judge.judge_content`): the sniffed type, the extractors'
    problems, the detector runs, and the problem when part of the file was judged by nothing."""

    file_type: FileType
    problems: list[Problem]
    runs: list[DetectorRun]
    unjudged: Problem | None = None


# (snapshot, judged name, the name's runs) -> the file's Judgement: see `Judge.judge_name`
ContentJudging = Callable[[Snapshot, JudgedName, list[DetectorRun]], "Judgement | Deferred"]


@dataclass(frozen=True)
class Deferred:
    """What `Judge.judge_name` returns when its `content` judging does not wait (`[cluster]` role
    "watch"): the snapshot's content is being judged elsewhere, and `Judge.conclude` makes the file's
    Judgement from the answer (`request` is the judging side's handle on it)."""

    snapshot: Snapshot
    name: JudgedName
    name_runs: list[DetectorRun]
    request: Any


class Judge:
    def __init__(self, registry: Registry, settings: Settings, fingerprinter: Fingerprinter) -> None:
        self.registry = registry
        self.settings = settings
        self.fingerprinter = fingerprinter
        self.runner = DetectorRunner(settings.limits.detector_timeout, limits=settings.limits)

    def close(self) -> None:
        self.runner.close()

    def judge_name(
        self,
        dir_fd: int,
        name: str | bytes,
        display_path: str,
        *,
        require_single_link: bool = False,
        relative: str | bytes | None = None,
        content: ContentJudging | None = None,
    ) -> Judgement | Deferred:
        """Judge the file `name` in `dir_fd`: its contents, and its name as view "name".

        `relative` is the path that names the file below the watched folder (or the scanned
        directory), subdirectories included; by default `name` alone. `display_path` must end with it.
        `content` judges the snapshot's bytes instead of `judge_snapshot` (`[cluster]` role "watch": a
        judge host does); it is called only for a file that was read, and returns its Judgement, or a
        Deferred one when the content's verdict is still to come."""
        relative = name if relative is None else relative
        judged_name, name_runs = self.judge_relative_name(relative, display_path)
        taken = take_snapshot(
            dir_fd,
            name,
            display_path=display_path,
            max_size=int(self.settings.limits.max_file_size),
            require_single_link=require_single_link,
        )
        if isinstance(taken, Refusal):
            builder = VerdictBuilder(self.runner.finding_limits)
            builder.add_problem(Problem(taken.reason, taken.detail, "intake"))
            _add_runs(builder, name_runs)
            return Judgement(
                judged_name.show_path(display_path),
                builder.build(),
                refusal=taken,
                runs=name_runs,
                name=judged_name,
            )
        if content is not None:
            return content(taken, judged_name, name_runs)
        return self.judge_snapshot(taken, judged_name, name_runs)

    def judge_relative_name(
        self, relative: str | bytes, display_path: str = ""
    ) -> tuple[JudgedName, list[DetectorRun]]:
        """Run the text detectors over a relative path (view "name"): which spans of it to redact, and
        the runs (their findings are the file's). A name a detector failed on is hidden entirely."""
        ctx = DetectContext(fingerprint=self.fingerprinter, display_path=display_path)
        runs = self.runner.run(self.registry.detectors.values(), name_views(relative), ctx)
        runs = _without_repeats(runs)
        spans: list[tuple[int, int]] = []
        hidden = False
        for run in runs:
            # A problem, or findings counted but not built (past the limits): where they are is unknown.
            hidden = hidden or run.problem is not None or bool(run.findings.omitted)
            for finding in run.findings:
                location = finding.location
                if location.view not in NAME_VIEWS or location.offset is None or not location.length:
                    hidden = True  # matched somewhere in it, but not said where
                else:
                    spans.append((location.offset, location.offset + location.length))
        return JudgedName(os.fsencode(relative), tuple(spans), hidden), runs

    def judge_snapshot(
        self,
        snapshot: Snapshot,
        name: JudgedName | None = None,
        name_runs: list[DetectorRun] | None = None,
    ) -> Judgement:
        """Judge the snapshot's bytes; `name` and `name_runs` (`judge_relative_name`) join the verdict."""
        return self.conclude(snapshot, self.judge_content(snapshot), name, name_runs)

    def judge_content(self, snapshot: Snapshot) -> Content:
        """What the extractors and detectors make of the snapshot's bytes (its name plays no part)."""
        extraction = extract_views(snapshot, self.registry.extractors.values(), self.runner)
        ctx = DetectContext(fingerprint=self.fingerprinter, display_path=snapshot.display_path)
        runs = self.masked_within(self.runner.run(self.registry.detectors.values(), extraction.views, ctx))
        # never "clean" by default: part judged by nothing
        return Content(extraction.file_type, list(extraction.problems), runs, extraction.unjudged(runs))

    def conclude(
        self,
        snapshot: Snapshot,
        content: Content,
        name: JudgedName | None = None,
        name_runs: list[DetectorRun] | None = None,
    ) -> Judgement:
        """The file's Judgement: `content` (judged here or on a judge host) with its name's runs."""
        builder = VerdictBuilder(self.runner.finding_limits)
        for problem in content.problems:
            builder.add_problem(problem)
        runs = [*(name_runs or ()), *content.runs]
        _add_runs(builder, runs)
        if content.unjudged is not None:
            builder.add_problem(content.unjudged)
        return Judgement(
            name.show_path(snapshot.display_path) if name is not None else snapshot.display_path,
            builder.build(),
            snapshot=snapshot,
            file_type=content.file_type,
            runs=runs,
            name=name,
        )

    def masked_within(self, runs: list[DetectorRun]) -> list[DetectorRun]:
        """Findings whose `within` names members of a container ("inner.zip", "山田 090-….txt"), with
        each name masked as a file name is: the text detectors judge it (`judge_relative_name`) and
        the spans they match are masked; a name they fail on is masked entirely. At most
        MAX_WITHIN_PARTS distinct names are judged; the others are masked entirely."""
        parts = {part for run in runs for finding in run.findings for part in (finding.location.within or ())}
        if not parts:
            return runs
        shown: dict[str, str] = {}
        for part in sorted(parts)[:MAX_WITHIN_PARTS]:
            judged, _ = self.judge_relative_name(part)
            shown[part] = judged.show()[-MAX_WITHIN_CHARS:]

        def mask(finding: Finding) -> Finding:
            within = finding.location.within
            if not within:
                return finding
            location = dataclasses.replace(
                finding.location, within=tuple(shown.get(part, "[masked]") for part in within)
            )
            return dataclasses.replace(finding, location=location)

        return [
            dataclasses.replace(run, findings=Findings((mask(f) for f in run.findings), run.findings.omitted))
            if any(f.location.within for f in run.findings)
            else run
            for run in runs
        ]


def _without_repeats(runs: list[DetectorRun]) -> list[DetectorRun]:
    """Drop findings of the words view of a name that a finding of the same type in the name as it
    is overlaps, and those of its legacy-encoding reading of a type found in either: one value, one
    finding (its spans are masked either way)."""
    if not any(len(run.findings) for run in runs):
        return runs  # the common case: nothing to drop
    plain = [
        (f.type, f.location.offset, f.location.offset + (f.location.length or 0))
        for run in runs
        if run.view == NAME_VIEW
        for f in run.findings
        if f.location.offset is not None
    ]

    def repeated(finding: Finding) -> bool:
        start = finding.location.offset
        if start is None:
            return False
        end = start + (finding.location.length or 0)
        return any(kind == finding.type and s < end and start < e for kind, s, e in plain)

    runs = [
        dataclasses.replace(
            run, findings=Findings((f for f in run.findings if not repeated(f)), run.findings.omitted)
        )
        if run.view == WORDS_VIEW
        else run
        for run in runs
    ]
    # A legacy-encoding reading of the name adds only types the display text did not show: a value
    # found there too is already masked where it is, and need not hide the whole name.
    shown = {f.type for run in runs if run.view in NAME_VIEWS for f in run.findings}
    return [
        dataclasses.replace(
            run, findings=Findings((f for f in run.findings if f.type not in shown), run.findings.omitted)
        )
        if run.view == DECODED_VIEW
        else run
        for run in runs
    ]


def _add_runs(builder: VerdictBuilder, runs: list[DetectorRun]) -> None:
    for run in runs:
        builder.add_findings(run.findings)
        if run.problem:
            builder.add_problem(run.problem)
