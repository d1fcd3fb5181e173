"""E-mail (.eml) generated at test time with the standard library, judged end to end by `dropwarden scan`:
headers, plain and HTML bodies in Japanese charsets, attachments recursed by their type and named."""

from __future__ import annotations

from email.message import EmailMessage

from dropwarden_documents.htmltext import html_text

from .test_documents_archives import CARD, CLEAN, scan, within, zip_of
from .test_documents_office import word

MY_NUMBER = "マイナンバー: 1234 5678 9018"


def message(subject: str = "週次報告", **headers: str) -> EmailMessage:
    """A message from and to display names only (an address is itself an EMAIL finding)."""
    mail = EmailMessage()
    mail["From"] = "総務部"
    mail["To"] = "全員"
    mail["Subject"] = subject
    for name, value in headers.items():
        mail[name] = value
    return mail


def test_japanese_bodies_in_iso_2022_jp_and_shift_jis_are_read_as_the_body(tmp_path, write_config):
    jis = message()
    jis.set_content(f"山田様\n{MY_NUMBER}\n", charset="iso-2022-jp", cte="7bit")
    sjis = message()
    sjis.set_content(f"山田様\n{MY_NUMBER}\n", charset="shift_jis", cte="base64")
    (tmp_path / "jis.eml").write_bytes(jis.as_bytes())
    (tmp_path / "sjis.eml").write_bytes(sjis.as_bytes())
    records = scan(write_config(), tmp_path / "jis.eml", tmp_path / "sjis.eml")
    for name in ("jis.eml", "sjis.eml"):
        assert ["body"] in within(records[name]), records[name]


def test_an_encoded_subject_is_judged_in_the_headers_view(tmp_path, write_config):
    mail = message(subject=f"至急 {CARD} の件")  # RFC 2047 encoded: unreadable in the raw file
    mail.set_content(CLEAN)
    (tmp_path / "subject.eml").write_bytes(mail.as_bytes())
    assert CARD.encode() not in mail.as_bytes()
    record = scan(write_config(), tmp_path / "subject.eml")["subject.eml"]
    assert ["headers"] in within(record), record


def test_an_html_body_is_judged_as_its_visible_text_not_its_scripts(tmp_path, write_config):
    hidden = (
        f"<html><head><style>.x{{}}</style><script>var c='{CARD}';</script></head><body>{CLEAN}</body></html>"
    )
    shown = f"<html><body><table><tr><td>カード</td><td>{CARD}</td></tr></table></body></html>"
    for name, markup in (("hidden.eml", hidden), ("shown.eml", shown)):
        mail = message()
        mail.set_content(CLEAN)
        mail.add_alternative(markup, subtype="html", cte="base64")  # base64: only our reading sees it
        (tmp_path / name).write_bytes(mail.as_bytes())
    records = scan(write_config(), tmp_path / "hidden.eml", tmp_path / "shown.eml")
    assert records["hidden.eml"]["verdict"] == "clean", records["hidden.eml"]
    assert ["body 2 (html)"] in within(records["shown.eml"]), records["shown.eml"]


def test_html_text_keeps_what_a_reader_sees():
    markup = '<p>a&amp;b</p><script>x()</script><img alt="写真"><a href="mailto:taro@example.jp">mail</a>'
    text = html_text(markup, 10_000)
    assert "a&b" in text and "写真" in text and "taro@example.jp" in text and "x()" not in text


def test_an_attachment_two_levels_deep_is_found_and_named_from_the_mail_inward(tmp_path, write_config):
    mail = message()
    mail.set_content(CLEAN)
    bundle = zip_of({"report.docx": word(header=f"担当 {CARD}"), "readme.txt": CLEAN})
    mail.add_attachment(bundle, maintype="application", subtype="octet-stream", filename="bundle.zip")
    (tmp_path / "deep.eml").write_bytes(mail.as_bytes())
    record = scan(write_config(), tmp_path / "deep.eml")["deep.eml"]
    assert ["attachment bundle.zip", "report.docx", "word/header1.xml"] in within(record), record


def test_an_attached_message_and_a_text_attachment_are_recursed(tmp_path, write_config):
    inner = message(subject="転送")
    inner.set_content(f"{MY_NUMBER}\n", charset="iso-2022-jp")
    mail = message()
    mail.set_content(CLEAN)
    mail.add_attachment(inner)
    mail.add_attachment(f"{CARD}\n".encode("shift_jis"), maintype="text", subtype="csv", filename="list.csv")
    (tmp_path / "forward.eml").write_bytes(mail.as_bytes())
    places = within(scan(write_config(), tmp_path / "forward.eml")["forward.eml"])
    assert ["attachment list.csv"] in places, places
    assert any(place and place[0].startswith("part ") and place[-1] == "body" for place in places), places


def test_a_clean_mail_with_look_alike_numbers_stays_clean(tmp_path, write_config):
    mail = message(subject="注文 20231104-7781")
    mail.set_content(CLEAN, charset="iso-2022-jp")
    mail.add_alternative(f"<p>{CLEAN}</p>", subtype="html")
    mail.add_attachment(CLEAN.encode(), maintype="text", subtype="plain", filename="memo-2023.txt")
    (tmp_path / "clean.eml").write_bytes(mail.as_bytes())
    assert scan(write_config(), tmp_path / "clean.eml")["clean.eml"]["verdict"] == "clean"
