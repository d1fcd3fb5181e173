"""Decode text bytes with encoding detection: BOMs, UTF-8, UTF-16, Shift_JIS, EUC-JP and the rest."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from charset_normalizer import from_bytes

from dropwarden.judge.sniff import utf16_without_bom

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Encodings tried in order before statistical detection. Japanese legacy encodings come first because
# short Japanese texts are where a generic detector most often guesses wrong.
_JAPANESE = ("cp932", "euc_jis_2004")


class DecodeError(ValueError):
    """The bytes are not text in any encoding we can identify."""


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str
    # The source bytes when they are exactly `text` in UTF-8 (a strict UTF-8 decode): byte-oriented
    # matchers scan them as they are instead of encoding the text again.
    utf8: bytes | None = field(default=None, repr=False, compare=False)


def decode_text(data: bytes) -> Decoded:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _strict(data[len(bom) :], encoding)
    # Before UTF-8: NUL is valid UTF-8, so BOM-less UTF-16 of ASCII text would "decode" as UTF-8.
    bomless = utf16_without_bom(data[:8192])
    if bomless is not None:
        return _strict(data, bomless)
    try:
        return Decoded(data.decode("utf-8"), "utf-8", data)
    except UnicodeDecodeError:
        pass
    japanese = _japanese(data)
    if japanese is not None:
        return japanese
    best = from_bytes(data).best()
    if best is None:
        raise DecodeError("no text encoding fits these bytes")
    return Decoded(str(best), best.encoding)


def _strict(data: bytes, encoding: str) -> Decoded:
    try:
        return Decoded(data.decode(encoding), encoding, data if encoding == "utf-8" else None)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid {encoding} at byte {exc.start}") from None


def _japanese(data: bytes) -> Decoded | None:
    """Shift_JIS (cp932) or EUC-JP when the bytes decode strictly and the result is mostly Japanese.

    Both encodings accept much random high-bit data, so a strict decode alone is not evidence; we
    require that most non-ASCII characters land in kana/kanji/full-width blocks.
    """
    if not any(byte >= 0x80 for byte in data[:65536]):
        return None
    candidates = []
    for encoding in _JAPANESE:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        score = _japanese_share(text)
        if score >= 0.8:
            candidates.append((score, encoding, text))
    if not candidates:
        return None
    score, encoding, text = max(candidates)
    return Decoded(text, "shift_jis" if encoding == "cp932" else "euc-jp")


def _japanese_share(text: str) -> float:
    non_ascii = [ch for ch in text[:20000] if ord(ch) >= 0x80]
    if not non_ascii:
        return 0.0
    japanese = sum(
        1
        for ch in non_ascii
        if 0x3000 <= ord(ch) <= 0x30FF or 0x4E00 <= ord(ch) <= 0x9FFF or 0xFF00 <= ord(ch) <= 0xFFEF
    )
    return japanese / len(non_ascii)
