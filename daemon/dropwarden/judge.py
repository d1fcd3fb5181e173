"""Judge one file: intake → views → detectors → verdict. Shared by `scan` and the daemon."""

from __future__ import annotations

from dataclasses import dataclass, field

from dropwarden.config import Settings
from dropwarden.detect import DetectorRun, DetectorRunner
from dropwarden.extract import extract_views
from dropwarden.intake import Refusal, Snapshot, take_snapshot
from dropwarden.redact import Fingerprinter
from dropwarden.registry import DetectContext, Registry
from dropwarden.sniff import FileType
from dropwarden.verdict import Verdict, VerdictBuilder, unscanned


@dataclass
class Judgement:
    """The outcome for one file, with everything the audit record and reports need."""

    display_path: str
    verdict: Verdict
    snapshot: Snapshot | None = None
    refusal: Refusal | None = None
    file_type: FileType | None = None
    runs: list[DetectorRun] = field(default_factory=list)

    @property
    def sha256(self) -> str | None:
        if self.snapshot is not None:
            return self.snapshot.sha256
        return self.refusal.sha256 if self.refusal else None


class Judge:
    def __init__(self, registry: Registry, settings: Settings, fingerprinter: Fingerprinter) -> None:
        self.registry = registry
        self.settings = settings
        self.fingerprinter = fingerprinter
        self.runner = DetectorRunner(settings.limits.detector_timeout, limits=settings.limits)

    def close(self) -> None:
        self.runner.close()

    def judge_name(
        self, dir_fd: int, name: str | bytes, display_path: str, *, require_single_link: bool = False
    ) -> Judgement:
        taken = take_snapshot(
            dir_fd,
            name,
            display_path=display_path,
            max_size=int(self.settings.limits.max_file_size),
            require_single_link=require_single_link,
        )
        if isinstance(taken, Refusal):
            return Judgement(display_path, unscanned(taken.reason, taken.detail, "intake"), refusal=taken)
        return self.judge_snapshot(taken)

    def judge_snapshot(self, snapshot: Snapshot) -> Judgement:
        extraction = extract_views(snapshot, self.registry.extractors.values(), self.runner)
        builder = VerdictBuilder(self.runner.finding_limits)
        for problem in extraction.problems:
            builder.add_problem(problem)
        ctx = DetectContext(fingerprint=self.fingerprinter, display_path=snapshot.display_path)
        runs = self.runner.run(self.registry.detectors.values(), extraction.views, ctx)
        for run in runs:
            builder.add_findings(run.findings)
            if run.problem:
                builder.add_problem(run.problem)
        unjudged = extraction.unjudged(runs)  # never "clean" by default: part judged by nothing
        if unjudged is not None:
            builder.add_problem(unjudged)
        return Judgement(
            snapshot.display_path,
            builder.build(),
            snapshot=snapshot,
            file_type=extraction.file_type,
            runs=runs,
        )
