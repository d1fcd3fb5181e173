"""`dropwarden doctor` on the SIEM sinks: syslog address, TLS files and reachability, webhook files and
scheme (a token's content never shown), journald's socket."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator

import pytest

from tests.rsyslog_server import make_certificates

from .conftest import require, run_cli

QUIET = "[ocr]\nenabled = false\n"
TOKEN = "hec-token-0f9e8d7c6b5a"


def doctor(write_config, body: str):
    return run_cli("doctor", "--config", str(write_config(QUIET + body)))


def syslog(address: str, transport: str = "tcp", extra: str = "") -> str:
    return (
        f'[[alerts.sink]]\ntype = "syslog"\nname = "soc"\naddress = "{address}"\n'
        f'transport = "{transport}"\n{extra}'
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1 (the kernel completes the handshake: a receiver that answers)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server
    server.close()


def test_a_syslog_receiver_that_accepts_is_ok_and_one_that_does_not_is_a_warning_not_a_failure(
    write_config, listener
):
    port = listener.getsockname()[1]
    up = doctor(write_config, syslog(f"127.0.0.1:{port}"))
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"ok    alert sink soc: tcp 127.0.0.1:{port} accepts a connection" in up.stdout
    listener.close()
    down = doctor(write_config, syslog(f"127.0.0.1:{port}"))
    assert down.returncode == 0, down.stdout + down.stderr  # the outbox holds the alerts meanwhile
    assert f"warn  alert sink soc: tcp 127.0.0.1:{port} does not accept a connection" in down.stdout
    assert "outbox" in down.stdout


def test_syslog_tls_files_must_be_readable_and_load(write_config, listener, tmp_path):
    require(shutil.which("openssl") is not None, "openssl")
    certs = make_certificates(tmp_path / "certs")
    port = listener.getsockname()[1]
    good = doctor(write_config, syslog(f"127.0.0.1:{port}", "tls", f'ca_file = "{certs["ca"]}"\n'))
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"ok    alert sink soc ca_file: {certs['ca']} is readable" in good.stdout
    assert "ok    alert sink soc tls: CA load" in good.stdout
    missing = doctor(write_config, syslog(f"127.0.0.1:{port}", "tls", f'ca_file = "{tmp_path / "no.pem"}"\n'))
    assert missing.returncode == 1
    assert f"FAIL  alert sink soc ca_file: {tmp_path / 'no.pem'} cannot be read" in missing.stdout
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    bad = doctor(write_config, syslog(f"127.0.0.1:{port}", "tls", f'ca_file = "{not_pem}"\n'))
    assert bad.returncode == 1 and "FAIL  alert sink soc tls: " in bad.stdout, bad.stdout
    mismatched = f'ca_file = "{certs["ca"]}"\nclient_cert = "{certs["cert"]}"\nclient_key = "{certs["ca"]}"\n'
    wrong_key = doctor(write_config, syslog(f"127.0.0.1:{port}", "tls", mismatched))
    assert wrong_key.returncode == 1 and "FAIL  alert sink soc tls: " in wrong_key.stdout, wrong_key.stdout


def webhook(url: str, extra: str = "") -> str:
    return f'[[alerts.sink]]\ntype = "webhook"\nname = "hec"\nurl = "{url}"\nformat = "splunk-hec"\n{extra}'


def test_webhook_files_must_be_readable_and_their_content_is_never_shown(write_config, tmp_path):
    token = tmp_path / "hec.token"
    token.write_text(TOKEN + "\n")
    files = f'token_file = "{token}"\nsecret_file = "{token}"\n'
    good = doctor(write_config, webhook("https://hec.example:8088/services/collector/event", files))
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"ok    alert sink hec token_file: {token} is readable" in good.stdout
    assert f"ok    alert sink hec secret_file: {token} is readable" in good.stdout
    assert "ok    alert sink hec: https to hec.example" in good.stdout
    assert TOKEN not in good.stdout + good.stderr
    token.unlink()
    missing = doctor(write_config, webhook("https://hec.example:8088/services/collector/event", files))
    assert missing.returncode == 1, missing.stdout
    assert f"alert sink hec token_file: {token} cannot be read" in missing.stdout + missing.stderr


def test_a_webhook_over_plain_http_is_ok_only_to_this_host(write_config, tmp_path):
    token = tmp_path / "hec.token"
    token.write_text(TOKEN)
    local = doctor(write_config, webhook("http://127.0.0.1:8088/collector", f'token_file = "{token}"\n'))
    assert "ok    alert sink hec: http to 127.0.0.1, this host" in local.stdout, local.stdout
    remote = doctor(write_config, webhook("http://hec.example:8088/collector", f'token_file = "{token}"\n'))
    assert remote.returncode == 1
    assert "FAIL  alert sink hec: http to hec.example, another host" in remote.stdout
    no_token = doctor(write_config, webhook("http://hec.example:8088/collector"))
    assert no_token.returncode == 0 and "warn  alert sink hec: http to hec.example" in no_token.stdout


def test_the_journald_sink_needs_its_socket(write_config, tmp_path):
    path = tmp_path / "journal.socket"
    body = f'[[alerts.sink]]\ntype = "journald"\nname = "journal"\nsocket = "{path}"\n'
    missing = doctor(write_config, body)
    assert missing.returncode == 1 and f"FAIL  alert sink journal: {path}: No such file" in missing.stdout
    path.write_text("")
    not_socket = doctor(write_config, body)
    assert f"FAIL  alert sink journal: {path} is not a socket" in not_socket.stdout
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journal:
        journal.bind(str(path))
        there = doctor(write_config, body)
    assert there.returncode == 0 and f"ok    alert sink journal: {path} is a socket" in there.stdout
