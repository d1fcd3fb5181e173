"""Built-in actions plugin: quarantine, release and the alert sinks, registered as any plugin's are."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dropwarden.checks import path_check
from dropwarden.config import SettingError, Settings, SinkSettings
from dropwarden.hookspecs import Check, hookimpl
from dropwarden_actions.execsink import ExecSink
from dropwarden_actions.journald import JournaldSink
from dropwarden_actions.moves import QuarantineAction, ReleaseAction
from dropwarden_actions.settings import (
    ExecSinkSettings,
    JournaldSinkSettings,
    JsonlSinkSettings,
    WebhookSinkSettings,
)
from dropwarden_actions.sinkchecks import journald_check, syslog_checks, webhook_checks
from dropwarden_actions.sinks import JsonlSink
from dropwarden_actions.syslogsettings import SyslogSinkSettings
from dropwarden_actions.syslogsink import SyslogSink
from dropwarden_actions.webhook import WebhookSink

__version__ = "0.1.0"


@hookimpl
def dropwarden_alert_sink_types() -> Mapping[str, type[SinkSettings]]:
    """The alert sink types this plugin provides: `jsonl`, `exec` and `webhook`."""
    return {
        "jsonl": JsonlSinkSettings,
        "exec": ExecSinkSettings,
        "webhook": WebhookSinkSettings,
        "syslog": SyslogSinkSettings,
        "journald": JournaldSinkSettings,
    }


@hookimpl
def dropwarden_register_actions(register: Callable[[Any], None], settings: Settings) -> None:
    """Register the move actions "quarantine" and "release", and one notify action per configured
    `[[alerts.sink]]` of a type this plugin provides (its id is the sink's id)."""
    register(QuarantineAction())
    register(ReleaseAction())
    for index, sink in enumerate(settings.alerts.sink):
        if isinstance(sink, JsonlSinkSettings):
            register(JsonlSink(sink.id, sink.path))
        elif isinstance(sink, ExecSinkSettings):
            register(ExecSink(sink))
        elif isinstance(sink, SyslogSinkSettings):
            register(SyslogSink(sink))
        elif isinstance(sink, JournaldSinkSettings):
            register(JournaldSink(sink))
        elif isinstance(sink, WebhookSinkSettings):
            try:
                register(WebhookSink(sink))
            except ValueError as exc:  # a token or key file that cannot be read (never its content)
                key = str(exc).split(" ", 1)[0]  # "token_file ..." or "secret_file ..."
                raise SettingError(("alerts", "sink", index, key), str(exc)) from None


@hookimpl
def dropwarden_doctor_checks(settings: Settings) -> Iterator[Check]:
    """Each configured sink of this plugin's types could deliver: a jsonl file the daemon may append to,
    an exec program that exists and may be run, a syslog receiver's TLS files and address (a receiver
    that does not answer is a warning: the outbox holds the alerts), a webhook's files (never their
    content) and scheme, journald's socket."""
    for sink in settings.alerts.sink:
        name = f"alert sink {sink.id}"
        if isinstance(sink, JsonlSinkSettings):
            yield path_check(name, sink.path, directory=False)
        elif isinstance(sink, ExecSinkSettings):
            yield _program_check(name, sink.argv[0])
        elif isinstance(sink, SyslogSinkSettings):
            yield from syslog_checks(name, sink)
        elif isinstance(sink, WebhookSinkSettings):
            yield from webhook_checks(name, sink)
        elif isinstance(sink, JournaldSinkSettings):
            yield journald_check(name, sink)


def _program_check(name: str, program: str) -> Check:
    if not os.path.isfile(program):
        return Check(name, "fail", f"{program} is not a file")
    if not os.access(program, os.X_OK):
        return Check(name, "fail", f"{program} is not executable by this process (uid {os.geteuid()})")
    return Check(name, "ok", f"{program} is executable")
