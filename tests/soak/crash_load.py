"""Load for the crash test, run as its own process: POSTs events with
consecutive ids and records each acknowledged range in a file, until the
server goes away or `count` events are acknowledged.

    python crash_load.py HOST PORT TABLE FIRST_ID COUNT ACKED_FILE
"""
import http.client
import json
import sys

PER_REQUEST = 200


def main() -> None:
    host, port, table, first, count, acked_path = sys.argv[1:]
    port, first, count = int(port), int(first), int(count)
    with open(acked_path, "a") as acked:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        for start in range(first, first + count, PER_REQUEST):
            ids = range(start, min(start + PER_REQUEST, first + count))
            body = "".join(json.dumps({"id": i, "payload": f"event {i}", "n": i % 7}) + "\n" for i in ids).encode()
            try:
                conn.request("POST", f"/v1/ingest/{table}", body=body, headers={"Content-Type": "application/x-ndjson"})
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                return  # the server was killed: what was not acknowledged may or may not have landed
            if response.status == 200:
                acked.write(f"{ids.start} {ids.stop}\n")
                acked.flush()


if __name__ == "__main__":
    main()
