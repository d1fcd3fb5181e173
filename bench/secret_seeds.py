"""Seeded secrets of the newer rule families for the benchmark corpus: one generator per family, with
the finding-type words that count as detecting it (`regex_bench.KIND_TYPE_WORDS`)."""

from __future__ import annotations

import base64
import random
import string
from collections.abc import Callable

B62 = string.ascii_letters + string.digits
B64 = B62 + "+/"
URLSAFE = B62 + "_-"
HEX = "0123456789abcdef"

Seed = Callable[[random.Random], tuple[str, str, str]]  # rng -> (before, value, after)


def _r(rng: random.Random, alphabet: str, size: int) -> str:
    return "".join(rng.choices(alphabet, k=size))


def _mixed(rng: random.Random, size: int, alphabet: str = B62) -> str:
    while True:
        value = _r(rng, alphabet, size)
        if (
            any(c.isupper() for c in value)
            and any(c.islower() for c in value)
            and any(c.isdigit() for c in value)
        ):
            return value


def _uuid(rng: random.Random) -> str:
    h = _r(rng, HEX, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


# kind -> (finding-type words, generator); values span what the rule reports
SECRET_SEEDS: dict[str, tuple[tuple[str, ...], Seed]] = {
    "aws_secret": (("AWS",), lambda r: ("", f"aws_secret_access_key = {_mixed(r, 40, B64)}", "")),
    "google_api_key": (("GOOGLE",), lambda r: ("GOOGLE_API_KEY=", "AIza" + _mixed(r, 35, URLSAFE), "")),
    "azure_storage": (
        ("AZURE",),
        lambda r: (
            "DefaultEndpointsProtocol=https;AccountName=st1;",
            f"AccountKey={_mixed(r, 86, B64)}==",
            "",
        ),
    ),
    "gitlab": (("GITLAB",), lambda r: ("  private_token: ", "glpat-" + _mixed(r, 20, URLSAFE), "")),
    "npm": (("NPM",), lambda r: ("//registry.npmjs.org/:_authToken=", "npm_" + _mixed(r, 36), "")),
    "pypi": (("PYPI",), lambda r: ("password = ", "pypi-AgEIcHlwaS5vcmc" + _mixed(r, 120, URLSAFE), "")),
    "slack": (
        ("SLACK",),
        lambda r: (
            "SLACK_BOT_TOKEN=",
            f"xoxb-{_r(r, '0123456789', 12)}-{_r(r, '0123456789', 13)}-{_mixed(r, 24)}",
            "",
        ),
    ),
    "sendgrid": (("SENDGRID",), lambda r: ("", f"SG.{_mixed(r, 22, URLSAFE)}.{_mixed(r, 43, URLSAFE)}", "")),
    "twilio": (("TWILIO",), lambda r: ("api key sid ", "SK" + _r(r, HEX, 32), "")),
    "stripe": (("STRIPE",), lambda r: ("Stripe.api_key = '", "sk_live_" + _mixed(r, 24), "'")),
    "openai": (("OPENAI",), lambda r: ("OPENAI_API_KEY=", "sk-proj-" + _mixed(r, 120, URLSAFE), "")),
    "anthropic": (("ANTHROPIC",), lambda r: ("", "sk-ant-api03-" + _mixed(r, 93, URLSAFE) + "AA", "")),
    "huggingface": (
        ("HUGGINGFACE",),
        lambda r: ("HF_TOKEN=", "hf_" + _r(r, string.ascii_letters, 34), ""),
    ),
    "vault": (("VAULT",), lambda r: ("VAULT_TOKEN=", "hvs." + _mixed(r, 90, URLSAFE), "")),
    "database_url": (
        ("DATABASE",),
        lambda r: (
            "DATABASE_URL=",
            f"postgres://app:{_mixed(r, 16)}@db{r.randint(1, 9)}.internal",
            ":5432/app",
        ),
    ),
    "kubernetes": (
        ("KUBERNETES",),
        lambda r: (
            "",
            f"kind: Secret\ndata:\n  password: {base64.b64encode(_mixed(r, 18).encode()).decode()}",
            "",
        ),
    ),
    "generic_secret": (("GENERIC",), lambda r: ("", f'password = "{_mixed(r, 24)}"', "")),
}
