"""Actions are plugins' objects: a third-party notify action named in a watch runs in the real daemon; a
name no plugin registers is refused; the built-in `exec` alert sink runs a program, ClamAV style."""

from __future__ import annotations

import json
import os
import textwrap
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


def test_an_action_name_that_is_not_a_name_is_a_configuration_error(tmp_path):
    layout = Layout(tmp_path, '["quarantine", "rm -rf /"]')
    checked = run_cli("config", "check", "--config", str(layout.config))
    assert checked.returncode == 2
    assert "on_finding" in checked.stderr
