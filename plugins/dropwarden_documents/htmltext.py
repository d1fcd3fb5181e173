"""HTML as the text a reader sees (stdlib html.parser): no markup, scripts or styles; alt/title text kept."""

from __future__ import annotations

from html.parser import HTMLParser

from dropwarden_documents.walk import LimitReached

FEED = 256 * 1024
_HIDDEN = frozenset({"script", "style", "template"})
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset", "figcaption",
        "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
        "ol", "p", "pre", "section", "table", "tbody", "td", "tfoot", "th", "thead", "title", "tr", "ul",
    }
)  # fmt: skip
_SHOWN_ATTRIBUTES = ("alt", "title", "value", "placeholder")


class _TextOfHtml(HTMLParser):
    def __init__(self, limit: int) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit
        self.hidden = 0  # depth inside script/style/template

    def add(self, text: str) -> None:
        self.size += len(text)
        if self.size > self.limit:
            raise LimitReached("more than documents.max_text_chars characters of text", fatal=True)
        self.parts.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        if tag in _BLOCK:
            self.add("\n")
        for name, value in attrs:
            if name in _SHOWN_ATTRIBUTES and value and not self.hidden:
                self.add(f" {value} ")
            elif name == "href" and value and value.lower().startswith(("mailto:", "tel:")):
                self.add(f" {value.partition(':')[2]} ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _HIDDEN:
            self.hidden -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN and self.hidden:
            self.hidden -= 1
        if tag in _BLOCK:
            self.add("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.add(data)


def html_text(markup: str, limit: int) -> str:
    """The visible text of `markup` (at most `limit` characters, beyond: the text budget is spent)."""
    parser = _TextOfHtml(limit)
    for start in range(0, len(markup), FEED):
        parser.feed(markup[start : start + FEED])
    parser.close()
    return "".join(parser.parts)
