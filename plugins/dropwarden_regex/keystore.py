"""Binary keystore files (PKCS#12, JKS, JCEKS) recognised by structure and handed to the text rules."""

from __future__ import annotations

import base64
from typing import Any

from dropwarden.views import TextView, View

JKS_MAGIC = b"\xfe\xed\xfe\xed"
JCEKS_MAGIC = b"\xce\xce\xce\xce"
PKCS7_DATA = bytes.fromhex("06092a864886f70d010701")  # OID 1.2.840.113549.1.7.1, pkcs7-data
# The rule that reports what the extractor hands over: the base64 of a keystore's first bytes. Its
# matches are at most 65536 characters long, the base64 of 48 KiB.
KEYSTORE_RULE = "secrets.keystore_base64"
HEAD_BYTES = 48 * 1024


def keystore_format(data: bytes) -> str | None:
    """ "jks", "jceks" or "pkcs12" when `data` opens as one, else None. Reads at most 64 bytes.

    JKS and JCEKS: their magic (FEEDFEED, CECECECE), then version 1 or 2 (big-endian 32 bits).
    PKCS#12 (RFC 7292): PFX ::= SEQUENCE { version INTEGER 3, authSafe ContentInfo { contentType
    pkcs7-data, ... }, ... }, DER (or BER with an indefinite length), the SEQUENCE inside the file."""
    if len(data) >= 8 and data[:4] in (JKS_MAGIC, JCEKS_MAGIC) and data[4:8] in (b"\0\0\0\1", b"\0\0\0\2"):
        return "jks" if data[:4] == JKS_MAGIC else "jceks"
    return "pkcs12" if _pfx(data) else None


def _pfx(data: bytes) -> bool:
    if len(data) < 24 or data[0] != 0x30:
        return False
    outer = _length(data, 1)
    if outer is None:
        return False
    length, at = outer
    if length is not None and at + length > len(data):
        return False
    if data[at : at + 3] != b"\x02\x01\x03" or data[at + 3 : at + 4] != b"\x30":
        return False
    inner = _length(data, at + 4)
    return inner is not None and data.startswith(PKCS7_DATA, inner[1])


def _length(data: bytes, at: int) -> tuple[int | None, int] | None:
    """A DER length at `at`: (length, where the contents start); length None when indefinite (BER)."""
    if at >= len(data):
        return None
    first = data[at]
    if first < 0x80:
        return first, at + 1
    if first == 0x80:
        return None, at + 1
    size = first & 0x7F
    if size > 4 or at + 1 + size > len(data):
        return None
    return int.from_bytes(data[at + 1 : at + 1 + size], "big"), at + 1 + size


class KeystoreExtractor:
    """A keystore file becomes view "keystore": the base64 of its first HEAD_BYTES, which the secrets
    pack's `secrets.keystore_base64` rule reports as it reports a keystore pasted into a text file.

    The regex detector reads text views only; a binary file reaches it as the core's "strings" view
    (printable runs), where a keystore leaves nothing recognisable. Called once per file, reading its
    first bytes (and encoding at most HEAD_BYTES of a keystore): `bounded`. Registered only while that
    rule is in force, since a view judged by no rule that reads it would make the file look judged."""

    id = "keystore"
    version = "1"
    bounded = True

    def extract(self, snapshot: Any, views: list[View]) -> list[View]:
        data: bytes = snapshot.data
        found = keystore_format(data)
        if found is None:
            return []
        head = data[:HEAD_BYTES]
        provenance = {"source": "keystore", "format": found, "bytes": len(head)}
        return [TextView.from_ascii("keystore", base64.b64encode(head), provenance)]
