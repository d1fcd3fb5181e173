"""`dropwarden scan PATH…`: one-shot judging of files and trees, reported as a table, JSON, JSON lines or
SARIF, with the exit status a CI pipeline needs (`--fail-on`, `--min-severity`)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from dropwarden.commands._app import EXIT_USAGE, app_context, config_option
from dropwarden.commands.sarif import sarif_log
from dropwarden.findings import Severity
from dropwarden.judge.judge import Judgement
from dropwarden.plugins import PluginLoadError
from dropwarden.runtime import build_runtime
from dropwarden.verdict import Problem, Reason, VerdictBuilder, VerdictKind
from dropwarden.watch.walk import Entry, WalkError, display_path, walk

EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNSCANNED = 0, 1, 3
_PROGRESS_AFTER = 200


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@config_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "jsonl", "sarif"]),
    default="text",
    show_default=True,
    help="sarif: one SARIF 2.1.0 log (code scanning, CI)",
)
@click.option(
    "--min-severity",
    type=click.Choice([str(s) for s in Severity]),
    default="info",
    show_default=True,
    help="report (and fail on) findings at or above this severity only",
)
@click.option(
    "--fail-on",
    type=click.Choice(["unscanned", "finding", "never"]),
    default="unscanned",
    show_default=True,
    help="unscanned: findings exit 1, else unscanned files 3; finding: only findings fail; never: 0",
)
@click.pass_context
def scan(
    ctx: click.Context,
    paths: tuple[str, ...],
    config_path: Path | None,
    fmt: str,
    min_severity: str,
    fail_on: str,
) -> None:
    """Judge files and directories (recursively) and report; nothing is moved.

    Exit status: 0 nothing found, 1 findings, 2 usage or configuration error, 3 some file unscanned
    and nothing found. `--fail-on finding`: unscanned files do not fail (0); `--fail-on never`: 0
    whatever was found (2 still for usage errors). Findings below `--min-severity` are not reported,
    and a file with no other finding is clean. Symbolic links are not followed; FIFOs, sockets and
    devices are reported as unscanned without being opened.
    """
    from dropwarden.logs import configure

    configure("warning")  # log lines go to stderr: stdout is the report (`--format json` must parse)
    settings = app_context(ctx, config_path).config().settings
    try:
        runtime = build_runtime(settings)
    except PluginLoadError as exc:
        click.echo(f"dropwarden: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    for error in runtime.plugins.errors:
        click.echo(f"warning: plugin {error}", err=True)
    started = time.monotonic()
    judgements = _judge_all(runtime, paths, fmt)
    try:
        results: list[dict[str, Any]] = []
        for judgement in judgements:
            record = file_record(judgement, Severity.parse(min_severity))
            if fmt == "jsonl":
                click.echo(json.dumps(record, ensure_ascii=False))
            results.append(record)
    finally:
        runtime.close()
    summary = summarise(results, time.monotonic() - started)
    if fmt == "json":
        click.echo(json.dumps({"files": results, "summary": summary}, ensure_ascii=False, indent=2))
    elif fmt == "sarif":
        click.echo(json.dumps(sarif_log(results), ensure_ascii=False, indent=2))
    elif fmt == "text":
        print_table(results, summary)
    sys.exit(exit_code(summary, fail_on))


def _judge_all(runtime, paths: tuple[str, ...], fmt: str) -> Iterator[Judgement]:
    show_progress = fmt == "text" and sys.stderr.isatty()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("judging"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not show_progress,
    )
    task = progress.add_task("scan", total=None, visible=False)
    with progress:
        count = 0
        for path in paths:
            root = display_path(path)
            for item in walk(path):
                if isinstance(item, WalkError):
                    yield _walk_error(runtime, item, _relative(root, item.display_path))
                else:
                    yield _judge_entry(runtime, item, _relative(root, item.display_path, item.name))
                count += 1
                if count == _PROGRESS_AFTER:
                    progress.update(task, visible=True)
                progress.update(task, completed=count)


def _judge_entry(runtime, entry: Entry, relative: str) -> Judgement:
    return runtime.judge.judge_name(entry.dir_fd, entry.name, entry.display_path, relative=relative)


def _walk_error(runtime, error: WalkError, relative: str) -> Judgement:
    """An unreadable directory or file: unscanned, its name judged (and redacted) like any other."""
    name, runs = runtime.judge.judge_relative_name(relative, error.display_path)
    builder = VerdictBuilder()
    builder.add_problem(Problem(Reason.UNREADABLE, error.detail, "walk"))
    for run in runs:
        builder.add_findings(run.findings)
        if run.problem:
            builder.add_problem(run.problem)
    return Judgement(name.show_path(error.display_path), builder.build(), runs=runs, name=name)


def _relative(root: str, shown: str, name: str | None = None) -> str:
    """The part of a walked path below the scanned PATH (the name alone when PATH is the file): what
    is judged as the file's name."""
    if shown != root and shown.startswith(root):
        rest = shown[len(root) :].lstrip("/")
        if rest:
            return rest
    return name if name is not None else shown.rstrip("/").rpartition("/")[2] or shown


def file_record(judgement: Judgement, min_severity: Severity = Severity.INFO) -> dict[str, Any]:
    """The report of one file; findings below `min_severity` left out (a file left with none is clean,
    or unscanned when part of it could not be judged)."""
    verdict = judgement.verdict
    findings = [f for f in verdict.findings if f.severity >= min_severity]
    counts = [c for c in verdict.counts if c.severity >= min_severity]
    kind = verdict.kind
    if kind is VerdictKind.FINDING and not counts:
        kind = VerdictKind.UNSCANNED if verdict.problems else VerdictKind.CLEAN
    return {
        "path": judgement.display_path,
        "verdict": kind.value,
        "reason": verdict.reason,
        "sha256": judgement.sha256,
        "type": judgement.file_type.name if judgement.file_type else None,
        "findings": [
            {
                key: value
                for key, value in finding.to_dict().items()
                if key in ("type", "rule", "severity", "confidence", "location", "excerpt", "fingerprint")
            }
            for finding in findings
        ],
        # per type: how many were found ("exact": false, at least that many) and how many are listed
        "counts": [c.to_dict() for c in counts],
    }


def summarise(results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    verdicts = Counter(r["verdict"] for r in results)
    types: Counter[str] = Counter()
    for record in results:
        for count in record["counts"]:
            types[count["type"]] += count["count"]
    return {
        "files": len(results),
        **{kind.value: verdicts.get(kind.value, 0) for kind in VerdictKind},
        "findings": sum(types.values()),
        "findings_by_type": dict(sorted(types.items())),
        "seconds": round(seconds, 3),
    }


def exit_code(summary: dict[str, Any], fail_on: str = "unscanned") -> int:
    if fail_on == "never":
        return EXIT_CLEAN
    if summary[VerdictKind.FINDING.value]:
        return EXIT_FINDINGS
    if summary[VerdictKind.UNSCANNED.value] and fail_on == "unscanned":
        return EXIT_UNSCANNED
    return EXIT_CLEAN


_STYLES = {"clean": "green", "finding": "bold red", "unscanned": "yellow"}


def print_table(results: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    console = Console(highlight=False, soft_wrap=False)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("VERDICT")
    table.add_column("PATH", overflow="fold")
    table.add_column("DETAIL", overflow="fold")
    for record in results:
        if record["findings"]:
            counts = {c["type"]: c["count"] for c in record["counts"]}
            detail = ", ".join(f"{t}×{n}" if n > 1 else t for t, n in sorted(counts.items()))
        else:
            detail = record["reason"] or ""
        path = (
            record["path"].encode("unicode_escape").decode("ascii")
            if _unprintable(record["path"])
            else (record["path"])
        )
        verdict = record["verdict"]
        # A name or reason is text, not markup: "[/x].txt" would otherwise stop the report.
        table.add_row(f"[{_STYLES[verdict]}]{verdict}[/]", escape(path), escape(detail))
    console.print(table)
    by_type = ", ".join(f"{t} {n}" for t, n in summary["findings_by_type"].items())
    console.print(
        f"{summary['files']} files: {summary['clean']} clean, {summary['finding']} with findings, "
        f"{summary['unscanned']} unscanned"
        + (f" — {by_type}" if by_type else "")
        + f" ({summary['seconds']}s)"
    )


def _unprintable(text: str) -> bool:
    return not text.isprintable()
