"""Noticing a client that went away, on a real socket pair: open and quiet,
open with bytes waiting, closed by the peer."""
import socket

from app.client_connection import disconnect_check


def test_a_closed_peer_is_gone_an_open_one_is_not():
    server_side, client_side = socket.socketpair()
    try:
        gone = disconnect_check({"werkzeug.socket": server_side})
        assert gone() is False
        client_side.sendall(b"GET / HTTP/1.1\r\n")  # bytes waiting are not an ending
        assert gone() is False
        assert server_side.recv(100) == b"GET / HTTP/1.1\r\n"  # nothing was consumed
        client_side.close()
        assert gone() is True
        assert server_side.fileno() != -1  # the server's socket is left open
    finally:
        server_side.close()


def test_without_a_socket_the_client_counts_as_present():
    assert disconnect_check({})() is False
