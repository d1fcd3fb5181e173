"""Actions are plugins' objects: a third-party notify action named in a watch runs in the real daemon; a
name no plugin registers is refused; the built-in `exec` alert sink runs a program, ClamAV style."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from .conftest import install_plugins, run_cli
from .daemon_harness import DaemonProcess, audit_records

CARD = "Customer card 4111 1111 1111 1111, thanks.\n"

ACME_TICKET = '''
"""A third-party notify action: opens an "acme ticket" (a line in the file ACME_TICKETS names)."""
import json
import os

from dropwarden.hookspecs import hookimpl


class AcmeTicket:
    id = "acme-ticket"
    kind = "notify"

    def describe(self):
        return "open an acme ticket"

    def send(self, payload):
        with open(os.environ["ACME_TICKETS"], "a") as out:
            out.write(json.dumps(payload) + "\\n")


@hookimpl
def dropwarden_register_actions(register):
    register(AcmeTicket())
'''


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("acme")
    return install_plugins(root, root / "site", [("acme_ticket", ACME_TICKET, 'acme-ticket = "acme_ticket"')])


def _pythonpath(site: Path) -> str:
    return os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)


class Layout:
    """A drop folder, its quarantine, state and audit log in tmp_path, and a config naming `on_finding`."""

    def __init__(self, root: Path, on_finding: str, sinks: str = "") -> None:
        self.inbox = root / "inbox"
        self.quarantine = root / "quarantine"
        self.audit = root / "audit.jsonl"
        self.inbox.mkdir(parents=True)
        self.config = root / "dropwarden.toml"
        self.config.write_text(
            f'[state]\ndir = "{root / "state"}"\n[audit]\npath = "{self.audit}"\n'
            "[daemon]\nsettle_stat = 0.3\n"
            f'[[watch]]\nname = "inbox"\npath = "{self.inbox}"\nquarantine_dir = "{self.quarantine}"\n'
            f"on_finding = {on_finding}\n{textwrap.dedent(sinks)}"
        )


def test_a_watch_names_a_third_party_notify_action_and_it_receives_the_alert(tmp_path, acme_site):
    """`on_finding = ["quarantine", "acme-ticket"]`: the file with a card number is quarantined, and the
    pip-installed plugin's action gets the alert (masked: no card number in it)."""
    layout = Layout(tmp_path, '["quarantine", "acme-ticket"]')
    tickets = tmp_path / "tickets.jsonl"
    env = {"PYTHONPATH": _pythonpath(acme_site), "ACME_TICKETS": str(tickets)}
    daemon = DaemonProcess(layout.config, layout.audit, env).start()
    try:
        (layout.inbox / "customers.txt").write_text(CARD)
        daemon.wait_for(lambda: tickets.exists() and tickets.read_text(), what="an acme ticket")
        daemon.wait_for(lambda: not (layout.inbox / "customers.txt").exists(), what="quarantine")
    finally:
        daemon.stop()
    ticket = json.loads(tickets.read_text().splitlines()[0])
    assert ticket["event"]["action"] == "finding"
    assert ticket["dropwarden"]["actions"] == ["quarantine", "acme-ticket"]
    assert {f["type"] for f in ticket["dropwarden"]["findings"]} == {"CREDIT_CARD"}
    assert "4111" not in tickets.read_text()
    assert len(list(layout.quarantine.glob("*.json"))) == 1
    decision = audit_records(layout.audit, "decision")[0]["body"]
    assert [step["op"] for step in decision["actions"]] == ["quarantine", "alert"]
    assert decision["actions"][1]["sinks"] == ["acme-ticket"]


def test_an_action_no_loaded_plugin_registers_is_refused_by_config_check_and_at_startup(tmp_path):
    """A typo in `on_finding` would leave files unacted on: `config check` and `run` exit 2 naming it."""
    layout = Layout(tmp_path, '["quarantine", "acme-tiket"]')
    checked = run_cli("config", "check", "--config", str(layout.config))
    assert checked.returncode == 2, checked.stderr
    assert "no loaded plugin registers action 'acme-tiket' (watch inbox on_finding)" in checked.stderr
    started = run_cli("run", "--config", str(layout.config), timeout=60)
    assert started.returncode == 2, started.stderr
    assert "no loaded plugin registers action 'acme-tiket'" in started.stderr


def test_release_cannot_answer_a_finding(tmp_path):
    """Only clean files are released (`release_to`); naming "release" in on_finding is refused."""
    layout = Layout(tmp_path, '["release"]')
    checked = run_cli("config", "check", "--config", str(layout.config))
    assert checked.returncode == 2
    assert "'release' moves files and cannot answer a finding" in checked.stderr


def test_an_action_name_that_is_not_a_name_is_a_configuration_error(tmp_path):
    layout = Layout(tmp_path, '["quarantine", "rm -rf /"]')
    checked = run_cli("config", "check", "--config", str(layout.config))
    assert checked.returncode == 2
    assert "on_finding" in checked.stderr


# ------------------------------------------------------------------------------- the exec alert sink


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def _exec_sink(script: Path, timeout: float = 10) -> str:
    return f'[[alerts.sink]]\ntype = "exec"\nname = "hook"\nargv = ["{script}", "--from-dropwarden"]\n' + (
        f"timeout = {timeout}\n[alerts]\nretry_initial = 0.2\nretry_max = 0.5\n"
    )


def test_the_exec_sink_runs_the_program_with_the_masked_alert_on_stdin_and_a_few_variables(tmp_path):
    """No shell, the alert JSON on stdin (no card number in it), DROPWARDEN_* variables and otherwise
    an almost empty environment; the run's exit status is in the audit log."""
    seen = tmp_path / "seen"
    script = _script(
        tmp_path / "hook.sh", f'cat > "{seen}.json"\nenv > "{seen}.env"\necho "$@" > "{seen}.args"\n'
    )
    layout = Layout(tmp_path / "run", '["quarantine", "alert"]', _exec_sink(script))
    daemon = DaemonProcess(layout.config, layout.audit, {"SECRET_OF_THE_DAEMON": "x"}).start()
    try:
        (layout.inbox / "customers.txt").write_text(CARD)
        daemon.wait_for(lambda: audit_records(layout.audit, "action.exec"), what="an exec run")
    finally:
        daemon.stop()
    alert = json.loads(Path(f"{seen}.json").read_text())
    assert alert["event"]["kind"] == "alert" and alert["dropwarden"]["findings"][0]["type"] == "CREDIT_CARD"
    assert "4111" not in Path(f"{seen}.json").read_text()
    env = dict(line.split("=", 1) for line in Path(f"{seen}.env").read_text().splitlines() if "=" in line)
    assert env["DROPWARDEN_ALERT_ID"] == alert["event"]["id"]
    assert env["DROPWARDEN_WATCH"] == "inbox"
    assert env["DROPWARDEN_OUTCOME"] == "finding"
    assert env["DROPWARDEN_SEVERITY"] == str(alert["event"]["severity"])
    assert "SECRET_OF_THE_DAEMON" not in env
    assert Path(f"{seen}.args").read_text().strip() == "--from-dropwarden"
    run = audit_records(layout.audit, "action.exec")[0]["body"]
    assert (run["sink"], run["alert"], run["outcome"], run["exit_status"]) == (
        "hook",
        alert["event"]["id"],
        "exited",
        0,
    )


def test_a_failing_exec_program_is_retried_and_each_exit_status_is_audited(tmp_path):
    counter = tmp_path / "runs"
    script = _script(
        tmp_path / "flaky.sh",
        f'cat > /dev/null\necho run >> "{counter}"\n[ "$(wc -l < "{counter}")" -ge 2 ] || exit 3\n',
    )
    layout = Layout(tmp_path / "run", '["quarantine", "alert"]', _exec_sink(script))
    daemon = DaemonProcess(layout.config, layout.audit).start()
    try:
        (layout.inbox / "customers.txt").write_text(CARD)
        daemon.wait_for(lambda: len(audit_records(layout.audit, "action.exec")) >= 2, what="a retried run")
    finally:
        daemon.stop()
    runs = [r["body"] for r in audit_records(layout.audit, "action.exec")]
    assert [r["exit_status"] for r in runs[:2]] == [3, 0]
    assert runs[0]["alert"] == runs[1]["alert"], "the same alert, delivered again"


def test_an_exec_program_that_hangs_is_killed_with_its_process_group_at_the_timeout(tmp_path):
    from dropwarden_actions.execsink import ExecFailed, ExecSink
    from dropwarden_actions.settings import ExecSinkSettings

    child = tmp_path / "child.pid"
    script = _script(tmp_path / "hang.sh", f'sleep 300 &\necho $! > "{child}"\nwait\n')
    sink = ExecSink(ExecSinkSettings(type="exec", name="hang", argv=[str(script)], timeout=1))
    audited: list[tuple[str, dict]] = []
    sink.use_audit(lambda kind, body: audited.append((kind, body)))
    started = time.monotonic()
    with pytest.raises(ExecFailed):
        sink.send({"event": {"kind": "alert", "id": "a-1", "action": "finding", "severity": 73}})
    assert time.monotonic() - started < 10
    assert audited[0][0] == "action.exec" and audited[0][1]["outcome"] == "timeout"
    pid = int(child.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the program's children are killed with it"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_an_exec_sink_names_its_program_by_absolute_path(tmp_path):
    layout = Layout(
        tmp_path, '["quarantine", "alert"]', '[[alerts.sink]]\ntype = "exec"\nargv = ["notify-send"]\n'
    )
    checked = run_cli("config", "check", "--config", str(layout.config))
    assert checked.returncode == 2
    assert "argv" in checked.stderr and "absolute path" in checked.stderr
