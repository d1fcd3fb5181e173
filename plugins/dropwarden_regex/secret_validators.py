"""Checks that confirm a secret-shaped match is a real value: entropy floors, placeholders, decodings."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from collections.abc import Callable, Collection
from urllib.parse import unquote

SecretValidator = Callable[[str | bytes], bool]

# Text that marks a documentation value, a template or a variable reference, never a real secret
# (matched case-insensitively anywhere in the value): AWS's ...EXAMPLE keys, <your-token>, ${VAR},
# {{ .Values.x }}, %(name)s, masked values.
_PLACEHOLDER = re.compile(
    r"example|placeholder|redacted|changeme|change_me|dummy|your[_-]|\$\{|\{\{|%\(|<[^>]*>|\*{4}|x{6}|\.\.\.",
    re.IGNORECASE,
)
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
_URL_SAFE_RUN = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN_PREFIX = re.compile(r"^[A-Za-z]{2,10}[_-]")
_REFERENCE = re.compile(  # an environment variable name, a dotted attribute path, a shell/env reference
    r"^(?:[A-Z][A-Z0-9_]*|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\$[A-Za-z_{(].*|%[A-Za-z_]+%)$"
)
# Tokens whose own rules report them: the generic rule stays quiet on them (one finding per value).
_KNOWN_PREFIXES = (
    "AKIA", "ASIA", "AIza", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xox", "xapp-",
    "sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_", "sk-", "hf_", "npm_", "pypi-", "SG.", "hvs.",
    "hvb.", "dop_v1_", "doo_v1_", "dor_v1_", "dckr_", "shpat_", "shpss_", "shpca_", "shppa_", "glc_", "glsa_",
    "sntry", "NRAK-", "AGE-SECRET-KEY-", "ops_", "rubygems_", "eyJ", "-----BEGIN",
)  # fmt: skip


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def shannon_entropy(value: str) -> float:
    """Bits per character of `value`'s own character distribution (0 for one repeated character)."""
    return _entropy(Counter(value).values(), len(value))


# c * log2(c) for the counts of characters in values of usual sizes: the entropy of a candidate is
# log2(n) - sum(c * log2(c)) / n, one table lookup per distinct character (validators run per candidate)
_C_LOG2_C = [0.0] + [c * math.log2(c) for c in range(1, 1025)]


def _entropy(counts: Collection[int], size: int) -> float:
    if len(counts) <= 1:
        return 0.0
    if size < len(_C_LOG2_C):
        weighted = sum(map(_C_LOG2_C.__getitem__, counts))
    else:
        weighted = sum(count * math.log2(count) for count in counts)
    return math.log2(size) - weighted / size


# _PLACEHOLDER's alternatives as plain substrings of an ASCII value in lower case (the same test, without
# a regex tried at every position), '<' ... '>' aside
_PLACEHOLDER_MARKS = (
    "example", "placeholder", "redacted", "changeme", "change_me", "dummy", "your_", "your-",
    "${", "{{", "%(", "****", "xxxxxx", "...",
)  # fmt: skip


def is_placeholder(value: str) -> bool:
    """Whether `value` is a documentation or template stand-in: a placeholder word (EXAMPLE, your-,
    changeme, ...), a template or variable reference (${VAR}, {{ x }}, <token>), a mask (****, xxxxxx),
    or a body of (almost) one repeated character."""
    if _has_placeholder_mark(value):
        return True
    body = max(_ALNUM_RUN.findall(value), key=len, default="")
    return _one_character_body(body)


def _has_placeholder_mark(value: str) -> bool:
    """Whether `value` holds one of `_PLACEHOLDER`'s marks (ASCII case ignored)."""
    if not value.isascii():
        return _PLACEHOLDER.search(value) is not None
    low = value.lower()
    if any(mark in low for mark in _PLACEHOLDER_MARKS):
        return True
    opening = low.find("<")
    return opening >= 0 and low.find(">", opening + 1) >= 0


def _one_character_body(body: str) -> bool:
    return len(body) >= 8 and max(Counter(body).values()) > len(body) // 2


def random_enough(body: str, floor: float) -> bool:
    """Whether `body` looks generated: enough distinct characters, no character in half of it, and
    Shannon entropy at least `floor` bits per character."""
    if not body:
        return False
    counts = Counter(body)
    if max(counts.values()) > len(body) // 2 or len(counts) < min(8, len(body) // 3):
        return False
    return _entropy(counts.values(), len(body)) >= floor


def secret_token(value: str | bytes) -> bool:
    """A prefixed token (ghp_…, xoxb-…, sk_live_…): not a placeholder, and its longest alphanumeric
    run (the random body, the prefix being shorter) random enough. A body in URL-safe base64 (GitLab's
    glpat-…) may be cut into short alphanumeric runs by its '-' and '_': then its longest run of
    alphanumerics, '-' and '_' is the body."""
    text = _text(value)
    if _has_placeholder_mark(text):
        return False
    body = max(_ALNUM_RUN.findall(text), key=len, default="")
    if len(body) < 16:
        if _one_character_body(body):
            return False
        body = max([body, *_URL_SAFE_RUN.findall(_TOKEN_PREFIX.sub("", text, count=1))], key=len)
    # (a body of 16 or more is one character's at most half: `random_enough` checks that as well)
    return random_enough(body, 3.0 if len(body) >= 16 else 2.5)


_ASSIGNED = re.compile(r"""(?:["'`]([^"'`]*)["'`]|([^\s"'`=:]+))\s*[;,]?\s*$""")


def _assigned_value(text: str) -> str:
    """The value at the end of a `keyword = value` match: the last quoted string, else the last word."""
    found = _ASSIGNED.search(text)
    if not found:
        return ""
    return found.group(1) if found.group(1) is not None else found.group(2)


def keyed_secret(value: str | bytes) -> bool:
    """A value assigned to a service's keyword (datadog_api_key = …): not a placeholder nor a
    variable reference, and random enough (3 bits per character)."""
    assigned = _assigned_value(_text(value))
    if is_placeholder(assigned) or _REFERENCE.match(assigned):
        return False
    return random_enough(assigned, 3.0)


GENERIC_ENTROPY_FLOOR = 3.5  # bits per character: a random 16+ character value is above, words below


def generic_secret(value: str | bytes) -> bool:
    """A keyword-assigned secret (password = "…", api_key: "…"): at least 12 characters, not a
    placeholder, variable reference or path, not a token another rule reports, two or more kinds of
    character, and Shannon entropy at least GENERIC_ENTROPY_FLOOR."""
    assigned = _assigned_value(_text(value))
    if len(assigned) < 12 or assigned.startswith(_KNOWN_PREFIXES):  # cheapest first: most are tokens
        return False
    if assigned.startswith(("/", "./", "~/", "http:", "https:")) or _REFERENCE.match(assigned):
        return False
    if is_placeholder(assigned):
        return False
    kinds = sum(any(map(test, assigned)) for test in (str.islower, str.isupper, str.isdigit, _is_symbol))
    return kinds >= 2 and shannon_entropy(assigned) >= GENERIC_ENTROPY_FLOOR


def _is_symbol(ch: str) -> bool:
    return not ch.isalnum()


def aws_secret(value: str | bytes) -> bool:
    """An AWS secret access key (the last 40 base64 characters of the match): not AWS's documentation
    key (…EXAMPLEKEY), upper and lower case letters both present, random enough."""
    text = _text(value)
    key = text.rstrip("\"' \t;,")[-40:]
    if len(key) != 40 or is_placeholder(key):
        return False
    if not (any(c.islower() for c in key) and any(c.isupper() for c in key)):
        return False
    return random_enough(key, 4.0)


_URL_CREDENTIALS = re.compile(r"://([^:/?#@\s]*):([^@/?#\s]*)@")
_DOC_PASSWORDS = frozenset(
    {"password", "passwd", "pass", "pwd", "secret", "changeme", "admin", "root", "test", "user",
     "username", "example", "mypassword", "your_password", "yourpassword", "xxx", "foo", "bar", "***"}
)  # fmt: skip


def url_credentials(value: str | bytes) -> bool:
    """A URL with a real password (scheme://user:password@host): not empty, not a documentation word
    (password, pass, secret, ...), not a placeholder or variable reference."""
    found = _URL_CREDENTIALS.search(_text(value))
    if not found:
        return False
    password = unquote(found.group(2))
    return _real_password(password)


def _real_password(password: str) -> bool:
    if len(password) < 4 or password.lower() in _DOC_PASSWORDS or is_placeholder(password):
        return False
    return not password.startswith(("$", "%", "{")) and len(set(password)) > 2


def password_entry(value: str | bytes) -> bool:
    """The last field of a stored-credentials line (.netrc `password x`, .pgpass `…:x`, a NuGet
    `value="x"`) is a real password: not a documentation word, placeholder or variable reference."""
    text = _text(value).rstrip()
    if text.endswith("/>"):  # NuGet <add key="ClearTextPassword" value="…" />
        quoted = re.findall(r'"([^"]*)"', text)
        return bool(quoted) and _real_password(quoted[-1])
    last = re.split(r"[\s:]", text)[-1]
    return _real_password(last.strip("\"'"))


def _b64decode(text: str) -> bytes | None:
    cleaned = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def discord_token(value: str | bytes) -> bool:
    """A Discord bot token: its first segment is the base64 of the bot's numeric id (17-20 digits)."""
    text = _text(value)
    decoded = _b64decode(text.split(".", 1)[0])
    return decoded is not None and decoded.isdigit() and 17 <= len(decoded) <= 20 and secret_token(text)


def docker_auth(value: str | bytes) -> bool:
    """A Docker config `"auth": "<base64>"` entry: decodes to `user:password` with a real password."""
    quoted = re.findall(r'"([^"]*)"', _text(value))
    decoded = _b64decode(quoted[-1]) if quoted else None
    if decoded is None:
        return False
    try:
        user, sep, password = decoded.decode("utf-8").partition(":")
    except UnicodeDecodeError:
        return False
    return bool(user and sep) and user.isprintable() and _real_password(password)


_YAML_ENTRY = re.compile(r"^[ \t]+[\w.-]+:[ \t]*[\"']?([^\s\"']+)", re.MULTILINE)


def kubernetes_secret(value: str | bytes) -> bool:
    """A Kubernetes Secret manifest with at least one real value under data/stringData: a `data`
    value that decodes from base64 to something not a placeholder, or a `stringData` value that is
    not one (templated manifests, {{ .Values.x }}, stay quiet)."""
    text = _text(value)
    for found in _YAML_ENTRY.finditer(text):
        entry = found.group(1)
        if entry in ("|", ">", "|-", ">-") or is_placeholder(entry):
            continue
        decoded = _b64decode(entry)
        plain = decoded.decode("utf-8", "replace") if decoded else entry
        if len(plain) >= 4 and not is_placeholder(plain) and plain.lower() not in _DOC_PASSWORDS:
            return True
    return False


_PEM_BODY = re.compile(r"(?:^|\\n|\n)([A-Za-z0-9+/=]{40,})")


def private_key_body(value: str | bytes) -> bool:
    """A private key block holds key material: its first base64 line is random enough (a block of
    xxxx or AAAA lines, or one around prose, is not a key)."""
    found = _PEM_BODY.search(_text(value))
    return bool(found) and not is_placeholder(found.group(1)) and random_enough(found.group(1), 3.5)


SECRET_VALIDATORS: dict[str, SecretValidator] = {
    "secret_token": secret_token,
    "keyed_secret": keyed_secret,
    "generic_secret": generic_secret,
    "aws_secret": aws_secret,
    "url_credentials": url_credentials,
    "password_entry": password_entry,
    "discord_token": discord_token,
    "docker_auth": docker_auth,
    "kubernetes_secret": kubernetes_secret,
    "private_key_body": private_key_body,
}
