"""`ingest.client` needs only the standard library: in a fresh interpreter where
the server's dependencies cannot be imported, a Client still posts to a
stand-in server, and only the client's own modules of `ingest` were loaded."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_DEPENDENCIES = ("duckdb", "pyarrow", "numpy", "httptools", "uvloop", "prometheus_client", "matplotlib", "tqdm")

# Runs in the child: a finder first on sys.meta_path refuses the server's
# dependencies and notes each attempt, so a guarded `try: import numpy` shows too.
CHILD = """
import http.server, json, sys, threading

BLOCKED = set(sys.argv[1].split(","))
attempted = []

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            attempted.append(name)
            raise ImportError(f"{name} is blocked: the client must not need it")
        return None

sys.meta_path.insert(0, Refuse())

class Ingest(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        lines = self.rfile.read(int(self.headers["Content-Length"])).splitlines()
        body = json.dumps({"accepted": len(lines), "rejected": 0, "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ingest)
threading.Thread(target=server.serve_forever, daemon=True).start()

from ingest.client import Client

with Client(f"http://127.0.0.1:{server.server_address[1]}", flush_interval=0.01) as client:
    reply = client.post("clicks", [{"user": "ada"}, {"user": "bob"}])
    client.send("clicks", {"user": "eve"})
    flushed = client.flush(timeout=60)
server.shutdown()
print(json.dumps({
    "reply": reply, "flushed": flushed, "acknowledged": client.acknowledged, "attempted": attempted,
    "modules": sorted(name for name in sys.modules if name == "ingest" or name.startswith("ingest.")),
}))
"""


def test_the_client_imports_and_posts_without_the_servers_dependencies(tmp_path):
    result = subprocess.run([sys.executable, "-c", CHILD, ",".join(SERVER_DEPENDENCIES)], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["reply"]["accepted"] == 2
    assert seen["flushed"] and seen["acknowledged"] == 1  # the event send() queued; post() answers with its reply
    assert seen["attempted"] == []
    outside = [name for name in seen["modules"] if not name.startswith("ingest.client")]
    assert outside == ["ingest", "ingest.backoff", "ingest.protocol"]
    assert "ingest.client" in seen["modules"]


def test_the_blocker_does_refuse_what_it_names(tmp_path):
    """The child's finder works: without it the test above would pass on any client."""
    script = CHILD.split("class Ingest")[0] + "import numpy\n"
    result = subprocess.run([sys.executable, "-c", script, "numpy"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert result.returncode != 0
    assert "numpy is blocked" in result.stderr
