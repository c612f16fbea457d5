"""The command line: documented flags, settings precedence, port reporting."""
import signal
import subprocess
import sys

import pytest

from ingest.server import config
from ingest.server.config import ConfigError

FIXED_FLAGS = ["--data-dir", "--host", "--tcp-port", "--http-port", "--sink", "--batch-events",
               "--batch-bytes", "--flush-interval", "--tcp-table", "--config"]


def test_serve_help_documents_every_flag_and_its_environment_variable():
    result = subprocess.run([sys.executable, "-m", "ingest", "serve", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for flag in FIXED_FLAGS:
        assert flag in result.stdout
    for field in config.settable_fields():
        assert config.env_name(field.name) in result.stdout


def test_command_line_beats_environment_beats_toml_file(tmp_path):
    toml = tmp_path / "ingest.toml"
    toml.write_text('[serve]\nbatch_events = 10\nflush_interval = 20\nsink = "parquet"\n')
    env = {"INGEST_FLUSH_INTERVAL": "30", "INGEST_TCP_TABLE": "from_env"}
    settings = config.load(toml, {"sink": "duckdb", "batch_bytes": None}, environ=env)
    assert (settings.batch_events, settings.flush_interval, settings.sink, settings.tcp_table) == (10, 30, "duckdb", "from_env")


@pytest.mark.parametrize("toml,env,message", [
    ('sink = "kafka"\n', {}, "sink must be one of"),
    ("unknown_thing = 1\n", {}, "unknown setting"),
    ("", {"INGEST_BATCH_EVENTS": "many"}, "INGEST_BATCH_EVENTS"),
    ('tcp_table = "a b"\n', {}, "invalid table name"),
])
def test_bad_settings_are_named(tmp_path, toml, env, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        config.load(path, {}, environ=env)


def test_bad_flag_value_exits_with_a_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "serve", "--data-dir", str(tmp_path), "--batch-events", "0"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and "batch_events must be positive" in result.stderr


def test_port_zero_reports_the_bound_ports(start_server):
    server = start_server()
    assert server.tcp_port > 0 and server.http_port > 0 and server.tcp_port != server.http_port
    assert server.http("GET", "/health")[0] == 200
    assert server.stop() == 0


def test_declared_tables_come_from_the_config_file(tmp_path):
    toml = tmp_path / "ingest.toml"
    toml.write_text('[tables.orders]\nstrict = true\n[tables.orders.columns]\nid = "int64"\nday = "date"\n')
    settings = config.load(toml, {}, environ={})
    declared = settings.tables["orders"]
    assert declared.strict and [f.name for f in declared.schema] == ["id", "day"]
    toml.write_text('[tables.orders.columns]\nid = "integer"\n')
    with pytest.raises(ConfigError, match=r"\[tables.orders\]"):
        config.load(toml, {}, environ={})


def test_version():
    result = subprocess.run([sys.executable, "-m", "ingest", "--version"], capture_output=True, text=True, timeout=30)
    from ingest import __version__

    assert result.returncode == 0 and result.stdout == f"ingest {__version__}\n"


def test_a_server_killed_with_minus_9_is_not_taken_for_a_running_one(start_server):
    server = start_server("--flush-interval", 20)
    assert server.ingest("t", b'{"a":1}\n{"a":2}\n')[0] == 200
    server.wait_landed("t", 2)
    query = [sys.executable, "-m", "ingest", "query", "SELECT count(*) AS n FROM t", "--format", "json",
             "--data-dir", str(server.data_dir)]
    assert subprocess.run(query, capture_output=True, text=True, timeout=60).stdout == '{"n": 2}\n'  # through it
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    assert (server.data_dir / "server.json").exists()  # left behind, naming a dead pid
    offline = subprocess.run(query, capture_output=True, text=True, timeout=60)
    assert (offline.returncode, offline.stdout) == (0, '{"n": 2}\n')
    replay = subprocess.run([sys.executable, "-m", "ingest", "deadletter", "replay", "--data-dir", str(server.data_dir)],
                            capture_output=True, text=True, timeout=60)
    assert replay.returncode == 1 and "no server is running" in replay.stderr
