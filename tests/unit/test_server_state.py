"""server/state.py on real files and real locks: what server.json says is
only believed while its pid holds the data directory's lock."""
import os

from ingest.server.state import (DataDirLock, ServerState, lock_holder, read_state, remove_state, running_server,
                                 state_path, write_state)


def this_server(pid=None) -> ServerState:
    return ServerState(pid or os.getpid(), "127.0.0.1", "duckdb", 5001, 5002)


def test_an_empty_or_missing_data_dir_has_no_server_and_is_left_as_it_was(tmp_path):
    missing = tmp_path / "nowhere"
    assert running_server(missing) is None and lock_holder(missing) is None
    assert not missing.exists()
    assert running_server(tmp_path) is None and list(tmp_path.iterdir()) == []


def test_the_state_round_trips_and_is_removed(tmp_path):
    write_state(tmp_path, this_server())
    assert read_state(tmp_path) == this_server()
    assert read_state(tmp_path).http_url == "http://127.0.0.1:5002"
    remove_state(tmp_path)
    assert read_state(tmp_path) is None and not state_path(tmp_path).exists()
    remove_state(tmp_path)  # twice is fine


def test_an_unreadable_state_file_is_no_state(tmp_path):
    for text in ("", "{not json", '{"pid": 1}', "[1, 2]"):
        state_path(tmp_path).write_text(text)
        assert read_state(tmp_path) is None, text
        assert running_server(tmp_path) is None


def test_a_state_file_without_the_lock_is_left_over_from_a_killed_server(tmp_path):
    write_state(tmp_path, this_server())
    assert running_server(tmp_path) is None
    with DataDirLock(tmp_path).acquire():
        assert lock_holder(tmp_path) == str(os.getpid())
        assert running_server(tmp_path) == this_server()
    assert lock_holder(tmp_path) is None and running_server(tmp_path) is None


def test_a_lock_held_by_another_pid_than_the_state_file_names_is_not_that_server(tmp_path):
    write_state(tmp_path, this_server(pid=os.getpid() + 1))  # an offline tool holds the lock, the file is stale
    with DataDirLock(tmp_path).acquire("`ingest wal repair`"):
        assert running_server(tmp_path) is None


def test_looking_takes_nothing_from_the_holder(tmp_path):
    with DataDirLock(tmp_path).acquire():
        for _ in range(3):
            assert lock_holder(tmp_path) == str(os.getpid())
        assert (tmp_path / "ingest.lock").read_text() == f"{os.getpid()}\n"
    DataDirLock(tmp_path).acquire().release()  # nothing was left holding it
