"""A real rsyslogd for tests: UDP, TCP and TLS (gtls) inputs on 127.0.0.1, every message raw to a file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it, made with openssl now."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=dropwarden test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
        "-extfile", ext)  # fmt: skip
    return {"ca": ca, "cert": cert, "key": key}


class Rsyslog:
    """rsyslogd -n as a child; `lines(input)` is what it received on "udp", "tcp" or "tls", one raw
    message per line. Stopped by its pid only."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.certs = make_certificates(folder / "certs")
        self.ports = {"udp": free_port(socket.SOCK_DGRAM), "tcp": free_port(), "tls": free_port()}
        self.conf = folder / "rsyslog.conf"
        self.pidfile = folder / "rsyslogd.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_conf()

    def _write_conf(self) -> None:
        out = self.folder
        rulesets = "\n".join(
            f'ruleset(name="{name}") {{ action(type="omfile" file="{out}/{name}.log" template="raw") }}'
            for name in self.ports
        )
        self.conf.write_text(
            f"""global(workDirectory="{out}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{self.certs["ca"]}"
       defaultNetstreamDriverCertFile="{self.certs["cert"]}"
       defaultNetstreamDriverKeyFile="{self.certs["key"]}")
template(name="raw" type="string" string="%rawmsg%\\n")
module(load="imudp")
module(load="imtcp" maxSessions="100")
input(type="imudp" address="127.0.0.1" port="{self.ports["udp"]}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{self.ports["tcp"]}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{self.ports["tls"]}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
{rulesets}
"""
        )

    def start(self) -> Rsyslog:
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "rsyslogd.err", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 20
        while not all(self._listening(port) for port in (self.ports["tcp"], self.ports["tls"])):
            if self.proc.poll() is not None:
                raise AssertionError("rsyslogd exited: " + (self.folder / "rsyslogd.err").read_text())
            if time.monotonic() > deadline:
                raise AssertionError("rsyslogd not listening")
            time.sleep(0.05)
        return self

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to our child's pid; rsyslogd writes what it holds and exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def lines(self, name: str) -> list[str]:
        path = self.folder / f"{name}.log"
        if not path.exists():
            return []
        return path.read_bytes().decode("utf-8", "replace").splitlines()
