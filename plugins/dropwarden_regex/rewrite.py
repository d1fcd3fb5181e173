"""A rule's pattern rewritten into a hyperscan prefilter expression (lookarounds out, repeats widened)."""

from __future__ import annotations

_RELAX_ABOVE = 32  # bounded repeats {m,n} with n above this are widened to {m,} for hyperscan only


_RELAX_LOW = 255  # ... and a lower bound above this is lowered to it


def prefilter_expression(pattern: str, verbose: bool = False) -> str:
    """The hyperscan expression for a rule: `pattern` without lookaround assertions (hyperscan's
    prefilter mode would approximate them anyway, at a high cost), without verbose-mode comments, and
    with large bounded repeats widened (see `relax_repeats`). Dropping a constraint can only add
    matches, so every match end of `pattern` is still reported."""
    return relax_repeats(_strip_lookarounds(pattern, verbose))


class UnsupportedSyntax(ValueError):
    """Python syntax that hyperscan would accept with another meaning (so no prefilter guarantee)."""


def _strip_lookarounds(pattern: str, verbose: bool) -> str:
    out: list[str] = []
    i, size = 0, len(pattern)
    while i < size:
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
        elif ch == "[":
            end = _class_end(pattern, i)
            if any(posix in pattern[i + 1 : end - 1] for posix in ("[:", "[=", "[.")):
                # PCRE reads [[:alpha:]] as a POSIX class, Python as a set followed by "]"
                raise UnsupportedSyntax(f"POSIX-like bracket in character class {pattern[i:end]!r}")
            out.append(pattern[i:end])
            i = end
        elif verbose and ch == "#":
            newline = pattern.find("\n", i)
            i = size if newline < 0 else newline
        elif pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            i = _group_end(pattern, i, verbose)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _class_end(pattern: str, i: int) -> int:
    """Index just past the character class starting at pattern[i] == "["."""
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):
        j += 1
    while j < len(pattern):
        if pattern[j] == "\\":
            j += 2
        elif pattern[j] == "]":
            return j + 1
        else:
            j += 1
    return len(pattern)


def _group_end(pattern: str, i: int, verbose: bool) -> int:
    """Index just past the group opening at pattern[i] == "("."""
    depth, j, size = 0, i, len(pattern)
    while j < size:
        ch = pattern[j]
        if ch == "\\":
            j += 2
            continue
        if ch == "[":
            j = _class_end(pattern, j)
            continue
        if verbose and ch == "#":
            newline = pattern.find("\n", j)
            j = size if newline < 0 else newline
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return size


def relax_repeats(pattern: str, limit: int = _RELAX_ABOVE) -> str:
    """`pattern` with bounded repeats {m,n}, n > limit, widened to {min(m, 255),}: a superset that
    hyperscan compiles much faster (a prefilter only needs every real match end reported)."""
    out: list[str] = []
    i, size = 0, len(pattern)
    in_class = False
    while i < size:
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            # a ']' right after '[' or '[^' is a literal member
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("]")
                i += 1
            continue
        if ch == "{":
            close = pattern.find("}", i)
            body = pattern[i + 1 : close] if close > 0 else ""
            low, comma, high = body.partition(",")
            if comma and high.isdigit() and (low.isdigit() or not low):
                low_n = int(low or 0)  # Python reads {,n} as {0,n}; PCRE as a literal
                out.append(f"{{{min(low_n, _RELAX_LOW)},}}" if int(high) > limit else f"{{{low_n},{high}}}")
                i = close + 1
                continue
        out.append(ch)
        i += 1
    return "".join(out)
