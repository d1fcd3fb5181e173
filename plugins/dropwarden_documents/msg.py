"""Outlook .msg through its OLE property streams: subject, names, plain and HTML bodies, attachments."""

from __future__ import annotations

import olefile

from dropwarden.content import DecodeError, decode_text
from dropwarden_documents.htmltext import html_text
from dropwarden_documents.lzfu import BadCompressedRtf, decompress
from dropwarden_documents.olestream import read_stream
from dropwarden_documents.rtf import rtf_text
from dropwarden_documents.walk import Walker, Within

MAX_MESSAGE_NESTING = 8  # attached messages inside attached messages (each also counts as depth)
_HEADER_PROPERTIES = (
    ("Subject", "0037"),
    ("From", "0C1A"),
    ("Sent-Representing", "0042"),
    ("To", "0E04"),
    ("Cc", "0E03"),
    ("Bcc", "0E02"),
    ("Transport-Headers", "007D"),
)
_RECIPIENT_PROPERTIES = ("3001", "3003", "39FE")  # display name, address, SMTP address


def is_msg(ole: olefile.OleFileIO) -> bool:
    return any(entry[0].startswith("__substg1.0_") for entry in ole.listdir(streams=True, storages=False))


def walk_msg(walker: Walker, ole: olefile.OleFileIO, within: Within, depth: int) -> None:
    """A message: subject, sender and recipient names as `headers`, the plain body (`body`), the HTML
    body as its visible text (`body (html)`), the compressed RTF body as its text (`body (rtf)`),
    attachments walked by their bytes (`attachment name`), attached messages as messages."""
    _walk_message(walker, ole, [], within, depth)


def _walk_message(
    walker: Walker, ole: olefile.OleFileIO, prefix: list[str], within: Within, depth: int
) -> None:
    lines = [
        f"{name}: {value}" for name, tag in _HEADER_PROPERTIES if (value := _string(walker, ole, prefix, tag))
    ]
    children = [entry for entry in ole.listdir(streams=False, storages=True) if entry[:-1] == prefix]
    for storage in walker.members(sorted(children), within):
        if storage[-1].startswith("__recip_version1.0_"):
            names = (_string(walker, ole, storage, tag) for tag in _RECIPIENT_PROPERTIES)
            lines.append("Recipient: " + " ".join(name for name in names if name))
    walker.text("\n".join(lines) + "\n", (*within, "headers"))
    body = _string(walker, ole, prefix, "1000")
    walker.text(body, (*within, "body"))
    html = _stream(walker, ole, [*prefix, "__substg1.0_10130102"])
    if html:
        try:
            markup = decode_text(html).text
        except DecodeError:
            walker.problem("decode_error", "HTML body in no known encoding", (*within, "body (html)"))
        else:
            limit = max(1, walker.limits.max_text_chars - walker.text_chars)
            walker.text(html_text(markup, limit), (*within, "body (html)"))
    _rtf_body(walker, _stream(walker, ole, [*prefix, "__substg1.0_10090102"]), within)
    names: list[str] = []
    for storage in sorted(children):
        if storage[-1].startswith("__attach_version1.0_"):
            name = _attachment(walker, ole, storage, within, depth)
            if name:
                names.append(name)
    walker.text("\n".join(names), (*within, "attachment names"))


def _rtf_body(walker: Walker, compressed: bytes | None, within: Within) -> None:
    """PR_RTF_COMPRESSED: decompressed (bounded, CRC checked) and read as RTF, `body (rtf)` (a body
    some messages have in no other form)."""
    if not compressed:
        return
    where = (*within, "body (rtf)")
    try:
        rtf = decompress(compressed, int(walker.limits.max_member_bytes))
    except BadCompressedRtf as exc:
        walker.problem("decode_error", f"compressed RTF body: {exc}", where)
        return
    walker.charge(len(rtf))
    walker.text(rtf_text(rtf, max(1, walker.limits.max_text_chars - walker.text_chars)), where)


def _attachment(
    walker: Walker, ole: olefile.OleFileIO, storage: list[str], within: Within, depth: int
) -> str:
    name = _string(walker, ole, storage, "3707") or _string(walker, ole, storage, "3704")
    label = f"attachment {name[:500]}" if name else f"attachment {storage[-1][-8:]}"
    where = (*within, label)
    embedded = [*storage, "__substg1.0_3701000D"]
    if ole.exists("/".join(embedded)) and ole.get_type(embedded) == olefile.STGTY_STORAGE:
        if depth + 1 > walker.limits.max_depth or len(storage) > 2 * MAX_MESSAGE_NESTING:
            walker.problem(
                "too_large", f"nested deeper than documents.max_depth={walker.limits.max_depth}", where
            )
        else:
            _walk_message(walker, ole, embedded, where, depth + 1)
        return name
    data = _stream(walker, ole, [*storage, "__substg1.0_37010102"])
    if data is not None:
        walker.visit(data, where, depth + 1, name)
    return name


def _stream(walker: Walker, ole: olefile.OleFileIO, path: list[str]) -> bytes | None:
    if not ole.exists("/".join(path)) or ole.get_type(path) != olefile.STGTY_STREAM:
        return None
    return read_stream(walker, ole, path)


def _string(walker: Walker, ole: olefile.OleFileIO, prefix: list[str], tag: str) -> str:
    """A string property: PT_UNICODE (001F, UTF-16LE) or PT_STRING8 (001E, detected encoding)."""
    wide = _stream(walker, ole, [*prefix, f"__substg1.0_{tag}001F"])
    if wide is not None:
        return wide.decode("utf-16-le", errors="replace").rstrip("\0")
    narrow = _stream(walker, ole, [*prefix, f"__substg1.0_{tag}001E"])
    if not narrow:
        return ""
    try:
        return decode_text(narrow.rstrip(b"\0")).text
    except DecodeError:
        return narrow.decode("latin-1")
