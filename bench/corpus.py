"""Deterministic benchmark corpus: English and Japanese prose, logs, code/config lines and CSV rows, with
sparse seeded PII and secrets whose positions are recorded so that recall can be checked.

The generator is seeded and versioned; the result is cached under `bench/out/` (text + JSON manifest)
so that reruns only read it back. Text is cut into ~1 MB chunks at line boundaries: the daemon judges
files one at a time, so each chunk plays one file.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from secret_seeds import SECRET_SEEDS  # bench/ is sys.path[0]

GENERATOR_VERSION = 5  # bump on any change to the output: it names the cache files
MB = 1_000_000  # bytes; every "MB" in the benchmark is 10^6 bytes of UTF-8 text
DEFAULT_CHUNK_BYTES = MB
# The corpus as it was when issue 15 was filed (generator v3): only the families the rule set had then
# are seeded, in the shapes of then. `issue_time=True` reproduces it byte for byte.
ISSUE_TIME_VERSION = 3
ISSUE_TIME_KINDS = ("email", "phone", "card", "ssn", "iban", "my_number", "aws_key", "github_token", "pem",
                    "jwt")  # fmt: skip
MEAN_SEED_GAP = 10_000  # bytes between seeded items, on average

# fmt: off
_EN_TEXT = (
    "the of and to in is was for on that with as by at from this be are it an or which have not has had "
    "were but all their they one can there been more also its new other some when would first about into "
    "than time only may after over such most these two many where through so made between then each year "
    "under well both before during three while since against being same another around however system "
    "report customer account service order delivery invoice payment shipment warehouse quarter revenue "
    "team meeting schedule project release build deploy cluster node request response latency budget "
    "review policy access storage backup migration upgrade incident summary contract supplier region "
    "network server database cache queue worker thread process memory disk file folder upload download "
    "please confirm attached updated pending approved rejected scheduled completed delayed expected "
    "monday tuesday wednesday thursday friday morning afternoon evening week month draft final version"
)
_JA_TEXT = (
    "会議 資料 報告 顧客 注文 請求書 配送 倉庫 予算 計画 担当者 部署 本日 明日 来週 先月 確認 対応 "
    "進捗 課題 仕様 設計 開発 試験 本番 環境 障害 復旧 手順 申請 承認 契約 更新 送付 受領 連絡 "
    "システム サーバー データベース バックアップ ネットワーク アップロード ファイル フォルダ ログ "
    "お客様 取引先 営業 経理 総務 人事 品質 改善 提案 検討 結果 状況 予定 変更 追加 削除 完了 "
    "東京 大阪 名古屋 福岡 札幌 本社 支店 工場 出荷 在庫 納品 見積 発注 売上 四半期 年度"
)
EN_WORDS = tuple(_EN_TEXT.split())
JA_WORDS = tuple(_JA_TEXT.split())
JA_PARTICLES = ("は", "の", "を", "に", "が", "で", "と", "も", "から", "まで", "について", "として")
JA_ENDINGS = (
    "です。", "ます。", "しました。", "してください。", "となります。", "の予定です。", "を確認中です。",
)
LOG_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
SERVICES = ("api", "worker-3", "billing", "auth", "ingest", "scheduler", "gateway", "search")
PATHS = ("/api/v1/orders", "/api/v1/users/me", "/healthz", "/api/v2/invoices", "/static/app.js", "/login")
DOMAINS = (
    "example.com", "example.org", "mail.example.net", "corp.example.co.jp", "example.jp", "test.example.io",
)
FIRST = ("john", "mary", "akira", "yuki", "li", "anna", "david", "sato", "kenji", "olivia", "noah", "emma")
LAST = ("smith", "tanaka", "suzuki", "brown", "garcia", "yamamoto", "lee", "muller", "kobayashi", "wilson")
NANP_AREAS = (212, 213, 305, 312, 404, 415, 503, 512, 617, 646, 702, 718, 808, 917, 206, 303)
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
B32 = string.ascii_uppercase + "234567"
ALNUM = string.ascii_letters + string.digits
B64 = string.ascii_letters + string.digits + "+/"
# fmt: on


@dataclass(frozen=True)
class Seeded:
    """One planted item: its kind and its character span inside chunk `chunk`."""

    kind: str
    chunk: int
    start: int
    end: int


@dataclass
class Corpus:
    chunks: list[str]
    seeded: list[Seeded]
    path: Path
    built: bool  # True when generated in this run, False when read from the cache

    @property
    def nbytes(self) -> int:
        return sum(len(c.encode("utf-8")) for c in self.chunks)

    def prefix(self, nbytes: int) -> list[str]:
        """The first chunks holding at least `nbytes` bytes (or all of them)."""
        out: list[str] = []
        total = 0
        for chunk in self.chunks:
            if total >= nbytes:
                break
            out.append(chunk)
            total += len(chunk.encode("utf-8"))
        return out


# --- checksummed values ---------------------------------------------------------------------------------


def luhn_complete(digits: str) -> str:
    """Append the Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return digits + str((10 - total % 10) % 10)


def luhn_valid(digits: str) -> bool:
    return luhn_complete(digits[:-1]) == digits


def iban_complete(country: str, bban: str) -> str:
    """Compute the two ISO 13616 check digits."""
    rearranged = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in rearranged))
    return f"{country}{98 - number % 97:02d}{bban}"


def my_number_complete(eleven: str) -> str:
    """Append the check digit of a Japanese individual number (マイナンバー)."""
    total = 0
    for n, ch in enumerate(reversed(eleven), start=1):
        q = n + 1 if n <= 6 else n - 5
        total += int(ch) * q
    rem = total % 11
    return eleven + str(0 if rem <= 1 else 11 - rem)


def jp_licence_complete(ten: str) -> str:
    """Ten digits (prefecture code first) + the licence check digit + reissue count 0."""
    total = sum(int(ch) * w for ch, w in zip(ten, (5, 4, 3, 2, 7, 6, 5, 4, 3, 2), strict=True))
    return ten + str((11 - total % 11) % 10) + "0"


def base62(n: int, width: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = BASE62[r] + out
    return out.rjust(width, "0")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --- the generator ---------------------------------------------------------------------------------------


class _Gen:
    def __init__(self, seed: int, issue_time: bool = False) -> None:
        self.r = random.Random(seed)
        self.issue_time = issue_time  # the v3 shapes (see ISSUE_TIME_VERSION)

    # values ------------------------------------------------------------------------------------------

    def digits(self, n: int) -> str:
        return "".join(self.r.choices(string.digits, k=n))

    def hexs(self, n: int) -> str:
        return f"{self.r.getrandbits(4 * n):0{n}x}"

    def uuid(self) -> str:
        h = self.hexs(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def timestamp(self) -> str:
        r = self.r
        return (
            f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:"
            f"{r.randint(0, 59):02d}:{r.randint(0, 59):02d}.{r.randint(0, 999):03d}Z"
        )

    def email(self) -> str:
        r = self.r
        sep = r.choice((".", "_", ""))
        number = str(r.randint(1, 99)) if r.random() < 0.3 else ""
        if self.issue_time:
            return f"{r.choice(FIRST)}{sep}{r.choice(LAST)}{number}@{r.choice(DOMAINS)}"
        punycode = ("xn--d1acufc.xn--p1ai", "xn--80ak6aa92e.com")
        domain = r.choice(DOMAINS) if r.random() < 0.9 else r.choice(punycode)
        return f"{r.choice(FIRST)}{sep}{r.choice(LAST)}{number}@{domain}"

    def nanp_exchange(self) -> int:
        """A central-office code that is in service: not N11, not 555 (fictional numbers)."""
        while True:
            exchange = self.r.randint(200, 999)
            if exchange % 100 != 11 and exchange != 555:
                return exchange

    def phone(self) -> str:
        r = self.r
        style = r.randrange(3)
        if style == 0:  # NANP
            area, exch, line = r.choice(NANP_AREAS), self.nanp_exchange(), self.digits(4)
            fmt = r.choice(
                ("({a}) {e}-{l}", "{a}-{e}-{l}", "{a}.{e}.{l}", "+1 {a}-{e}-{l}", "+1 ({a}) {e}-{l}")
            )
            return fmt.format(a=area, e=exch, l=line)
        if style == 1:  # Japanese domestic
            return r.choice(
                (
                    f"0{r.choice('789')}0-{r.randint(1000, 9999)}-{self.digits(4)}",
                    f"03-{r.randint(2000, 9999)}-{self.digits(4)}",
                    f"06-{r.randint(2000, 9999)}-{self.digits(4)}",
                    f"045-{r.randint(200, 999)}-{self.digits(4)}",
                    f"0120-{r.randint(100, 999)}-{self.digits(3)}",
                )
            )
        e164 = (
            f"+44 20 {r.randint(7000, 8999)} {self.digits(4)}",
            f"+81 {r.choice('789')}0 {self.digits(4)} {self.digits(4)}",
            f"+81-3-{self.digits(4)}-{self.digits(4)}",
            f"+49 30 {r.randint(2, 9)}{self.digits(7)}",
            f"+33 1 {self.digits(2)} {self.digits(2)} {self.digits(2)} {self.digits(2)}",
            f"+1{r.choice(NANP_AREAS)}{self.nanp_exchange()}{self.digits(4)}",
        )
        if self.issue_time:
            return r.choice(e164)
        return r.choice(
            (
                *e164,
                f"+44 (0)20 {r.randint(7000, 8999)} {self.digits(4)}",
                f"+90 (532) {self.digits(3)} {self.digits(2)} {self.digits(2)}",
            )
        )

    def card(self) -> str:
        r = self.r
        brand = r.randrange(4)
        if brand == 3:  # Amex, 15 digits, 4-6-5
            number = luhn_complete(r.choice(("34", "37")) + self.digits(12))
            groups = [number[:4], number[4:10], number[10:]]
        else:
            mastercard = f"5{r.randint(1, 5)}"
            if not self.issue_time:
                mastercard = r.choice((mastercard, "5019"))
            prefix = ("4", mastercard, str(r.randint(3528, 3589)))[brand]
            number = luhn_complete(prefix + self.digits(15 - len(prefix)))
            groups = [number[i : i + 4] for i in range(0, 16, 4)]
        return r.choice((" ", "-", "")).join(groups)

    def ssn(self) -> str:
        r = self.r
        area = r.randint(1, 899)
        while area == 666:
            area = r.randint(1, 899)
        pattern = f"{area:03d}{{0}}{r.randint(1, 99):02d}{{0}}{r.randint(1, 9999):04d}"
        return pattern.format("-" if self.issue_time else r.choice("-- ."))

    def iban(self) -> str:
        r = self.r
        country = r.choice(("DE", "GB", "FR", "NL", "ES"))
        bban = {
            "DE": lambda: self.digits(18),
            "GB": lambda: "".join(r.choices(string.ascii_uppercase, k=4)) + self.digits(14),
            "FR": lambda: self.digits(23),
            "NL": lambda: "".join(r.choices(string.ascii_uppercase, k=4)) + self.digits(10),
            "ES": lambda: self.digits(20),
        }[country]()
        iban = iban_complete(country, bban)
        if r.random() < 0.6:
            separator = " " if self.issue_time else r.choice("   -")
            return separator.join(iban[i : i + 4] for i in range(0, len(iban), 4))
        return iban

    def my_number(self) -> str:
        number = my_number_complete(str(self.r.randint(1, 9)) + self.digits(10))
        sep = self.r.choice((" ", "-", ""))
        return sep.join((number[:4], number[4:8], number[8:]))

    def jp_licence(self) -> str:
        prefecture = self.r.choice(("10", "30", "44", "45", "54", "62", "90"))
        return jp_licence_complete(prefecture + f"{self.r.randint(70, 124) % 100:02d}" + self.digits(6))

    def jp_passport(self) -> str:
        return self.r.choice(("TK", "TR", "MZ", "TZ")) + self.digits(7)

    def jp_bank_account(self) -> str:
        return str(self.r.randint(1, 9)) + self.digits(6)

    def jp_postal(self) -> str:
        return f"{self.r.randint(100, 999)}-{self.digits(4)}"

    def aws_key(self) -> str:
        return "AKIA" + "".join(self.r.choices(B32, k=16))

    def github_token(self) -> str:
        body = "".join(self.r.choices(ALNUM, k=30))
        return "ghp_" + body + base62(binascii.crc32(body.encode()), 6)

    def pem(self) -> str:
        label = self.r.choice(("RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"))
        body = "\n".join("".join(self.r.choices(B64, k=64)) for _ in range(self.r.randint(3, 6)))
        return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"

    def jwt(self) -> str:
        r = self.r
        header = b64url(b'{"alg":"HS256","typ":"JWT"}')
        iat = r.randint(1_600_000_000, 1_800_000_000)
        claims = f'{{"sub":"{r.randint(1000, 999999)}","name":"{r.choice(FIRST)}","iat":{iat}}}'
        return f"{header}.{b64url(claims.encode())}.{b64url(r.randbytes(32))}"

    # negatives ---------------------------------------------------------------------------------------

    def en_line(self) -> str:
        r = self.r
        sentences = []
        for _ in range(r.randint(1, 4)):
            words = r.choices(EN_WORDS, k=r.randint(6, 18))
            if r.random() < 0.15:
                words.insert(r.randrange(len(words)), str(r.randint(2, 5000)))
            sentences.append(" ".join(words).capitalize() + r.choice((".", ".", ".", "?", ":")))
        return " ".join(sentences)

    def ja_line(self) -> str:
        r = self.r
        out = []
        for _ in range(r.randint(1, 3)):
            words = r.choices(JA_WORDS, k=r.randint(3, 8))
            parts = [w + r.choice(JA_PARTICLES) for w in words[:-1]]
            if r.random() < 0.2:
                parts.append(f"{r.randint(1, 12)}月{r.randint(1, 28)}日")
            out.append("".join(parts) + words[-1] + r.choice(JA_ENDINGS))
        return "".join(out)

    def log_line(self) -> str:
        r = self.r
        return (
            f"{self.timestamp()} {r.choice(LOG_LEVELS)} [{r.choice(SERVICES)}] request_id={self.uuid()} "
            f"user_id={r.randint(1, 10**7)} {r.choice(PATHS)}/{r.randint(1, 99999)} status="
            f"{r.choice((200, 200, 200, 201, 204, 304, 404, 500))} latency_ms={r.randint(1, 4000)} "
            f"bytes={r.randint(0, 10**6)} src=10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
        )

    def code_line(self) -> str:
        r = self.r
        w = r.choice(EN_WORDS[60:])
        return r.choice(
            (
                f'sha256 = "{self.hexs(64)}"',
                f"commit {self.hexs(40)}",
                f'  "etag": "W/\\"{self.hexs(32)}\\"",',
                f"build_id: {self.uuid()}",
                f"image: registry.example.com/{w}@sha256:{self.hexs(64)}",
                f"    def handle_{w}(self, request, timeout={r.randint(1, 120)}):",
                f"        return self._{w}_cache.get(key, default=None)",
                f"{w}_timeout_ms = {r.randint(100, 60000)}",
                f'version = "{r.randint(0, 9)}.{r.randint(0, 40)}.{r.randint(0, 200)}"',
                f"export {w.upper()}_PORT={r.randint(1024, 65535)}",
                f"DB_PASSWORD=${{{w.upper()}_DB_PASSWORD}}",
                f"  integrity: sha512-{''.join(r.choices(B64, k=86))}==",
                f"# TODO({r.choice(FIRST)}): revisit the {w} retry policy after {self.timestamp()[:10]}",
            )
        )

    def csv_line(self) -> str:
        r = self.r
        tracking = self.digits(15)
        tracking += str((int(luhn_complete(tracking)[-1]) + 1 + r.randrange(9)) % 10)  # never Luhn-valid
        return (
            f"ORD-2025-{self.digits(7)},{self.timestamp()[:10]},{r.choice(EN_WORDS[60:])},"
            f"{r.randint(1, 50)},{r.randint(1, 99999)}.{self.digits(2)},SKU-{self.hexs(8).upper()},"
            f"{tracking},{self.digits(12)}"
        )


def _seed_line(g: _Gen, kind: str, japanese: bool) -> tuple[str, str, str]:
    """(prefix, value, suffix) of a line that carries one planted item."""
    r = g.r
    ctx: dict[str, Callable[[], tuple[str, str]]] = {
        "email": lambda: r.choice(
            (
                ("Please contact ", " for the updated invoice."),
                ("連絡先：", "までお願いします。"),
                ("From: ", ""),
            )
        ),
        "phone": lambda: r.choice(
            (("You can reach me at ", " after 5pm."), ("電話番号：", ""), ("tel: ", " (office)"))
        ),
        "card": lambda: r.choice(
            (("Card number ", " exp 09/28"), ("カード番号 ", " 有効期限 09/28"), ("cc=", ""))
        ),
        "ssn": lambda: r.choice((("SSN: ", ""), ("Employee social security number ", " on file."))),
        "iban": lambda: r.choice((("IBAN: ", ""), ("Please wire the deposit to ", " by Friday."))),
        "my_number": lambda: r.choice((("マイナンバー：", ""), ("個人番号（マイナンバー）は", "です。"))),
        "jp_licence": lambda: r.choice((("運転免許証番号：", ""), ("免許証 第", "号"))),
        "jp_passport": lambda: r.choice((("旅券番号 ", ""), ("Passport No. ", ""))),
        "jp_bank_account": lambda: r.choice((("振込先：みずほ銀行 渋谷支店 普通 ", ""), ("口座番号：", ""))),
        "jp_postal": lambda: r.choice((("〒", " 東京都渋谷区道玄坂1-2-3"), ("郵便番号：", ""))),
        "aws_key": lambda: r.choice((("aws_access_key_id = ", ""), ("export AWS_ACCESS_KEY_ID=", ""))),
        "github_token": lambda: r.choice((("GITHUB_TOKEN=", ""), ("  token: ", ""))),
        "pem": lambda: ("", ""),
        "jwt": lambda: r.choice((("Authorization: Bearer ", ""), ('{"id_token": "', '"}'))),
    }
    if kind in SECRET_SEEDS:  # the newer secret families (secret_seeds.py)
        return SECRET_SEEDS[kind][1](r)
    value = getattr(g, kind)()
    before, after = ctx[kind]()
    lead = g.ja_line() if japanese else g.en_line()
    if kind in ("pem", "aws_key", "github_token", "jwt") or r.random() < 0.5:
        lead = ""
    else:
        lead += " "
    return lead + before, value, after


SEED_KINDS = ("email", "phone", "card", "ssn", "iban", "my_number", "aws_key", "github_token", "pem", "jwt",
              "jp_licence", "jp_passport", "jp_bank_account", "jp_postal", *SECRET_SEEDS)  # fmt: skip


def generate(
    total_bytes: int, seed: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES, issue_time: bool = False
) -> tuple[list[str], list[Seeded]]:
    """The corpus; with `issue_time`, the one of issue 15's filing (ISSUE_TIME_VERSION)."""
    g = _Gen(seed, issue_time)
    kinds = ISSUE_TIME_KINDS if issue_time else SEED_KINDS
    r = g.r
    chunks: list[str] = []
    seeded: list[Seeded] = []
    produced = 0
    next_seed = int(r.expovariate(1 / MEAN_SEED_GAP))
    japanese = False
    while produced < total_bytes:
        lines: list[str] = []
        nchars = 0
        nbytes = 0
        while nbytes < chunk_bytes and produced + nbytes < total_bytes:
            if r.random() < 0.05:
                japanese = not japanese
            if next_seed <= 0:
                kind = r.choice(kinds)
                before, value, after = _seed_line(g, kind, japanese)
                start = nchars + len(before)
                seeded.append(Seeded(kind, len(chunks), start, start + len(value)))
                line = before + value + after
                next_seed = int(r.expovariate(1 / MEAN_SEED_GAP))
            else:
                pick = r.random()
                if pick < 0.45:
                    line = g.ja_line() if japanese else g.en_line()
                elif pick < 0.70:
                    line = g.log_line()
                elif pick < 0.88:
                    line = g.code_line()
                else:
                    line = g.csv_line()
            line += "\n"
            size = len(line.encode("utf-8"))
            lines.append(line)
            nchars += len(line)
            nbytes += size
            next_seed -= size
        chunks.append("".join(lines))
        produced += nbytes
    return chunks, seeded


def load_or_build(
    mb: float,
    seed: int,
    out_dir: Path,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    rebuild: bool = False,
    issue_time: bool = False,
) -> Corpus:
    """Read the cached corpus for (mb, seed, chunk size), generating and caching it when absent; with
    `issue_time`, the corpus as it was when issue 15 was filed (old families seeded only)."""
    version = ISSUE_TIME_VERSION if issue_time else GENERATOR_VERSION
    stem = f"corpus-v{version}-seed{seed}-{mb:g}MB-chunk{chunk_bytes}"
    text_path = out_dir / f"{stem}.txt"
    meta_path = out_dir / f"{stem}.json"
    if not rebuild and text_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        data = text_path.read_bytes()
        chunks, pos = [], 0
        for size in meta["chunk_bytes"]:
            chunks.append(data[pos : pos + size].decode("utf-8"))
            pos += size
        if pos == len(data):
            seeded = [Seeded(*item) for item in meta["seeded"]]
            return Corpus(chunks, seeded, text_path, built=False)
    chunks, seeded = generate(int(mb * MB), seed, chunk_bytes, issue_time)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoded = [c.encode("utf-8") for c in chunks]
    _atomic_write(text_path, b"".join(encoded))
    meta = {
        "generator_version": version,
        "seed": seed,
        "chunk_bytes": [len(e) for e in encoded],
        "seeded": [[s.kind, s.chunk, s.start, s.end] for s in seeded],
    }
    _atomic_write(meta_path, json.dumps(meta).encode())
    return Corpus(chunks, seeded, text_path, built=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
