"""[sources.NAME] in the config file: the SDK sources' tables and limits,
checked when the settings are read, each mistake one line naming the key."""
from __future__ import annotations

import pytest

from ingest.server.config import ConfigError, load
from ingest.sources.sdk import sdk_sources


def settings_from(tmp_path, text: str):
    config = tmp_path / "ingest.toml"
    config.write_text(text)
    return load(config, {}, environ={})


def test_each_source_lands_in_its_default_tables_with_their_columns_declared():
    settings = load(None, {}, environ={})
    segment = settings.sources["segment"]
    assert segment.tables["track"] == "tracks" and segment.limits["max_batch_bytes"] == 500 << 10
    tracks = settings.tables["tracks"].schema
    assert str(tracks.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert tracks.field("properties").metadata == {b"ingest.type": b"json"}
    assert not settings.tables["tracks"].strict  # a client may still add columns of its own
    assert set(sdk_sources()) >= {"segment"}


def test_tables_and_limits_are_overridden_and_a_declared_table_keeps_its_columns(tmp_path):
    settings = settings_from(tmp_path, '[sources.segment]\ntables = {track = "web_tracks"}\nmax_event_bytes = 1000\n'
                                       '[tables.identifies]\ncolumns = {user_id = "string"}\n')
    segment = settings.sources["segment"]
    assert (segment.tables["track"], segment.tables["page"], segment.limits["max_event_bytes"]) == (
        "web_tracks", "pages", 1000)
    assert "web_tracks" in settings.tables and "tracks" not in settings.tables
    assert settings.tables["identifies"].schema.names == ["user_id"]


@pytest.mark.parametrize("text, message", [
    ("[sources.segmnt]\n", "[sources.segmnt]: no such source; the sources are segment"),
    ('[sources.segment]\ntables = {trak = "x"}\n', "tables has no kind 'trak'; the kinds are track, identify"),
    ('[sources.segment]\ntables = {track = "9lives"}\n', "tables.track: "),
    ('[sources.segment]\ntables = "tracks"\n', "tables must be a table of kind = \"table name\""),
    ("[sources.segment]\nmax_event_bytes = 0\n", "max_event_bytes must be a positive whole number"),
    ("[sources.segment]\nmax_events = 5\n", "unknown key(s) max_events; it takes tables, max_event_bytes"),
    ('[sources.segment]\ntables = {track = "events", identify = "Events"}\n',
     "tables.track and [sources.segment] tables.identify both land in 'Events'"),
])
def test_a_mistake_is_one_line_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as refused:
        settings_from(tmp_path, text)
    assert message in str(refused.value) and "\n" not in str(refused.value)
