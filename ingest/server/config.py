"""Server settings: one dataclass, filled from defaults, a TOML file, the
environment and the command line, in that order of precedence (last wins).

Every setting has the same name in each place: ``batch_events`` is
``batch_events = 1000`` in TOML, ``INGEST_BATCH_EVENTS=1000`` in the
environment and ``--batch-events 1000`` on the command line.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ingest.durability import FSYNC_MODES as WAL_FSYNC_MODES
from ingest.protocol import table_name_problem
from ingest.server.state import state_path
from ingest.sinks.registry import SINKS
from ingest.sources.auth import SCOPES, Token, Tokens, secret_digest

MAX_PARSEABLE_URL = 65535  # httptools.parse_url keeps offsets in 16 bits and refuses longer URLs


class ConfigError(ValueError):
    """A setting has a value the server cannot use."""


@dataclass
class Settings:
    data_dir: Path = field(default=Path("data"), metadata={"help": "directory for ingest.duckdb, parquet/ and server state"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind both sources to"})
    tcp_port: int = field(default=7070, metadata={"help": "NDJSON-over-TCP port (0 picks a free port)"})
    http_port: int = field(default=7080, metadata={"help": "HTTP port (0 picks a free port)"})
    sink: str = field(default="duckdb", metadata={"help": "where batches land: duckdb, parquet or delta"})
    delta_uri: str = field(default="", metadata={"help": "--sink delta: where its tables go, file:///path or s3://bucket/prefix, one Delta table per ingest table at URI/{table} (default: DIR/delta)"})
    delta_endpoint: str = field(default="", metadata={"help": "--sink delta on s3://: the endpoint of an S3-compatible store, e.g. http://minio:9000 (default: AWS_ENDPOINT_URL, else AWS)"})
    delta_commit_retries: int = field(default=100, metadata={"help": "--sink delta: times a commit that conflicts with another writer's is retried at once; past them the flush backs off and tries again"})
    node_id: str = field(default="", metadata={"help": "this server's name among several writing one Delta table; its batches' ids are recorded under it (default: made once and kept in DIR/node-id)"})
    partition_by: str = field(default="", metadata={"help": "--sink delta or parquet: split each table into hive-style directories by these comma-separated keys, a column or date(column), e.g. date(ts)"})
    batch_events: int = field(default=250_000, metadata={"help": "seal a table's batch at this many events"})
    batch_bytes: int = field(default=64 << 20, metadata={"help": "seal a table's batch at this many bytes of JSON"})
    flush_interval: int = field(default=1000, metadata={"help": "seal a table's batch this many ms after its first event"})
    tcp_table: str = field(default="events", metadata={"help": "table that TCP lines go to"})
    max_line_bytes: int = field(default=1 << 20, metadata={"help": "longer TCP lines are rejected and counted"})
    max_body_bytes: int = field(default=64 << 20, metadata={"help": "HTTP bodies over this (after gunzip) get 413"})
    max_buffer_bytes: int = field(default=512 << 20, metadata={"help": "memory budget for buffered and in-flight batches; above it TCP pauses and HTTP answers 429"})
    max_url_bytes: int = field(default=16 << 10, metadata={"help": "HTTP request URLs longer than this get 414 and the connection is closed (at most 65535: httptools parses no longer)"})
    max_header_bytes: int = field(default=64 << 10, metadata={"help": "HTTP request heads (URL and headers) larger than this get 431 and the connection is closed; counted as they arrive, never buffered whole"})
    max_headers: int = field(default=100, metadata={"help": "HTTP requests with more header fields than this get 431 and the connection is closed"})
    header_timeout: int = field(default=10, metadata={"help": "seconds from an HTTP request's first byte until its headers must be complete; then 408 and closed (checked once a second)"})
    body_timeout: int = field(default=30, metadata={"help": "seconds an HTTP body may go without a byte arriving while it is incomplete; then 408, closed and its memory budget given back"})
    idle_timeout: int = field(default=60, metadata={"help": "seconds a keep-alive HTTP connection may wait for its next request before it is closed quietly; also how long answers may go unread before the connection is aborted"})
    max_connections: int = field(default=10_000, metadata={"help": "open HTTP and TCP connections together; past it a new HTTP connection gets 503 with Retry-After and a TCP one is closed at once"})
    max_query_bytes: int = field(default=64 << 20, metadata={"help": "POST /v1/query results larger than this (in Arrow) are refused with 400"})
    query_timeout: int = field(default=60, metadata={"help": "seconds a POST /v1/query may run before it is interrupted (answered 408)"})
    max_flushes_in_flight: int = field(default=2, metadata={"help": "concurrent writes into the sink (DuckDB always writes one at a time)"})
    retry_attempts: int = field(default=5, metadata={"help": "retries of a flush failing for an unknown reason before its batch is dead-lettered"})
    retry_timeout: int = field(default=86400, metadata={"help": "seconds a flush failing on the environment (a full disk, I/O errors, permission, a locked store) is retried before its batch is dead-lettered"})
    retry_base_ms: int = field(default=100, metadata={"help": "backoff base: a retry waits random(0, min(base*2^attempt, max)) ms"})
    retry_max_ms: int = field(default=10_000, metadata={"help": "backoff ceiling in ms"})
    shutdown_grace: int = field(default=30, metadata={"help": "seconds SIGTERM waits for buffers to land before dead-lettering the rest"})
    sink_delay_ms: int = field(default=0, metadata={"help": "fault injection: extra ms each sink write takes (to test backpressure)"})
    wal: str = field(default="on", metadata={"help": "write-ahead log: on or off (off: a crash loses what has not landed)"})
    wal_fsync: str = field(default="always", metadata={"help": "always: every record fsynced before its ack, by group commit (an fsync starts as soon as records are written and none is in flight; what comes meanwhile shares the next); interval: every --wal-fsync-interval ms, acks wait for it (bounds the fsync rate); off: never"})
    wal_fsync_interval: int = field(default=20, metadata={"help": "ms between write-ahead-log fsyncs in interval mode"})
    wal_segment_bytes: int = field(default=64 << 20, metadata={"help": "write-ahead-log segment size"})
    receipt_retention: int = field(default=3600, metadata={"help": "seconds a settled receipt stays queryable at GET /v1/receipts/{id}"})
    idempotency_window: int = field(default=86400, metadata={"help": "seconds an Idempotency-Key is remembered"})
    webhook_secret: str = field(default="", metadata={"help": "HMAC-SHA256 key that signs webhook notices (webhooks are off without it)", "secret": True})
    webhook_secret_file: Path | None = field(default=None, metadata={"help": "file holding the webhook signing key (instead of INGEST_WEBHOOK_SECRET)"})
    webhook_allow: str = field(default="127.0.0.1,::1,localhost", metadata={"help": "comma-separated hosts that callback URLs may name"})
    tls_cert: Path | None = field(default=None, metadata={"help": "PEM certificate (chain): both listeners, HTTP and TCP, speak TLS only"})
    tls_key: Path | None = field(default=None, metadata={"help": "PEM private key of --tls-cert (without a passphrase)"})
    tls_client_ca: Path | None = field(default=None, metadata={"help": "PEM CA bundle: clients must present a certificate it signed; a TCP sender's certificate common name names its token"})
    allow_unauthenticated: bool = field(default=False, metadata={"help": "listen beyond loopback (--host) with no [[auth.tokens]] configured: anyone who reaches the ports may write and query"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    tables: dict = field(default_factory=dict, metadata={"config_only": True})  # name -> TableConfig, from [tables.NAME]
    auth: Tokens = field(default_factory=Tokens, metadata={"config_only": True})  # from [auth] and [[auth.tokens]]
    # SDK source name -> its tables and limits, from [sources.NAME] (ingest.sources.sdk)
    sources: dict = field(default_factory=dict, metadata={"config_only": True})
    # object-store options for --sink delta, from [delta_storage_options] (e.g. aws_region, aws_allow_http)
    delta_storage_options: dict = field(default_factory=dict, metadata={"config_only": True})

    def validate(self) -> None:
        if self.sink not in SINKS:
            raise ConfigError(f"sink must be one of {', '.join(SINKS)}, not {self.sink!r}")
        if self.wal not in ("on", "off"):
            raise ConfigError(f"wal must be on or off, not {self.wal!r}")
        if self.wal_fsync not in WAL_FSYNC_MODES:
            raise ConfigError(f"wal_fsync must be one of {', '.join(WAL_FSYNC_MODES)}, not {self.wal_fsync!r}")
        problem = table_name_problem(self.tcp_table)
        if problem:
            raise ConfigError(f"tcp_table: {problem}")
        for name in ("tcp_port", "http_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name} must be between 0 and 65535")
        for name in ("batch_events", "batch_bytes", "flush_interval", "max_line_bytes", "max_body_bytes",
                     "max_buffer_bytes", "max_query_bytes", "query_timeout", "max_flushes_in_flight", "retry_max_ms", "wal_fsync_interval",
                     "wal_segment_bytes", "receipt_retention", "idempotency_window", "max_url_bytes",
                     "max_header_bytes", "max_headers", "header_timeout", "body_timeout", "idle_timeout",
                     "max_connections"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")
        if self.max_url_bytes > MAX_PARSEABLE_URL:
            raise ConfigError(f"max_url_bytes must be at most {MAX_PARSEABLE_URL} (httptools parses no longer URLs), "
                              f"not {self.max_url_bytes}")
        try:
            self.partition_keys
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.partition_by and self.sink not in ("delta", "parquet"):
            raise ConfigError(f"partition_by takes effect with --sink delta or parquet, not {self.sink}")
        if self.delta_uri and not self.delta_uri.startswith(("file://", "s3://", "s3a://", "/")):
            raise ConfigError(f"delta_uri must be file:///path or s3://bucket/prefix, not {self.delta_uri!r}")
        if self.sink == "delta" and self.batch_events >= 1 << 24:
            raise ConfigError(f"batch_events must be under {1 << 24} with --sink delta (a batch's rows are recorded in "
                              f"24 bits of its Delta app transaction), not {self.batch_events}")
        if self.node_id and not all(c.isalnum() or c in "-_." for c in self.node_id):
            raise ConfigError(f"node_id may hold letters, digits, '-', '_' and '.', not {self.node_id!r}")
        for name in ("retry_attempts", "retry_timeout", "retry_base_ms", "shutdown_grace", "sink_delay_ms",
                     "delta_commit_retries"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, not {getattr(self, name)}")

    @property
    def loopback_only(self) -> bool:
        """Whether the sources listen on loopback only (nobody else can reach them)."""
        return is_loopback(self.host)

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / "ingest.duckdb"

    @property
    def parquet_dir(self) -> Path:
        return self.data_dir / "parquet"

    @property
    def partition_keys(self) -> tuple:
        """--partition-by, read (ingest.sinks.partitioning)."""
        from ingest.sinks.partitioning import parse_partition_by
        return parse_partition_by(self.partition_by)

    @property
    def delta_root(self) -> str:
        """Where the Delta tables go: --delta-uri, or DIR/delta."""
        if not self.delta_uri:
            return (self.data_dir / "delta").resolve().as_uri()
        return Path(self.delta_uri).resolve().as_uri() if self.delta_uri.startswith("/") else self.delta_uri.rstrip("/")

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    @property
    def deadletter_dir(self) -> Path:
        return self.data_dir / "deadletter"

    @property
    def state_path(self) -> Path:
        """Written while the server runs, so `ingest query` can find it."""
        return state_path(self.data_dir)


@dataclass
class TableConfig:
    """A table's declared columns, from [tables.NAME] in the config file."""

    schema: object  # pyarrow.Schema, or None: every column inferred
    strict: bool = False  # reject events with undeclared fields


def settable_fields() -> list:
    """The settings an environment variable (and, but for secrets, a flag) can set."""
    return [f for f in dataclasses.fields(Settings) if not f.metadata.get("config_only")]


def flag_fields() -> list:
    """The settings a command-line flag can set: not secrets, which anyone
    could read from the process list (/proc/PID/cmdline)."""
    return [f for f in settable_fields() if not f.metadata.get("secret")]


def secret_flags() -> list[str]:
    return [flag_name(f.name) for f in settable_fields() if f.metadata.get("secret")]


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


TOKEN_KEYS = {"name", "secret", "secret_env", "secret_file", "scopes", "tables", "events_per_second",
              "bytes_per_second"}


def _tokens(auth, config_file, environ) -> Tokens:
    """[auth] open_probes and its [[auth.tokens]], checked."""
    if not isinstance(auth, dict) or set(auth) - {"tokens", "open_probes"}:
        raise ConfigError(f"{config_file}: [auth] takes only open_probes and [[auth.tokens]]")
    open_probes = auth.get("open_probes", False)
    if not isinstance(open_probes, bool):
        raise ConfigError(f"{config_file}: [auth] open_probes must be true or false")
    entries = auth.get("tokens", [])
    if not isinstance(entries, list) or not all(isinstance(t, dict) for t in entries):
        raise ConfigError(f"{config_file}: tokens go in [[auth.tokens]] tables")
    tokens, names, digests = [], set(), set()
    for number, entry in enumerate(entries, 1):
        name = entry.get("name")
        where = f"{config_file}: [[auth.tokens]] #{number}" + (f" ({name!r})" if isinstance(name, str) else "")
        unknown = set(entry) - TOKEN_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a token takes "
                              f"{', '.join(sorted(TOKEN_KEYS))}")
        if not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise ConfigError(f"{where}: needs a name (a string, up to 128 characters)")
        if name in names:
            raise ConfigError(f"{where}: two tokens are named {name!r}")
        names.add(name)
        secret = _token_secret(entry, where, environ)
        digest = secret_digest(secret)
        if digest in digests:
            raise ConfigError(f"{where}: has the same secret as another token")
        digests.add(digest)
        scopes = entry.get("scopes")
        if not isinstance(scopes, list) or not scopes or not all(s in SCOPES for s in scopes):
            raise ConfigError(f"{where}: scopes must be a non-empty list of {', '.join(SCOPES)}")
        tables = entry.get("tables", [])
        if not isinstance(tables, list) or not all(isinstance(t, str) and t for t in tables):
            raise ConfigError(f"{where}: tables must be a list of table names or globs, e.g. [\"events\", \"clicks_*\"]")
        quotas = {}
        for key in ("events_per_second", "bytes_per_second"):
            value = entry.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ConfigError(f"{where}: {key} must be a positive number")
            quotas[key] = float(value) if value is not None else None
        tokens.append(Token(name, digest, frozenset(scopes), tuple(t.lower() for t in tables), **quotas))
    return Tokens(tokens, open_probes)


def _token_secret(entry: dict, where: str, environ) -> str:
    given = [key for key in ("secret", "secret_env", "secret_file") if key in entry]
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of secret, secret_env or secret_file")
    key, value = given[0], entry[given[0]]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    if key == "secret_env":
        secret = environ.get(value)
        if secret is None:
            raise ConfigError(f"{where}: the environment variable {value} (secret_env) is not set")
    elif key == "secret_file":
        try:
            secret = Path(value).read_text()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read secret_file {value}: {exc.strerror or exc}") from None
    else:
        secret = value
    secret = secret.strip()
    if len(secret) < 16:
        raise ConfigError(f"{where}: the secret must be at least 16 characters (e.g. `openssl rand -hex 24`)")
    return secret


def _table_configs(tables, config_file) -> dict:
    from ingest.schema import declared_schema, declared_types

    configs = {}
    if not isinstance(tables, dict):
        raise ConfigError(f"{config_file}: [tables] must be a table of tables")
    for name, table in tables.items():
        where = f"{config_file}: [tables.{name}]"
        problem = table_name_problem(name)
        if problem:
            raise ConfigError(f"{where}: {problem}")
        if not isinstance(table, dict) or set(table) - {"strict", "columns"}:
            raise ConfigError(f"{where}: only 'strict' and 'columns' may be set")
        strict = table.get("strict", False)
        if not isinstance(strict, bool):
            raise ConfigError(f"{where}: strict must be true or false")
        columns = table.get("columns")
        if columns is None:
            if strict:
                raise ConfigError(f"{where}: strict needs [tables.{name}.columns]")
            configs[name] = TableConfig(None, False)
            continue
        try:
            schema = declared_schema(columns)
            declared_types(schema, 64)  # nesting errors show now, not on the first event
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        configs[name] = TableConfig(schema, strict)
    return configs


def _source_settings(raw, where: str) -> dict:
    from ingest.sources.sdk import source_settings

    try:
        return source_settings(raw, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _sdk_tables(sources: dict) -> dict:
    """The declared columns of the tables the SDK sources land in, as [tables.NAME] would give them."""
    from ingest.schema import declared_schema
    from ingest.sources.sdk import sdk_sources

    tables, owners = {}, {}
    for name, source in sdk_sources().items():
        for kind, table in sources[name].tables.items():
            owner = owners.setdefault(table.lower(), f"[sources.{name}] tables.{kind}")
            if owner != f"[sources.{name}] tables.{kind}":
                raise ConfigError(f"{owner} and [sources.{name}] tables.{kind} both land in {table!r}; "
                                  "give each its own table")
        for table, columns in source.declared_columns(sources[name]).items():
            tables[table] = TableConfig(declared_schema(dict(columns)), False)
    return tables


def env_name(name: str) -> str:
    return "INGEST_" + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _convert(name: str, value, source: str):
    kind = {f.name: f.type for f in settable_fields()}[name]
    try:
        if kind == "int":
            return int(value)
        if kind in ("Path", "Path | None"):
            return Path(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be an {kind}, not {value!r}") from None


def load(config_file: Path | None, cli_values: dict, environ=os.environ) -> Settings:
    """Settings from defaults < TOML file < INGEST_* environment < command line."""
    names = [f.name for f in settable_fields()]
    values: dict = {}
    if config_file is not None:
        try:
            root = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
        values["tables"] = _table_configs(root.pop("tables", {}), config_file)
        values["auth"] = _tokens(root.pop("auth", {}), config_file, environ)
        values["sources"] = _source_settings(root.pop("sources", {}), f"{config_file}: ")
        storage = root.pop("delta_storage_options", {})
        if not isinstance(storage, dict) or not all(isinstance(v, (str, bool, int)) for v in storage.values()):
            raise ConfigError(f"{config_file}: [delta_storage_options] holds object-store options, "
                              "e.g. aws_region = \"eu-west-1\"")
        values["delta_storage_options"] = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in storage.items()}
        doc = root.get("serve", root)  # settings may sit at top level or under [serve]
        for key, value in doc.items():
            key = key.replace("-", "_")
            if key not in names:
                raise ConfigError(f"{config_file}: unknown setting {key!r}")
            values[key] = _convert(key, value, str(config_file))
    for name in names:
        if env_name(name) in environ:
            values[name] = _convert(name, environ[env_name(name)], env_name(name))
    for name, value in cli_values.items():
        if value is not None:
            values[name] = _convert(name, value, flag_name(name))
    settings = Settings(**values)
    if not settings.sources:
        settings.sources = _source_settings({}, "")
    settings.tables = {**_sdk_tables(settings.sources), **settings.tables}  # a table declared in the file wins
    if settings.webhook_secret_file is not None:
        if settings.webhook_secret:
            raise ConfigError("give the webhook secret once: INGEST_WEBHOOK_SECRET or webhook_secret_file, not both")
        try:
            settings.webhook_secret = settings.webhook_secret_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read webhook_secret_file {settings.webhook_secret_file}: "
                              f"{exc.strerror or exc}") from None
    settings.validate()
    return settings
