"""A stand-in app for nginx tests, run by real uWSGI: answers every request
with JSON naming the path and the client address nginx passed on, after
sleeping `?hold=SECONDS` (to keep a request open)."""
import json
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    time.sleep(float(query.get("hold", ["0"])[0]))
    body = json.dumps({"path": environ["PATH_INFO"],
                       "remote_addr": environ.get("REMOTE_ADDR")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
