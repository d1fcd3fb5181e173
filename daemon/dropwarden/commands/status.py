"""`dropwarden status`: ask the running daemon, over its loopback metrics endpoint (`GET /status`), for
its watches, queue, health, alert sinks and last decisions."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from dropwarden.commands._app import EXIT_USAGE, app_context, config_option
from dropwarden.metrics import parse_listen

EXIT_OK, EXIT_DEGRADED, EXIT_NOT_RUNNING = 0, 1, 3


@click.command()
@config_option
@click.option("--address", help="HOST:PORT of the daemon's endpoint (default: [metrics] listen)")
@click.option("--json", "as_json", is_flag=True, help="print the daemon's answer as JSON")
@click.pass_context
def status(ctx: click.Context, config_path: Path | None, address: str | None, as_json: bool) -> None:
    """Show what the running daemon is doing.

    Exit status: 0 running and healthy, 1 running but degraded, 3 not reachable (not running, or
    metrics off), 2 usage or configuration error.
    """
    listen = address or app_context(ctx, config_path).config().settings.metrics.listen
    if not listen:
        click.echo("dropwarden: [metrics] listen is off: no endpoint to ask", err=True)
        sys.exit(EXIT_NOT_RUNNING)
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        click.echo(f"dropwarden: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError) as exc:
        click.echo(f"dropwarden: no daemon answers at {url}: {exc}", err=True)
        sys.exit(EXIT_NOT_RUNNING)
    if as_json:
        click.echo(json.dumps(answer, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        print_status(answer)
    sys.exit(EXIT_DEGRADED if answer.get("degraded") else EXIT_OK)


def print_status(answer: dict[str, Any]) -> None:
    echo = click.echo
    echo(f"dropwarden {answer['version']} (pid {answer['pid']}): {answer['status']}")
    for reason, detail in sorted(answer["degraded"].items()):
        echo(f"  degraded  {reason}: {detail}")
    for name, detail in sorted(answer["warnings"].items()):
        echo(f"  warning   {name}: {detail}")
    echo("watches:")
    for name, watch in sorted(answer["watches"].items()):
        echo(f"  {name:<16} {watch['path']}" + ("  (LOST)" if watch["lost"] else ""))
    judged = ", ".join(f"{k} {v}" for k, v in sorted(answer["judged"].items())) or "none yet"
    echo(f"queue {answer['queue']}, settling {answer['settling']}, outbox {answer['outbox']}")
    echo(f"judged: {judged}")
    if answer["sinks"]:
        echo("alert sinks:")
        for sink, stats in sorted(answer["sinks"].items()):
            echo(
                f"  {sink:<24} delivered {stats['delivered']:g}, failed {stats['failed']:g},"
                f" queued {stats['queued']:g} (oldest {stats['oldest_age']:.0f}s),"
                f" overflow {stats['overflow']:g}"
            )
    cluster = answer.get("cluster")
    if cluster:  # [cluster] role "watch"
        c = cluster.get
        echo(
            f"cluster ({c('node')}, redis {c('redis')}): queued {c('queued', 0)},"
            f" in flight {c('in_flight', 0)}, mine outstanding {c('outstanding', 0)},"
            f" redelivered {c('redelivered', 0)}, dead-lettered {c('dead_lettered', 0)},"
            f" judge rate {c('judge_rate', 0):g}/s"
        )
    if answer["recent"]:
        echo("last decisions:")
        for decision in answer["recent"][::-1]:
            when = time.strftime("%H:%M:%S", time.localtime(decision["time"]))
            detail = ", ".join(decision["types"]) or decision["reason"] or ""
            echo(f"  {when} {decision['outcome']:<9} {decision['watch']}: {decision['path']}  {detail}")
