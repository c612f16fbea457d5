"""Load for the bench scripts: sender processes that POST bodies of unique
events over keep-alive connections for a few seconds, all starting at once."""
from __future__ import annotations

import http.client
import multiprocessing
import time
import uuid


def _send(port: int, path: str, content_type: str, template: bytes, batch: int, seconds: float,
          ready, go, results) -> None:
    prefix = uuid.uuid4().hex.encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    ready.release()
    go.wait()
    sent, deadline, request = 0, time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        ids = tuple(b"%s-%d-%d" % (prefix, request, i) for i in range(batch))
        connection.request("POST", path, template % ids, {"Content-Type": content_type})
        answer = connection.getresponse()
        answer.read()
        if answer.status == 200:
            sent += batch
        request += 1
    results.put(sent)


def run_senders(ports: list[int], path: str, content_type: str, template: bytes, batch: int, seconds: float,
                on_start=lambda: None) -> int:
    """One sender per entry of `ports` (a port may repeat), each posting
    `template` with its `batch` %s filled by fresh ids; `on_start` runs just
    before they are let go. Returns the events acknowledged with 200."""
    ready, go, results = multiprocessing.Semaphore(0), multiprocessing.Event(), multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_send, args=(port, path, content_type, template, batch, seconds,
                                                             ready, go, results)) for port in ports]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    on_start()
    go.set()
    total = sum(results.get() for _ in processes)
    for process in processes:
        process.join()
    return total
