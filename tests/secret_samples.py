"""Generated secrets for the secrets pack's tests: per rule, true positives (with the span the rule
must report) and the near misses and placeholders it must stay quiet on. Values are random (seeded),
made at import time: none is a real credential."""

from __future__ import annotations

import base64
import random
import string
import uuid
from dataclasses import dataclass, field

_R = random.Random(1515)
UPPER, LOWER, DIGITS = string.ascii_uppercase, string.ascii_lowercase, string.digits
B62 = UPPER + LOWER + DIGITS
B64 = B62 + "+/"
URLSAFE = B62 + "_-"
HEX = "0123456789abcdef"
BECH32 = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"


def rand(alphabet: str, size: int) -> str:
    return "".join(_R.choice(alphabet) for _ in range(size))


def mixed(size: int, alphabet: str = B62) -> str:
    """A random value over `alphabet` holding an upper-case letter, a lower-case letter and a digit
    (those of them that `alphabet` has)."""
    kinds = [kind for kind in (str.isupper, str.islower, str.isdigit) if any(map(kind, alphabet))]
    while True:
        value = rand(alphabet, size)
        if all(any(map(kind, value)) for kind in kinds):
            return value


def a_uuid() -> str:
    return str(uuid.UUID(int=_R.getrandbits(128), version=4))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Case:
    """`positives`: (text, the span the rule reports); `quiet`: texts where no secret rule fires."""

    positives: list[tuple[str, str]] = field(default_factory=list)
    quiet: list[str] = field(default_factory=list)


def _kv(text: str, value: str) -> tuple[str, str]:
    """A positive whose span is `value` inside `text`."""
    return text.format(value), value


AWS_SECRET = mixed(40, B64)
PEM_BODY = "\\n".join(mixed(64, B64) for _ in range(5))
PEM_LINES = "\n".join(mixed(64, B64) for _ in range(4))
SA_JSON = (
    '"private_key": "-----BEGIN PRIVATE KEY-----\\n' + PEM_BODY + '\\n-----END PRIVATE KEY-----\\n",\n'
    '  "client_email": "deployer@my-project-123.iam.gserviceaccount.com"'
)
DISCORD_ID = str(_R.randint(10**17, 10**18 - 1))
DB_PASSWORD = mixed(18)
K8S_VALUE = b64(mixed(20).encode())
K8S = f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\ndata:\n  password: {K8S_VALUE}\n"
K8S_SORTED = f"apiVersion: v1\ndata:\n  password: {K8S_VALUE}\nkind: Secret\nmetadata:\n  name: db\n"
PKCS12_LEAD = bytes.fromhex("30820a0a020103308209c006092a864886f70d010701")
JKS_LEAD = bytes.fromhex("feedfeed000000020000000100000001")
JCEKS_LEAD = bytes.fromhex("cececece000000020000000100000001")
KEYSTORE_P12 = b64(PKCS12_LEAD + _R.randbytes(200))
KEYSTORE_JKS = b64(JKS_LEAD + _R.randbytes(200))
KEYSTORE_JCEKS = b64(JCEKS_LEAD + _R.randbytes(200))

SAMPLES: dict[str, Case] = {
    "secrets.aws_access_key": Case(
        [_kv("aws_access_key_id = {}", "AKIA" + rand(UPPER + "234567", 16)),
         _kv("export AWS_ACCESS_KEY_ID={}", "ASIA" + rand(UPPER + DIGITS, 16))],
        ["aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "key AKIAXXXXXXXXXXXXXXXX here", "AKIA1234 is short"],
    ),
    "secrets.aws_secret_key": Case(
        [(f"aws_secret_access_key = {AWS_SECRET}", f"aws_secret_access_key = {AWS_SECRET}"),
         (f'{{"SecretAccessKey": "{AWS_SECRET}"}}', f'SecretAccessKey": "{AWS_SECRET}')],
        ["aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
         "aws_secret_access_key = ${AWS_SECRET_ACCESS_KEY}",
         "aws_secret_access_key = " + "a" * 40,
         "sha1 of the secret key file: " + rand(HEX, 40)],
    ),
    "secrets.aws_secret_key_pair": Case(
        [((pair := "AKIA" + rand(UPPER + DIGITS, 16) + "," + AWS_SECRET) + ",console", pair)],
        ["AKIAIOSFODNN7EXAMPLE," + rand(HEX, 40)],  # a SHA-1 after it: one case, no upper-case letter
    ),
    "secrets.aws_session_token": Case(
        [_kv("aws_session_token = {}", "IQoJb3JpZ2luX2Vj" + rand(B64, 300)),
         _kv("AWS_SESSION_TOKEN={}", "FwoGZXIvYXdz" + rand(B64, 200) + "==")],
        ["IQoJb3JpZ2luX2Vj" + "short"],
    ),
    "secrets.google_api_key": Case(
        [_kv("GOOGLE_API_KEY: {}", "AIza" + mixed(35, URLSAFE)),
         _kv("genai.configure(key=\"{}\")", "AIza" + mixed(35, URLSAFE))],
        ["AIza" + "X" * 35, "AIzaSyShort"],
    ),
    "secrets.gcp_service_account": Case(
        [("{\n  " + SA_JSON + "\n}", SA_JSON)],
        ['{"private_key": "-----BEGIN PRIVATE KEY-----\\n' + "x" * 64 + '\\n-----END PRIVATE KEY-----\\n",'
         ' "client_email": "a@b.iam.gserviceaccount.com"}'],
    ),
    "secrets.azure_storage_key": Case(
        [_kv("DefaultEndpointsProtocol=https;AccountName=acct1;{};EndpointSuffix=core.windows.net",
             "AccountKey=" + mixed(86, B64) + "==")],
        ["AccountKey=" + "A" * 86 + "==", "AccountKey=short=="],
    ),
    "secrets.azure_storage_key_assigned": Case(
        [((v := mixed(86, B64) + "==") and f'storage_account_key: "{v}"', f'storage_account_key: "{v}')],
        ['storage_account_key: "<your-storage-key>"'],
    ),
    "secrets.azure_connection_string": Case(
        [_kv("Endpoint=sb://ns1.servicebus.windows.net/;SharedAccessKeyName=Root;{}",
             "SharedAccessKey=" + mixed(43, B64) + "=")],
        ["SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=<key>"],
    ),
    "secrets.azure_ad_client_secret": Case(
        [_kv("value: {}", mixed(3) + "8Q~" + mixed(34, B62 + "_~.-"))],
        ["abc8Q~" + "x" * 34],
    ),
    "secrets.alibaba_access_key": Case(
        [_kv("AccessKeyId={}", "LTAI" + mixed(20))], ["LTAI" + "x" * 20, "LTAIshort"]
    ),
    "secrets.alibaba_secret_key": Case(
        [((v := mixed(30)) and f'alibaba_cloud_secret = "{v}"', f'alibaba_cloud_secret = "{v}')],
        ['alibaba_cloud_secret = "' + "0" * 30 + '"'],
    ),
    "secrets.digitalocean_token": Case(
        [_kv("DIGITALOCEAN_TOKEN={}", "dop_v1_" + rand(HEX, 64)), _kv("{}", "dor_v1_" + rand(HEX, 64))],
        ["dop_v1_" + "0" * 64],
    ),
    "secrets.heroku_api_key": Case(
        [_kv("key {}", "HRKU-AA" + mixed(58, URLSAFE)),
         ((v := a_uuid()) and f"HEROKU_API_KEY: {v}", f"HEROKU_API_KEY: {v}")],
        ["HEROKU_API_KEY: 00000000-0000-0000-0000-000000000000"],
    ),
    "secrets.cloudflare_token": Case(
        [((v := mixed(40, URLSAFE)) and f'CLOUDFLARE_API_TOKEN="{v}"', f'CLOUDFLARE_API_TOKEN="{v}'),
         _kv("origin: {}", "v1.0-" + rand(HEX, 24) + "-" + rand(HEX, 146))],
        ['CLOUDFLARE_API_TOKEN="${CF_TOKEN}"'],
    ),
    "secrets.gitlab_token": Case(
        [_kv("private_token: {}", "glpat-" + mixed(20, URLSAFE)),
         _kv("{}", "glrt-t1_" + mixed(27, URLSAFE) + ".01" + rand(LOWER + DIGITS, 7)),
         _kv("CI_JOB_TOKEN={}", "glcbt-64_" + mixed(20, URLSAFE)),
         _kv("registration {}", "GR1348941" + mixed(20, URLSAFE))],
        ["glpat-xxxxxxxxxxxxxxxxxxxx", "glpat-<your-token>", "gldt-short"],
    ),
    "secrets.bitbucket_token": Case(
        [_kv("app password {}", "ATBB" + mixed(32)),
         ((v := mixed(64, URLSAFE)) and f"BITBUCKET_CLIENT_SECRET={v}", f"BITBUCKET_CLIENT_SECRET={v}")],
        ["BITBUCKET_CLIENT_SECRET=${BB_SECRET}", "ATBB" + "X" * 32],
    ),
    "secrets.npm_token": Case(
        [_kv("token {}", "npm_" + mixed(36)),
         ((v := a_uuid()) and f"//registry.npmjs.org/:_authToken={v}", f"_authToken={v}")],
        ["//registry.npmjs.org/:_authToken=${NPM_TOKEN}", "npm_" + "a" * 36],
    ),
    "secrets.pypi_token": Case(
        [_kv("password = {}", "pypi-AgEIcHlwaS5vcmc" + mixed(150, URLSAFE)),
         _kv("{}", "pypi-AgENdGVzdC5weXBpLm9yZw" + mixed(80, URLSAFE))],
        ["pypi-AgEIcHlwaS5vcmc" + "short"],
    ),
    "secrets.rubygems_token": Case([_kv(":rubygems_api_key: {}", "rubygems_" + rand(HEX, 48))], ["rubygems_" + "0" * 48]),
    "secrets.nuget_api_key": Case([_kv("nuget push -k {}", "oy2" + rand(LOWER + DIGITS, 43))], ["oy2" + "a" * 43]),
    "secrets.nuget_config_password": Case(
        [_kv("  {}\n", f'<add key="ClearTextPassword" value="{mixed(16)}" />')],
        ['<add key="ClearTextPassword" value="%NUGET_PASSWORD%" />', '<add key="Password" value="password" />'],
    ),
    "secrets.docker_hub_token": Case([_kv("docker login -p {}", "dckr_pat_" + mixed(27, URLSAFE))], ["dckr_pat_" + "x" * 27]),
    "secrets.docker_config_auth": Case(
        [((v := f'"auth": "{b64(b"deploy:" + mixed(20).encode())}"') and '{"auths": {"registry.io": {' + v + "}}}", v)],
        [f'"auth": "{b64(b"user:password")}"', '"auth": "basicauth"', f'"auth": "{b64(mixed(30).encode())}"'],
    ),
    "secrets.artifactory_token": Case(
        [_kv("X-JFrog-Art-Api: {}", "AKCp" + mixed(69)), _kv("{}", "cmVmd" + mixed(59))], ["AKCp" + "x" * 69]
    ),
    "secrets.slack_token": Case(
        [_kv("SLACK_BOT_TOKEN={}", f"xoxb-{rand(DIGITS, 12)}-{rand(DIGITS, 13)}-{mixed(24)}"),
         _kv("{}", f"xoxp-{rand(DIGITS, 12)}-{rand(DIGITS, 12)}-{rand(DIGITS, 13)}-{rand(HEX, 32)}"),
         _kv("{}", f"xapp-1-A{rand(UPPER + DIGITS, 10)}-{rand(DIGITS, 13)}-{rand(HEX, 64)}")],
        ["xoxb-XXXXXXXXXXXX-XXXXXXXXXXXXX-XXXXXXXXXXXXXXXXXXXXXXXX", "xoxb-000000000000-0000000000000-xxxxxxxxxxxxxxxxxxxxxxxx"],
    ),
    "secrets.slack_webhook": Case(
        [_kv("https://{}", f"hooks.slack.com/services/T{rand(UPPER + DIGITS, 8)}/B{rand(UPPER + DIGITS, 10)}/{mixed(24)}")],
        ["https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"],
    ),
    "secrets.discord_bot_token": Case(
        [_kv("DISCORD_TOKEN={}", b64(DISCORD_ID.encode()).rstrip("=") + "." + mixed(6, URLSAFE) + "." + mixed(38, URLSAFE))],
        ["MTIzNDU2Nzg5MDEyMzQ1Njc4.abcdef." + "x" * 38, "NotADiscordTokenAtAll123.abcdef.ghijklmnopqrstuvwxyz0123456789AB"],
    ),
    "secrets.discord_webhook": Case(
        [_kv("https://{}", f"discord.com/api/webhooks/{rand(DIGITS, 18)}/{mixed(68, URLSAFE)}")],
        [f"https://discord.com/api/webhooks/{rand(DIGITS, 18)}/" + "x" * 68],
    ),
    "secrets.telegram_bot_token": Case(
        [_kv("TELEGRAM_BOT_TOKEN={}", f"{_R.randint(10**9, 7 * 10**9)}:AA{mixed(33, URLSAFE)}")],
        ["123456789:AA" + "x" * 33, "12:AA" + mixed(33, URLSAFE)],
    ),
    "secrets.teams_webhook": Case(
        [_kv("https://contoso.{}", f"webhook.office.com/webhookb2/{a_uuid()}@{a_uuid()}/IncomingWebhook/{rand(HEX, 32)}/{a_uuid()}")],
        ["https://contoso.webhook.office.com/webhookb2/<group>@<tenant>/IncomingWebhook/<id>/<owner>"],
    ),
    "secrets.sendgrid_api_key": Case(
        [_kv("SENDGRID_API_KEY={}", f"SG.{mixed(22, URLSAFE)}.{mixed(43, URLSAFE)}")],
        ["SG." + "x" * 22 + "." + "x" * 43],
    ),
    "secrets.mailgun_api_key": Case(
        [((v := "key-" + rand(HEX, 32)) and f'MAILGUN_API_KEY="{v}"', f'MAILGUN_API_KEY="{v}')],
        ['MAILGUN_API_KEY="key-' + "0" * 32 + '"'],
    ),
    "secrets.mailchimp_api_key": Case([_kv("apikey {}", rand(HEX, 32) + "-us14")], ["0" * 32 + "-us14"]),
    "secrets.twilio_api_key": Case(
        [_kv("sid {}", "SK" + rand(HEX, 32)),
         ((v := rand(HEX, 32)) and f"TWILIO_AUTH_TOKEN={v}", f"TWILIO_AUTH_TOKEN={v}")],
        ["SK" + "0" * 32],
    ),
    "secrets.stripe_key": Case(
        [_kv("Stripe.api_key = '{}'", "sk_live_" + mixed(24)), _kv("{}", "rk_test_" + mixed(99))],
        ["sk_live_xxxxxxxxxxxxxxxxxxxxxxxx", "sk_live_<your-key>", "pk_live_" + mixed(24)],
    ),
    "secrets.stripe_webhook_secret": Case([_kv("endpoint_secret = '{}'", "whsec_" + mixed(32))], ["whsec_" + "x" * 32]),
    "secrets.square_token": Case(
        [_kv("{}", "sq0atp-" + mixed(22, URLSAFE)), _kv("{}", "sq0csp-" + mixed(43, URLSAFE)),
         _kv("SQUARE_ACCESS_TOKEN={}", "EAAA" + mixed(60, URLSAFE))],
        ["sq0atp-" + "x" * 22],
    ),
    "secrets.braintree_access_token": Case(
        [_kv("{}", f"access_token$production${rand(LOWER + DIGITS, 16)}${rand(HEX, 32)}")],
        ["access_token$production$<merchant>$<token>"],
    ),
    "secrets.paypal_client_secret": Case(
        [((v := mixed(80, URLSAFE)) and f"PAYPAL_CLIENT_SECRET={v}", f"PAYPAL_CLIENT_SECRET={v}"),
         ((v := rand(HEX, 32)) and f'braintree_private_key: "{v}"', f'braintree_private_key: "{v}')],
        ["PAYPAL_CLIENT_SECRET=" + "x" * 80],
    ),
    "secrets.shopify_token": Case([_kv("X-Shopify-Access-Token: {}", "shpat_" + rand(HEX, 32))], ["shpat_" + "0" * 32]),
    "secrets.openai_api_key": Case(
        [_kv("OPENAI_API_KEY={}", "sk-proj-" + mixed(156, URLSAFE)),
         _kv("{}", "sk-" + mixed(20) + "T3BlbkFJ" + mixed(20))],
        ["sk-proj-" + "x" * 48, "sk-proj-<your-key>", "sk-...abcd"],
    ),
    "secrets.anthropic_api_key": Case(
        [_kv("ANTHROPIC_API_KEY={}", "sk-ant-api03-" + mixed(93, URLSAFE) + "AA")],
        ["sk-ant-api03-" + "x" * 95, "sk-ant-api03-..."],
    ),
    "secrets.huggingface_token": Case(
        [_kv("HF_TOKEN={}", "hf_" + mixed(34, UPPER + LOWER)),
         _kv("{}", "api_org_" + rand(UPPER + LOWER, 34))],
        ["hf_" + "x" * 34, "hf_hub_download"],
    ),
    "secrets.cohere_api_key": Case(
        [((v := mixed(40)) and f"CO_API_KEY={v}", f"CO_API_KEY={v}")], ["CO_API_KEY=<your-api-key>"]
    ),
    "secrets.vault_token": Case(
        [_kv("VAULT_TOKEN={}", "hvs." + mixed(95, URLSAFE)), _kv("{}", "hvb." + mixed(140, URLSAFE))],
        ["hvs." + "x" * 95, "hvs.short"],
    ),
    "secrets.terraform_cloud_token": Case(
        [_kv('token = "{}"', mixed(14) + ".atlasv1." + mixed(67, URLSAFE + "="))],
        ["xxxxxxxxxxxxxx.atlasv1." + "x" * 67],
    ),
    "secrets.datadog_api_key": Case(
        [((v := rand(HEX, 32)) and f"DD_API_KEY={v}", f"DD_API_KEY={v}"),
         ((v := rand(HEX, 40)) and f"datadog_app_key: {v}", f"datadog_app_key: {v}")],
        ["DD_API_KEY=" + "0" * 32, "add_app_key: " + rand(HEX, 32)],
    ),
    "secrets.new_relic_key": Case(
        [_kv("NEW_RELIC_API_KEY={}", "NRAK-" + rand(UPPER + DIGITS, 27)), _kv("license_key: {}", rand(HEX, 36) + "NRAL")],
        ["NRAK-" + "X" * 27],
    ),
    "secrets.sentry_token": Case(
        [_kv("SENTRY_AUTH_TOKEN={}", "sntryu_" + rand(HEX, 64)), _kv("{}", "sntrys_eyJpYXQiO" + mixed(120, B64))],
        ["sntryu_" + "0" * 64],
    ),
    "secrets.grafana_token": Case(
        [_kv("{}", "glc_" + mixed(64, B64) + "="), _kv("{}", "glsa_" + mixed(32) + "_" + rand(HEX, 8)),
         _kv("Authorization: Bearer {}", "eyJrIjoi" + mixed(80))],
        ["glc_" + "x" * 40],
    ),
    "secrets.pagerduty_key": Case(
        [((v := mixed(20, URLSAFE + "+")) and f"PAGERDUTY_TOKEN={v}", f"PAGERDUTY_TOKEN={v}")],
        ["PAGERDUTY_TOKEN=" + "y" * 20],
    ),
    "secrets.onepassword_service_token": Case(
        [_kv("OP_SERVICE_ACCOUNT_TOKEN={}", "ops_eyJ" + mixed(300, B64)),
         _kv("{}", "A3-" + "-".join(rand(UPPER + DIGITS, n) for n in (6, 11, 5, 5, 5)))],
        ["ops_eyJ" + "x" * 300],
    ),
    "secrets.age_secret_key": Case(
        [_kv("# created: 2024-01-01\n{}\n", "AGE-SECRET-KEY-1" + rand(BECH32, 58))], ["AGE-SECRET-KEY-1" + "Q" * 58]
    ),
    "secrets.kubernetes_secret": Case(
        [(K8S, K8S[K8S.index("kind") :].rstrip("\n") + "\n"), (K8S_SORTED, K8S_SORTED[K8S_SORTED.index("data:") : K8S_SORTED.index("\nmetadata")])],
        ["apiVersion: v1\nkind: Secret\ndata:\n  password: {{ .Values.password | b64enc }}\n",
         "apiVersion: v1\nkind: ConfigMap\ndata:\n  mode: " + b64(b"production-mode") + "\n"],
    ),
    "secrets.database_url": Case(
        [_kv("DATABASE_URL={}:5432/app", f"postgres://app:{DB_PASSWORD}@db.internal"),
         _kv("uri: {}/admin", f"mongodb+srv://svc:{mixed(16)}@cluster0.ab1cd.mongodb.net")],
        ["postgres://user:password@localhost/db", "postgres://${DB_USER}:${DB_PASSWORD}@db/app",
         "mysql://root:@localhost/test", "redis://:****@cache:6379"],
    ),
    "secrets.basic_auth_url": Case(
        [_kv("git clone {}/repo.git", f"https://deploy:{mixed(14)}@git.corp.internal")],
        ["https://user:pass@example.com/", "http://localhost:8080/path", "https://<user>:<token>@host/"],
    ),
    "secrets.netrc_password": Case(
        [_kv("{}\n", f"machine api.github.com login octocat password {mixed(20)}"),
         _kv("{}\n", f"machine ftp.corp.internal\n  login deploy\n  password {mixed(12)}")],
        ["machine example.com login user password password\n", "machine host login me password $TOKEN\n"],
    ),
    "secrets.pgpass_password": Case(
        [_kv("{}\n", f"db.internal:5432:app:app_user:{mixed(18)}")],
        ["localhost:5432:*:postgres:password\n", "10:20:30:40:5000\n", "host:5432:db:user:changeme\n"],
    ),
    "secrets.keystore_base64": Case(
        [_kv("keystore.p12: {}\n", KEYSTORE_P12), _kv('"truststore": "{}"', KEYSTORE_JKS),
         _kv("{}\n", KEYSTORE_JCEKS)],
        # base64 certificates and PKCS#8 keys (version 0, not 3) are not keystores
        ["cert: " + b64(bytes.fromhex("30820a0a30820902a003020102") + bytes(200)) + "\n",
         "key: " + b64(bytes.fromhex("308204bd020100300d06092a") + bytes(200)) + "\n"],
    ),
    "secrets.generic_secret": Case(
        [((v := mixed(32)) and f'password = "{v}"', f'password = "{v}"'),
         ((v := mixed(24, B62 + "!#%")) and f"client_secret: '{v}'", f"client_secret: '{v}'"),
         ((v := mixed(32)) and f"API_KEY={v}", f"API_KEY={v}"),
         ((v := mixed(20)) and f'"apiToken": "{v}"', f'Token": "{v}"')],
        ['password = "changeme"', 'api_key = "${API_KEY}"', 'api_key = "<your-api-key>"', "password: '********'",
         'token = os.environ["TOKEN"]', 'secret_key = "' + "x" * 32 + '"', 'tokenizer = "bert-base-multilingual-cased"',
         'password_reset_url = "https://example.com/reset"', 'SECRET_KEY = settings.DJANGO_SECRET_KEY_VALUE',
         'token = "' + "ab" * 16 + '"', 'password = "Password1"'],
    ),
}  # fmt: skip

# Every rule of the pack that these samples cover (a new rule without samples fails the pack tests)
COVERED_RULES = frozenset(SAMPLES) | {
    "secrets.github_token",
    "secrets.github_pat",
    "secrets.private_key",
    "secrets.jwt",
}


def positives() -> list[tuple[str, str, str]]:
    """(rule id, text, span) for every true positive."""
    return [(rule, text, span) for rule, case in SAMPLES.items() for text, span in case.positives]


def quiet() -> list[tuple[str, str]]:
    """(rule id, text) for every near miss and placeholder."""
    return [(rule, text) for rule, case in SAMPLES.items() for text in case.quiet]


def fragments() -> list[str]:
    """Every sample text, for corpora that mix them with noise (engine-equivalence tests, benchmarks)."""
    return [text for _, text, _ in positives()] + [text for _, text in quiet()]
