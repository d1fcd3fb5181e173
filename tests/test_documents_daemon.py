"""The daemon and a container: the file that landed is acted on as a whole, and its audit record and alert
name where inside it each finding is, with member names masked by the rules as file names are."""

from __future__ import annotations

import json

from .test_daemon import Drop
from .test_documents_archives import CARD, CLEAN, zip_of

PHONE = "090-1234-5678"
SECRET_NAME = f"山田 {PHONE}.txt"


def test_a_card_in_a_nested_member_quarantines_the_zip_and_the_records_name_the_masked_member(tmp_path):
    drop = Drop(tmp_path)
    inner = zip_of({SECRET_NAME: f"支払い {CARD}\n", "readme.txt": CLEAN})
    bundle = zip_of({"inner.zip": inner, "notes.txt": CLEAN})
    daemon = drop.daemon().start()
    try:
        (drop.inbox / "bundle.zip").write_bytes(bundle)
        (sidecar,) = daemon.wait_for(drop.sidecars, what="quarantine sidecar")
        (alert,) = daemon.wait_for(drop.alert_lines, what="alert")
        (decision,) = daemon.decisions_for("bundle.zip")
    finally:
        daemon.stop()

    assert (drop.quarantine / sidecar["id"]).read_bytes() == bundle  # the file that landed, whole
    assert not (drop.inbox / "bundle.zip").exists()
    recorded = [f["location"].get("within") for f in decision["findings"] if f["type"] == "CREDIT_CARD"]
    alerted = [
        f["location"].get("within") for f in alert["dropwarden"]["findings"] if f["type"] == "CREDIT_CARD"
    ]
    assert recorded and recorded == alerted, (recorded, alerted)
    outer, member = recorded[0]
    assert outer == "inner.zip"
    assert member.startswith("山田 ") and member.endswith(".txt") and member != SECRET_NAME, member
    everything = (
        drop.audit.read_text() + drop.alerts.read_text() + json.dumps(sidecar) + "\n".join(daemon.log_lines)
    )
    for raw in (CARD, CARD.replace(" ", ""), PHONE, PHONE.replace("-", "")):
        assert raw not in everything, raw
