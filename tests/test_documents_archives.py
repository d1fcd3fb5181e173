"""Archives judged end to end by `dropwarden scan`: members recursed, paths named, limits and bombs bounded."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from .conftest import run_cli

CARD = "4111 1111 1111 1111"
JA_PII = "山田太郎様 マイナンバー: 1234 5678 9018\n"
CLEAN = "会議メモ: 注文番号 20231104-7781 は火曜日に出荷します。\n"


def scan(config: Path, *paths: Path) -> dict[str, dict]:
    result = run_cli("scan", "--format", "json", "--config", str(config), *map(str, paths), timeout=120)
    assert result.returncode in (0, 1, 3), result.stderr
    return {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}


def zip_of(members: dict[str, bytes | str], compression: int = zipfile.ZIP_DEFLATED, **kw) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression, **kw) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def tar_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def within(record: dict) -> list[list[str]]:
    return [f["location"].get("within") for f in record["findings"]]


def test_a_card_two_zips_deep_is_found_and_named_by_its_path(tmp_path, write_config):
    inner = zip_of({"note.txt": f"pay {CARD}\n", "clean.txt": CLEAN})
    (tmp_path / "outer.zip").write_bytes(zip_of({"inner.zip": inner, "readme.txt": CLEAN}))
    record = scan(write_config(), tmp_path / "outer.zip")["outer.zip"]
    assert record["verdict"] == "finding", record
    assert ["inner.zip", "note.txt"] in within(record)
    assert CARD not in json.dumps(record) and CARD.replace(" ", "") not in json.dumps(record)


@pytest.mark.parametrize(
    "name,wrap",
    [
        ("bundle.tar", lambda data: data),
        ("bundle.tar.gz", gzip.compress),
        ("bundle.tar.bz2", bz2.compress),
        ("bundle.tar.xz", lzma.compress),
    ],
)
def test_japanese_pii_in_tar_and_compressed_streams_is_found(tmp_path, write_config, name, wrap):
    data = tar_of({"docs/メモ.txt": JA_PII.encode("shift_jis"), "docs/clean.txt": CLEAN.encode()})
    (tmp_path / name).write_bytes(wrap(data))
    record = scan(write_config(), tmp_path / name)[name]
    assert record["verdict"] == "finding", record
    assert "JP_MY_NUMBER" in {f["type"] for f in record["findings"]}


def test_clean_archives_that_look_like_pii_stay_clean(tmp_path, write_config):
    (tmp_path / "clean.zip").write_bytes(
        zip_of({"order.txt": CLEAN, "ids.txt": "build 4111-2023-11-04 ok\n"})
    )
    (tmp_path / "clean.tar.gz").write_bytes(gzip.compress(tar_of({"a.txt": CLEAN.encode()})))
    records = scan(write_config(), tmp_path / "clean.zip", tmp_path / "clean.tar.gz")
    assert {name: r["verdict"] for name, r in records.items()} == {
        "clean.zip": "clean",
        "clean.tar.gz": "clean",
    }


def test_a_zip64_archive_is_read(tmp_path, write_config):
    data = zip_of({"a.txt": f"card {CARD}\n"}, allowZip64=True)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive, archive.open("big.txt", "w", force_zip64=True) as member:
        member.write(f"card {CARD}\n".encode())
    (tmp_path / "z64.zip").write_bytes(out.getvalue())
    (tmp_path / "plain.zip").write_bytes(data)
    record = scan(write_config(), tmp_path / "z64.zip")["z64.zip"]
    assert record["verdict"] == "finding" and ["big.txt"] in within(record), record


def encrypted_flag(data: bytes, name: str) -> bytes:
    """Set the encrypted bit of member `name` in its local and central headers."""
    raw = bytearray(data)
    encoded = name.encode()
    for signature, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (start := raw.find(signature, start)) != -1:
            if raw[start + name_at : start + name_at + len(encoded)] == encoded:
                raw[start + flag_at] |= 0x1
            start += 4
    return bytes(raw)


def test_an_encrypted_member_is_unscanned_encrypted_and_the_rest_still_judged(tmp_path, write_config):
    data = zip_of({"secret.txt": "whatever", "open.txt": f"card {CARD}\n"}, zipfile.ZIP_STORED)
    (tmp_path / "mixed.zip").write_bytes(encrypted_flag(data, "secret.txt"))
    (tmp_path / "locked.zip").write_bytes(encrypted_flag(zip_of({"secret.txt": "x" * 100}), "secret.txt"))
    records = scan(write_config(), tmp_path / "mixed.zip", tmp_path / "locked.zip")
    assert records["mixed.zip"]["verdict"] == "finding", records["mixed.zip"]
    assert records["locked.zip"]["verdict"] == "unscanned"
    assert "encrypted" in records["locked.zip"]["reason"] and "secret.txt" in records["locked.zip"]["reason"]


# ---------------------------------------------------------------------------------------- bombs


def test_zips_nested_deeper_than_max_depth_are_unscanned_naming_the_limit(tmp_path, write_config):
    data = zip_of({"core.txt": CLEAN})
    for level in range(12):
        data = zip_of({f"level{level}.zip": data})
    (tmp_path / "deep.zip").write_bytes(data)
    record = scan(write_config(), tmp_path / "deep.zip")["deep.zip"]
    assert record["verdict"] == "unscanned" and "documents.max_depth=10" in record["reason"], record


def test_a_high_ratio_member_is_stopped_and_a_finding_before_it_stands(tmp_path, write_config):
    data = zip_of({"a.txt": f"card {CARD}\n", "zeros.bin": bytes(200 * 1024 * 1024)})
    assert len(data) < 1024 * 1024
    (tmp_path / "bomb.zip").write_bytes(data)
    started = time.monotonic()
    records = scan(write_config(), tmp_path / "bomb.zip")
    assert time.monotonic() - started < 30
    record = records["bomb.zip"]
    assert record["verdict"] == "finding", record
    (tmp_path / "only-bomb.zip").write_bytes(zip_of({"zeros.bin": bytes(200 * 1024 * 1024)}))
    record = scan(write_config(), tmp_path / "only-bomb.zip")["only-bomb.zip"]
    assert record["verdict"] == "unscanned" and "documents.max_ratio" in record["reason"], record


def test_a_huge_declared_size_is_never_trusted(tmp_path, write_config):
    """A member that declares 4 GiB holds a few bytes: nothing is allocated for the declaration and the
    file ends judged or unscanned, quickly."""
    data = bytearray(zip_of({"small.txt": "just a few words"}, zipfile.ZIP_STORED))
    for signature, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = data.find(signature)
        data[start + size_at : start + size_at + 4] = (0xFFFFFFF0).to_bytes(4, "little")
    (tmp_path / "liar.zip").write_bytes(bytes(data))
    started = time.monotonic()
    record = scan(write_config(), tmp_path / "liar.zip")["liar.zip"]
    assert time.monotonic() - started < 30
    assert record["verdict"] in ("clean", "unscanned"), record


def test_the_total_bytes_limit_is_configurable_and_named(tmp_path, write_config):
    data = zip_of({f"part{i}.txt": "words " * 40_000 for i in range(5)})
    (tmp_path / "many.zip").write_bytes(data)
    config = write_config("[documents]\nmax_total_bytes = 500000\n")
    record = scan(config, tmp_path / "many.zip")["many.zip"]
    assert record["verdict"] == "unscanned" and "documents.max_total_bytes=500000" in record["reason"], record
