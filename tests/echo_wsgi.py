"""A stand-in app for nginx tests, run by real uWSGI: answers every request
with JSON naming the method, the path, the client address nginx passed on and
the size of the body, after sleeping `?hold=SECONDS` (to keep a request open);
with `?trickle=N`, instead N lines a third of a second apart (a stream)."""
import json
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    body_bytes = len(environ["wsgi.input"].read())
    if "trickle" in query:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return _trickle(int(query["trickle"][0]))
    time.sleep(float(query.get("hold", ["0"])[0]))
    body = json.dumps({"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                       "remote_addr": environ.get("REMOTE_ADDR"),
                       "body_bytes": body_bytes}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _trickle(lines: int):
    for n in range(lines):
        yield f"data: {n} {time.time()}\n\n".encode()
        time.sleep(0.33)
