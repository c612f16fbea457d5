"""Load spread over several nodes, as a round-robin load balancer would,
run as its own process: POSTs events with consecutive ids, one keep-alive
connection per node, and records each acknowledged range in a file as
`acked FIRST STOP`. A request whose connection breaks is recorded as
`unknown FIRST STOP` (it may or may not be in the node's log) and never
resent; that node gets no more requests. Stops after COUNT events, or
before the next request once a line arrives on stdin.

    python spread_load.py TABLE FIRST_ID COUNT RECORD_FILE PORT [PORT ...]
"""
import http.client
import json
import select
import sys

PER_REQUEST = 200


def main() -> None:
    table, first, count, record_path, *ports = sys.argv[1:]
    first, count = int(first), int(count)
    connections = {int(port): http.client.HTTPConnection("127.0.0.1", int(port), timeout=60) for port in ports}
    with open(record_path, "a") as record:
        for n, start in enumerate(range(first, first + count, PER_REQUEST)):
            if not connections or select.select([sys.stdin], [], [], 0)[0]:
                return
            port = list(connections)[n % len(connections)]
            ids = range(start, min(start + PER_REQUEST, first + count))
            body = "".join(json.dumps({"id": i, "payload": f"event {i}", "n": i % 7}) + "\n" for i in ids).encode()
            try:
                connections[port].request("POST", f"/v1/ingest/{table}", body=body,
                                          headers={"Content-Type": "application/x-ndjson"})
                response = connections[port].getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                record.write(f"unknown {ids.start} {ids.stop}\n")
                record.flush()
                connections.pop(port).close()
                continue
            if response.status == 200:
                record.write(f"acked {ids.start} {ids.stop}\n")
                record.flush()


if __name__ == "__main__":
    main()
