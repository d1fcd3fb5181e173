"""Binary keystore files (PKCS#12 .p12/.pfx, Java KeyStore .jks, JCEKS .jceks) are found as keystores:
real ones, generated at test time with openssl and keytool, judged by the real judge."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dropwarden.config import Settings
from dropwarden.judge.intake import FileIdentity, Snapshot
from dropwarden.runtime import build_runtime
from dropwarden_regex.keystore import PKCS7_DATA, keystore_format

PASSWORD = "s3cret-store-pass"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is needed to generate the keystores these tests judge")
        pytest.skip(f"{name} is not installed")
    return path


def _run(*command: str, cwd: Path) -> None:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """name -> bytes: PKCS#12 files from openssl (current and legacy encryption), JKS and JCEKS files
    from keytool, and the DER certificate and PKCS#8 key the PKCS#12 files hold (not keystores)."""
    where = tmp_path_factory.mktemp("keystores")
    openssl, keytool = _tool("openssl"), _tool("keytool")
    _run(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
         "-subj", "/CN=dropwarden test", "-days", "2", cwd=where)  # fmt: skip
    for name, extra in (("store.p12", ()), ("legacy.pfx", ("-legacy",))):
        _run(openssl, "pkcs12", "-export", *extra, "-in", "cert.pem", "-inkey", "key.pem", "-out", name,
             "-passout", f"pass:{PASSWORD}", cwd=where)  # fmt: skip
    _run(openssl, "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der", cwd=where)
    _run(
        openssl,
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "key.pem",
        "-outform",
        "DER",
        "-out",
        "key.der",
        cwd=where,
    )
    for name, store_type in (("store.jks", "JKS"), ("store.jceks", "JCEKS")):
        _run(keytool, "-genkeypair", "-alias", "app", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=t",
             "-validity", "2", "-keystore", name, "-storetype", store_type, "-storepass", PASSWORD,
             "-keypass", PASSWORD, cwd=where)  # fmt: skip
    names = ("store.p12", "legacy.pfx", "store.jks", "store.jceks", "cert.der", "key.der")
    return {name: (where / name).read_bytes() for name in names}


KEYSTORES = {"store.p12": "pkcs12", "legacy.pfx": "pkcs12", "store.jks": "jks", "store.jceks": "jceks"}


def _judge(runtime: Any, name: str, data: bytes) -> Any:
    identity = FileIdentity(1, 2, len(data), 3, 4)
    snapshot = Snapshot(
        f"/drop/inbox/{name}", data, hashlib.sha256(data).hexdigest(), identity, 0o644, 0, 0, 1, 4
    )
    return runtime.judge.judge_snapshot(snapshot).verdict


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Any:
    built = build_runtime(Settings(state={"dir": tmp_path_factory.mktemp("state")}, ocr={"enabled": False}))
    yield built
    built.close()


def test_each_keystore_format_is_recognised_by_its_opening_structure(files: dict[str, bytes]) -> None:
    assert {name: keystore_format(files[name]) for name in KEYSTORES} == KEYSTORES
    assert keystore_format(files["cert.der"]) is None  # a DER SEQUENCE, but no version 3 + pkcs7-data
    assert keystore_format(files["key.der"]) is None  # PKCS#8: version 0
    assert keystore_format(b"\xfe\xed\xfe\xed\x00\x00\x00\x07" + bytes(100)) is None  # no such JKS version
    assert keystore_format(files["store.p12"][:40]) is None  # the SEQUENCE reaches past the bytes


@pytest.mark.parametrize("name", sorted(KEYSTORES))
def test_a_binary_keystore_file_is_a_keystore_finding(
    runtime: Any, files: dict[str, bytes], name: str
) -> None:
    """Without the keystore view the file was `unscanned` (no detector judges binary files)."""
    verdict = _judge(runtime, name, files[name])
    assert [(f.type, f.rule, f.location.view) for f in verdict.findings] == [
        ("KEYSTORE", "secrets.keystore_base64", "keystore")
    ]
    assert PASSWORD not in str(verdict)


@pytest.mark.parametrize("name", ["cert.der", "key.der"])
def test_der_files_that_are_not_keystores_stay_as_they_were(
    runtime: Any, files: dict[str, bytes], name: str
) -> None:
    verdict = _judge(runtime, name, files[name])
    assert verdict.findings == ()
    assert [problem.reason.value for problem in verdict.problems] == ["unsupported_type"]


@pytest.mark.parametrize(
    "length",
    [b"\x81\xf0", b"\x82\x40\x00", b"\x83\x01\x00\x00", b"\x80"],
    ids=["1-byte", "2-byte-over-16k", "3-byte", "indefinite"],
)
def test_every_length_form_of_a_pkcs12_sequence_is_found(runtime: Any, length: bytes) -> None:
    """The PFX SEQUENCE's length in 1, 2 or 3 bytes, or BER's indefinite form: embedded as base64 in a
    text and as a file of its own (the authSafe's length varies with it)."""
    body = b"\x02\x01\x03" + b"\x30\x82\x01\x00" + PKCS7_DATA + bytes(range(256)) * 2
    declared = int.from_bytes(length[1:], "big") if length[0] != 0x80 else len(body)
    data = b"\x30" + length + body + bytes(max(0, declared - len(body)))
    assert keystore_format(data) == "pkcs12"
    assert [f.type for f in _judge(runtime, "cert.pfx", data).findings] == ["KEYSTORE"]
    embedded = f"keystore: {base64.b64encode(data[:600]).decode()}\n".encode()
    assert [f.type for f in _judge(runtime, "values.yaml", embedded).findings] == ["KEYSTORE"]


def test_without_the_keystore_rule_a_keystore_file_stays_unscanned(
    files: dict[str, bytes], tmp_path: Path
) -> None:
    """The extractor is registered only with the rule that reads its view: a view judged by nothing that
    reads it would make the file look judged, and a keystore file clean."""
    settings = Settings(
        state={"dir": tmp_path}, ocr={"enabled": False}, rules={"disable": ["secrets.keystore_base64"]}
    )
    built = build_runtime(settings)
    try:
        assert "keystore" not in built.registry.extractors
        verdict = _judge(built, "store.jks", files["store.jks"])
        assert verdict.kind.value == "unscanned"
    finally:
        built.close()
