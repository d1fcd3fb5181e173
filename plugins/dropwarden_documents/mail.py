"""E-mail (.eml, RFC 5322 / MIME) with the standard library: headers, plain and HTML bodies, attachments."""

from __future__ import annotations

import codecs
import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage, Message

from dropwarden.content import DecodeError, decode_text
from dropwarden_documents.htmltext import html_text
from dropwarden_documents.walk import LimitReached, Walker, Within

MAX_NESTING = 50  # multiparts inside multiparts (the parser itself is not recursive; our walk is)


def walk_mail(walker: Walker, data: bytes, within: Within, depth: int) -> None:
    """A message: its headers as a view of their own (decoded), each text body (HTML as its visible
    text), attachments and attached messages recursed by their sniffed type, named in `within`
    ("attachment report.docx"); the names of the attachments judged too."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    walker.text(_headers(message), (*within, "headers"))
    names: list[str] = []
    bodies = 0
    for index, part in enumerate(walker.members(_leaves(message, 0), within), start=1):
        filename = _filename(part)
        content_type = part.get_content_type()
        if filename is None and part.get_content_maintype() == "text" and not _is_attachment(part):
            bodies += 1
            label = "body" if bodies == 1 else f"body {bodies}"
            text = _text_of(walker, part, (*within, label))
            if content_type == "text/html":
                text = html_text(text, max(1, walker.limits.max_text_chars - walker.text_chars))
                label += " (html)"
            walker.text(text, (*within, label))
            continue
        if content_type == "message/rfc822":
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            raw = inner.as_bytes() if isinstance(inner, Message) else b""
        else:
            raw = part.get_payload(decode=True) or b""
        walker.charge(len(raw))
        if filename:
            names.append(filename)
        label = f"attachment {filename}" if filename else f"part {index} ({content_type})"
        walker.visit(raw, (*within, label), depth + 1, filename or "")
    walker.text("\n".join(names), (*within, "attachment names"))


def _headers(message: Message) -> str:
    lines = []
    for name, raw in message.raw_items():
        try:
            lines.append(f"{name}: {message.policy.header_fetch_parse(name, raw)}")
        except Exception:  # a header the policy cannot parse (found by fuzzing: an address group): raw
            lines.append(f"{name}: {raw}")
    return "\n".join(lines) + "\n"


def _leaves(part: Message, nesting: int) -> Iterator[Message]:
    """Every part that is no multipart, in order; an attached message is one part (recursed as a file)."""
    if nesting > MAX_NESTING:
        raise LimitReached(f"multiparts nested deeper than {MAX_NESTING}")
    if part.get_content_type() == "message/rfc822" or not part.is_multipart():
        yield part
        return
    payload = part.get_payload()
    for sub in payload if isinstance(payload, list) else []:
        yield from _leaves(sub, nesting + 1)


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # a malformed parameter: no name rather than no file
        return None
    return str(name)[:500] if name else None


def _is_attachment(part: Message) -> bool:
    if isinstance(part, EmailMessage):
        return part.is_attachment()
    return str(part.get("Content-Disposition", "")).lower().startswith("attachment")


def _text_of(walker: Walker, part: Message, where: Within) -> str:
    """A text part decoded by its declared charset; unknown, missing or wrong: by our own detection
    (none fits: a problem, decode_error)."""
    raw = part.get_payload(decode=True) or b""
    walker.charge(len(raw))
    charset = part.get_content_charset()
    if charset:
        try:
            return raw.decode(codecs.lookup(charset).name)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return decode_text(raw).text
    except DecodeError:
        walker.problem("decode_error", "text in no known encoding", where)
        return ""
