"""The app container's health check: asks uWSGI for /readyz over its unix socket.

The app container has no network and no HTTP port of its own, so the check speaks
uWSGI's binary protocol to the same socket nginx uses. Exit 0 when /readyz answers
200, 1 otherwise (with the status line or the reason on stdout, which
`docker inspect` shows).

Usage: python3 uwsgi_readyz.py [SOCKET] [--path /readyz] [--timeout 4]
"""
import argparse
import os
import socket
import struct
import sys


def default_socket() -> str:
    """This replica's socket, named as uwsgi.ini names it."""
    if os.environ.get("POKEGEN_SOCKET_DIR"):
        return os.path.join(os.environ["POKEGEN_SOCKET_DIR"], f"app-{socket.gethostname()}.sock")
    return os.environ.get("POKEGEN_SOCKET", "/run/pokegen/uwsgi.sock")


def _sized(value: bytes) -> bytes:
    return struct.pack("<H", len(value)) + value


def uwsgi_packet(path: str, query: str = "") -> bytes:
    """A GET request as uWSGI's packet: a 4-byte header and the CGI variables."""
    uri = f"{path}?{query}" if query else path
    variables = {
        "REQUEST_METHOD": "GET", "REQUEST_URI": uri, "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.0", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "HTTP_USER_AGENT": "healthcheck",
    }
    body = b"".join(_sized(k.encode()) + _sized(v.encode()) for k, v in variables.items())
    return struct.pack("<BHB", 0, len(body), 0) + body


def response(socket_path: str, path: str, timeout: float, limit: int = 1 << 20) -> bytes:
    """The whole HTTP answer (status line, headers, body) to GET path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(socket_path)
        conn.sendall(uwsgi_packet(path))
        answer = b""
        while len(answer) < limit:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def status_line(socket_path: str, path: str, timeout: float) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(socket_path)
        conn.sendall(uwsgi_packet(path))
        answer = b""
        while b"\r\n" not in answer and len(answer) < 4096:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0].decode("latin-1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", nargs="?", default=default_socket(), help="uWSGI's unix socket")
    parser.add_argument("--path", default="/readyz", help="the path to ask for")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds to wait for the answer")
    args = parser.parse_args()
    try:
        line = status_line(args.socket, args.path, args.timeout)
    except OSError as error:
        print(f"not ready: {args.socket}: {error}")
        return 1
    print(line or "not ready: no answer")
    parts = line.split()
    return 0 if len(parts) > 1 and parts[1] == "200" else 1


if __name__ == "__main__":
    sys.exit(main())
