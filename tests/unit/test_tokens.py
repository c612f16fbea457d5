"""Tokens in-process: the secret's places in a header, hashing, table
globs, the quota bucket's burst and debt, and the config file's checks."""
from __future__ import annotations

import base64

import pytest

from ingest.server import config
from ingest.sources.auth import QuotaBucket, Token, Tokens, Unauthenticated, presented_secret, secret_digest

SECRET = "a-secret-of-enough-length"


def token(**kw) -> Token:
    fields = {"name": "t", "digest": secret_digest(SECRET), "scopes": frozenset({"write"})}
    return Token(**{**fields, **kw})


@pytest.mark.parametrize("header, secret", [
    (f"Bearer {SECRET}", SECRET),
    (f"bearer   {SECRET}  ", SECRET),
    ("Basic " + base64.b64encode(f"{SECRET}:".encode()).decode(), SECRET),
    ("Basic " + base64.b64encode(f":{SECRET}".encode()).decode(), SECRET),
    ("Basic " + base64.b64encode(f"{SECRET}:pw".encode()).decode(), SECRET),
    ("Basic not-base64!", None),
    ("Bearer", None),
    ("Digest x", None),
    ("", None),
    (None, None),
])
def test_the_secret_is_read_from_bearer_and_from_basic(header, secret):
    assert presented_secret(header) == secret


def test_only_the_hash_of_a_secret_is_kept():
    tokens = Tokens([token()])
    assert tokens.identify(f"Bearer {SECRET}").name == "t"
    assert SECRET not in repr(tokens.by_name("t")) and SECRET.encode() not in tokens.by_name("t").digest
    for wrong in (None, "Bearer x", f"Bearer {SECRET}x", f"Bearer {SECRET[:-1]}"):
        with pytest.raises(Unauthenticated):
            tokens.identify(wrong)


def test_tables_are_globs_without_case_and_admin_reaches_every_table():
    limited = token(tables=("events", "clicks_*"))
    assert limited.may_use("events") and limited.may_use("Clicks_EU") and not limited.may_use("clicks")
    assert not limited.may_use("payments") and not limited.may_use("events2")
    assert token().may_use("anything")
    admin = token(scopes=frozenset({"admin"}), tables=("events",))
    assert admin.may_use("payments") and admin.has("write") and admin.has("query")
    assert not limited.has("query") and not limited.has("admin")


def test_a_bucket_admits_while_not_empty_and_may_run_into_debt():
    bucket = QuotaBucket(10)
    assert bucket.admits(bucket._updated)
    bucket.take(25, bucket._updated)  # more than a second's worth: taken, leaving a debt of 15
    now = bucket._updated
    assert not bucket.admits(now)
    assert bucket.retry_after() == pytest.approx(1.5) and bucket.reset_after() == pytest.approx(2.5)
    assert not bucket.admits(now + 1.4)
    assert bucket.admits(now + 1.6)
    assert bucket.admits(now + 100) and bucket.level == 10  # it never holds more than one second's worth


def test_a_token_over_one_quota_says_which(monkeypatch):
    metered = token(events_per_second=100, bytes_per_second=1000)
    assert metered.rate_limited() is None
    metered.charge(events=1, size=5000)
    limited = metered.rate_limited()
    assert limited is not None and limited.unit == "bytes"
    headers = dict(limited.headers())
    assert headers["X-RateLimit-Limit"] == "1000" and headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["Retry-After"]) == 4 and int(headers["X-RateLimit-Reset"]) == 5
    assert "bytes_per_second" in limited.message(metered)


def write_config(tmp_path, text: str):
    path = tmp_path / "ingest.toml"
    path.write_text(text)
    return path


def test_tokens_come_from_the_config_file_with_their_secrets_from_env_and_file(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("secret-from-a-file-0001\n")
    path = write_config(tmp_path, f"""
[auth]
open_probes = true
[[auth.tokens]]
name = "inline"
secret = "inline-secret-000001"
scopes = ["write", "query"]
tables = ["Events", "clicks_*"]
events_per_second = 5000
bytes_per_second = 1e6
[[auth.tokens]]
name = "env"
secret_env = "MY_TOKEN"
scopes = ["admin"]
[[auth.tokens]]
name = "file"
secret_file = "{secret_file}"
scopes = ["write"]
""")
    settings = config.load(path, {}, environ={"MY_TOKEN": "secret-from-the-env-01"})
    tokens = settings.auth
    assert tokens.enabled and len(tokens) == 3 and tokens.open_probes
    inline = tokens.identify("Bearer inline-secret-000001")
    assert inline.tables == ("events", "clicks_*") and inline.events_per_second == 5000
    assert inline.bytes_per_second == 1e6 and inline.scopes == {"write", "query"}
    assert tokens.identify("Bearer secret-from-the-env-01").name == "env"
    assert tokens.identify("Bearer secret-from-a-file-0001").name == "file"
    assert not config.load(None, {}).auth.enabled


@pytest.mark.parametrize("tokens, message", [
    ('[[auth.tokens]]\nsecret = "0123456789abcdef0"\nscopes = ["write"]', "needs a name"),
    ('[[auth.tokens]]\nname = "a"\nsecret = "0123456789abcdef0"\nscopes = ["write"]\n'
     '[[auth.tokens]]\nname = "a"\nsecret = "0123456789abcdef1"\nscopes = ["write"]', "two tokens are named"),
    ('[[auth.tokens]]\nname = "a"\nsecret = "0123456789abcdef0"\nscopes = ["write"]\n'
     '[[auth.tokens]]\nname = "b"\nsecret = "0123456789abcdef0"\nscopes = ["write"]', "same secret"),
    ('[[auth.tokens]]\nname = "a"\nsecret = "0123456789abcdef0"\nscopes = []', "scopes"),
    ('[[auth.tokens]]\nname = "a"\nsecret = "0123456789abcdef0"\nscopes = ["write"]\ntables = "events"', "tables"),
    ('[[auth.tokens]]\nname = "a"\nsecret = "0123456789abcdef0"\nscopes = ["write"]\nbytes_per_second = true',
     "bytes_per_second"),
    ('[auth]\nopen_probes = "yes"', "open_probes"),
    ('[auth]\nusers = []', "[auth] takes only"),
])
def test_bad_tokens_name_what_is_wrong(tmp_path, tokens, message):
    with pytest.raises(config.ConfigError, match=message.replace("[", r"\[")) as raised:
        config.load(write_config(tmp_path, tokens), {})
    assert "0123456789abcdef" not in str(raised.value)


def test_the_webhook_secret_is_not_a_flag_and_may_come_from_a_file(tmp_path):
    assert "--webhook-secret" in config.secret_flags()
    assert "webhook_secret" not in {f.name for f in config.flag_fields()}
    secret = tmp_path / "hook"
    secret.write_text("from-a-file\n")
    assert config.load(None, {"webhook_secret_file": str(secret)}).webhook_secret == "from-a-file"
    assert config.load(None, {}, environ={"INGEST_WEBHOOK_SECRET": "env"}).webhook_secret == "env"
    with pytest.raises(config.ConfigError, match="not both"):
        config.load(None, {"webhook_secret_file": str(secret)}, environ={"INGEST_WEBHOOK_SECRET": "env"})


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.com", False),
])
def test_which_hosts_are_loopback(host, loopback):
    assert config.is_loopback(host) is loopback


def test_forbids_names_the_missing_scope_or_the_table():
    writer = token(tables=("events",))
    assert writer.forbids(("write",), "events", "send over TCP") is None
    assert "needs the query scope" in writer.forbids(("query",), None, "call /v1/query")
    assert "'payments'" in writer.forbids(("write",), "payments", "call /v1/ingest/{table}")
    assert token(scopes=frozenset({"admin"})).forbids(("write", "query"), "payments", "x") is None
