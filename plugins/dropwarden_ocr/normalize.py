"""Normalise OCR text before matching: width folding, dash look-alikes and stray spaces inside digit runs.

OCR of Japanese documents reads ０９０－１２３４－５６７８ as full-width digits, the hyphen as ー, 一 or
—, and splits digit groups with spaces ("0 9 0一1 234"). The rules expect 090-1234-5678. Every output
character remembers which input character it came from (`origin`), so that a match in the normalised
text maps back to the words, and the bounding boxes, it was read from.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass

# Read as a hyphen when between two digits (after width folding): ASCII hyphen, the Unicode dashes,
# minus, box-drawing lines, the long-vowel mark ー, the kanji 一 ("one"), small hyphen-minus.
_DASHES = frozenset("-‐‑‒–—―−─━ー一﹣⁃")
# In a vertical line a hyphen stands upright: OCR reads it as a vertical bar.
_VERTICAL_DASHES = _DASHES | frozenset("|丨│┃｜ǀ_")  # an upright hyphen may also come out as "_"
# Read as the long-vowel mark after katakana (マイナンバ- → マイナンバー, so context words match).
_KANA_DASHES = frozenset("-‐‑‒–—―−─━")
_ZERO_LIKE = frozenset("〇Oo")
_LABEL = re.compile(r"(?i)(?<![A-Za-z])(?:tel|fax)[.:]?(?=[0-9Oo〇])")
_SPACES = frozenset(" \t")
_EMAIL_LABELS = frozenset({"mail", "email", "e-mail", "to", "from", "cc", "contact"})
# 個 of 個人番号 (the My Number rules' context word) as OCR misreads it: a look-alike kanji, or its two
# halves read as dashes in a column. Only at a word's start, and only before digits (the rules need them).
_MY_NUMBER_WORD = re.compile(r"(?<![\u3400-\u9fff々])(?:[固箇偶個]|[ー一―—-]{2})人番号(?=[^0-9\n]{0,4}[0-9])")
_HALF_WIDTH_VOICING = frozenset("\uff9e\uff9f")  # ﾞ ﾟ: NFKC turns them into combining marks


@dataclass(frozen=True)
class Normalized:
    """Normalised text, and for each of its characters the index of the input character it came from."""

    text: str
    origin: tuple[int, ...]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The normalised range covering input characters [start, end)."""
        return bisect.bisect_left(self.origin, start), bisect.bisect_left(self.origin, end)


def normalize(text: str, *, vertical: bool = False) -> Normalized:
    """Fold widths and compatibility forms (NFKC), then repair digit runs:

    - a dash look-alike (or two) between digits becomes '-', and spaces around it go (090 ー 1234 →
      090-1234);
    - 〇 next to a digit, O/o between digits or starting a digit run, become 0;
    - a phone label run into its number gets its space back (TEL03-1234-5678 → TEL 03-1234-5678);
    - spaces between digits go where a side is a lone digit (0 9 0 → 090, 1 234 → 1234) and shrink to
      one space elsewhere (4111  1111 → 4111 1111: the rules read grouped numbers with single spaces);
    - a hyphen after katakana becomes ー (マイナンバ- → マイナンバー);
    - the separators inside a Luhn-valid 13-19 digit card number OCR grouped its own way (not as cards
      are printed) go (4111 111111111111 → 4111111111111111), see `_card_group_separators`.
    `vertical`: the text was read from a vertical line, where a hyphen may come out as a vertical bar.
    """
    chars, origin = _fold(text)
    _context_words(chars, origin)
    dashes = _VERTICAL_DASHES if vertical else _DASHES
    _split_labels(chars, origin)
    _zeros(chars)
    out_chars: list[str] = []
    out_origin: list[int] = []
    i, n = 0, len(chars)
    while i < n:
        ch = chars[i]
        if ch in _SPACES or ch in dashes:
            end = _separator_end(chars, i, dashes)
            if out_chars and _is_digit(out_chars[-1]) and end < n and _is_digit(chars[end]):
                run = chars[i:end]
                if any(c in dashes for c in run):
                    if sum(c in dashes for c in run) <= (3 if vertical else 2):
                        dash = next(k for k in range(i, end) if chars[k] in dashes)
                        out_chars.append("-")
                        out_origin.append(origin[dash])
                        i = end
                        continue
                elif _lone_digit_before(out_chars) or _lone_digit_after(chars, end):
                    i = end  # spaces dropped
                    continue
                else:
                    out_chars.append(" ")
                    out_origin.append(origin[i])
                    i = end
                    continue
        if ch in _KANA_DASHES and out_chars and _is_katakana(out_chars[-1]):
            ch = "ー"
        out_chars.append(ch)
        out_origin.append(origin[i])
        i += 1
    drop = _email_spaces(out_chars) | _email_debris(out_chars) | _card_group_separators(out_chars)
    if drop:
        out_origin = [o for k, o in enumerate(out_origin) if k not in drop]
        out_chars = [c for k, c in enumerate(out_chars) if k not in drop]
    return Normalized("".join(out_chars), tuple(out_origin))


def _email_spaces(chars: list[str]) -> set[int]:
    """Spaces OCR put inside an e-mail address: around its '@', after a dot of its domain, after a
    '.', '_' or '-' of its local part (yamada_ taro@example. co. jp → yamada_taro@example.co.jp)."""
    drop: set[int] = set()
    n = len(chars)
    for at, ch in enumerate(chars):
        if ch != "@":
            continue
        # the domain: labels and dots, a space allowed after a dot (or right after the '@')
        k = at + 1
        while k < n:
            if chars[k] == " " and k + 1 < n and _is_alnum(chars[k + 1]) and chars[k - 1] in ".@":
                drop.add(k)
            elif not (_is_alnum(chars[k]) or chars[k] in ".-"):
                break
            k += 1
        # the local part, backwards: a space allowed right before the '@' or after '.', '_', '-'
        k = at - 1
        while k > 0:
            if chars[k] == " ":
                before = chars[k - 1]
                if not ((k == at - 1 and _is_alnum(before)) or (before in "._-" and _is_alnum(chars[k + 1]))):
                    break
                drop.add(k)
            elif not (_is_alnum(chars[k]) or chars[k] in "._%+-"):
                break
            k -= 1
    return drop


def _email_debris(chars: list[str]) -> set[int]:
    """What OCR put at the ends of an e-mail's local part that no address holds: dots starting it (a
    vertical full-width colon read as "..." in メール：taro@...; an address never starts with a dot), and a
    colon or semicolon right before the '@' (a sliver of the '@' read on its own: taro:@example.com)."""
    drop: set[int] = set()
    for at, ch in enumerate(chars):
        if ch != "@" or at == 0:
            continue
        sliver = chars[at - 1] in ":;" and at >= 2 and _is_alnum(chars[at - 2])
        if sliver and not _label_before(chars, at - 1):
            drop.add(at - 1)
        k = at - 1
        while k >= 0 and (_is_alnum(chars[k]) or chars[k] in "._%+-" or k in drop):
            k -= 1
        start = k + 1  # the local part as read, its leading dots included
        dots = start
        while dots < at and chars[dots] == ".":
            dots += 1
        if dots > start and dots < at and _is_alnum(chars[dots]):
            drop.update(range(start, dots))  # what is before them is no part of an address
    return drop


def _label_before(chars: list[str], end: int) -> bool:
    """Whether the word ending at `end` is a label ("Mail:@example.com" names no local part)."""
    k = end
    while k > 0 and (_is_alnum(chars[k - 1]) or chars[k - 1] == "-"):
        k -= 1
    return "".join(chars[k:end]).lower() in _EMAIL_LABELS


def _card_group_separators(chars: list[str]) -> set[int]:
    """The separators inside a payment card number OCR grouped its own way ("4111 111111111111" for
    4111 1111 1111 1111): within a run of digit groups joined by single spaces or hyphens, the longest
    stretch of whole groups, its first group at least 4 digits long, holding 13-19 digits, starting 2-6
    and passing the Luhn check. Dropping them gives the contiguous form, which the card rule reads (and
    checks issuer and length again). A run next to a token of letters and digits (an IBAN's "DE89
    3704 ...") is left alone."""
    drop: set[int] = set()
    n = len(chars)
    i = 0
    while i < n:
        if not _is_digit(chars[i]) or (i > 0 and _is_alnum(chars[i - 1])):
            i += 1
            continue
        groups: list[tuple[int, int]] = []  # (start, end) of each digit group of the run
        j = i
        while True:
            k = j
            while k < n and _is_digit(chars[k]):
                k += 1
            groups.append((j, k))
            if k + 1 < n and chars[k] in " -" and _is_digit(chars[k + 1]):
                j = k + 1
                continue
            break
        i = k + 1
        if (k < n and _is_alnum(chars[k])) or _mixed_token_beside(chars, groups[0][0], groups[-1][1]):
            continue
        best = _card_stretch(chars, groups)
        if best is not None and not _grouped_as_printed(chars, groups[best[0] : best[1] + 1]):
            first, last = best
            drop.update(groups[g][1] for g in range(first, last))
    return drop


def _card_stretch(chars: list[str], groups: list[tuple[int, int]]) -> tuple[int, int] | None:
    """(first, last) group indexes of the longest stretch of several groups that reads as a card number."""
    best: tuple[int, int, int] | None = None  # (digits, first, last)
    for first in range(len(groups)):
        if groups[first][1] - groups[first][0] < 4 or chars[groups[first][0]] not in "23456":
            continue
        digits = ""
        for last in range(first, len(groups)):
            digits += "".join(chars[groups[last][0] : groups[last][1]])
            if len(digits) > 19:
                break
            longer = best is None or len(digits) > best[0]
            if last > first and len(digits) >= 13 and longer and _luhn(digits):
                best = (len(digits), first, last)
    return None if best is None else (best[1], best[2])


# Group lengths of cards as printed (4-4-4-4, 4-4-4-3, 4-4-4-4-3, Amex/Diners 4-6-5 and 4-6-4): the card
# rule reads these itself, so they are left as read.
_PRINTED_GROUPS = frozenset({(4, 4, 4, 4), (4, 4, 4, 3), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4)})


def _grouped_as_printed(chars: list[str], groups: list[tuple[int, int]]) -> bool:
    lengths = tuple(end - start for start, end in groups)
    return lengths in _PRINTED_GROUPS and len({chars[end] for _, end in groups[:-1]}) == 1


def _mixed_token_beside(chars: list[str], start: int, end: int) -> bool:
    """Whether the token across a single space or hyphen before `start` or after `end` holds both
    letters and digits (the neighbouring groups of an IBAN or a reference code)."""
    spans = []
    if start >= 2 and chars[start - 1] in " -":
        k = start - 1
        while k > 0 and _is_alnum(chars[k - 1]):
            k -= 1
        spans.append(chars[k : start - 1])
    if end + 1 < len(chars) and chars[end] in " -":
        k = end + 1
        while k < len(chars) and _is_alnum(chars[k]):
            k += 1
        spans.append(chars[end + 1 : k])
    return any(any(c.isdigit() for c in t) and any(c.isalpha() for c in t) for t in spans)


def _luhn(digits: str) -> bool:
    total = 0
    for index, ch in enumerate(reversed(digits)):
        d = (ord(ch) - 48) * (2 if index % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _is_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _fold(text: str) -> tuple[list[str], list[int]]:
    """NFKC per character cluster (a base and its combining marks), keeping each output's origin."""
    chars: list[str] = []
    origin: list[int] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        while j < n and (unicodedata.combining(text[j]) or text[j] in _HALF_WIDTH_VOICING):
            j += 1
        cluster = text[i:j]
        folded = cluster if cluster.isascii() else unicodedata.normalize("NFKC", cluster)
        for ch in folded:
            chars.append(ch)
            origin.append(i)
        i = j
    return chars, origin


def _context_words(chars: list[str], origin: list[int]) -> None:
    """Context words misread in a way that loses them, put right (in place): 固人番号 or ーー人番号
    before digits is 個人番号 (see `_MY_NUMBER_WORD`)."""
    text = "".join(chars)
    for match in reversed(list(_MY_NUMBER_WORD.finditer(text))):
        start, end = match.start(), match.end() - 3  # the look-alike: one character or two
        chars[start:end] = ["個"]
        origin[start:end] = [origin[start]]


def _split_labels(chars: list[str], origin: list[int]) -> None:
    """A space after TEL/FAX (any case, not inside a word) run into a digit, O or 〇 (in place)."""
    text = "".join(chars)
    for match in reversed(list(_LABEL.finditer(text))):
        chars.insert(match.end(), " ")
        origin.insert(match.end(), origin[match.end()])


def _zeros(chars: list[str]) -> None:
    """〇 beside a digit, and O/o with digits on both sides or starting a digit run, are read as 0."""
    for i, ch in enumerate(chars):
        if ch not in _ZERO_LIKE:
            continue
        before = i > 0 and _is_digit(chars[i - 1])
        start = i == 0 or not (chars[i - 1].isascii() and chars[i - 1].isalnum())
        after = i + 1 < len(chars) and (_is_digit(chars[i + 1]) or chars[i + 1] in _ZERO_LIKE)
        digit_after = i + 1 < len(chars) and _is_digit(chars[i + 1])
        if (before and after) or (start and digit_after) or (ch == "〇" and (before or after)):
            chars[i] = "0"


def _separator_end(chars: list[str], start: int, dashes: frozenset[str]) -> int:
    """The end of a run of spaces and at most a few dash look-alikes starting at `start`."""
    end = start
    while end < len(chars) and end - start < 8 and (chars[end] in _SPACES or chars[end] in dashes):
        end += 1
    return end


def _lone_digit_before(out: list[str]) -> bool:
    return len(out) < 2 or not _is_digit(out[-2])


def _lone_digit_after(chars: list[str], index: int) -> bool:
    return index + 1 >= len(chars) or not _is_digit(chars[index + 1])


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _is_katakana(ch: str) -> bool:
    return "\u30a1" <= ch <= "\u30fa" or ch == "ー"
