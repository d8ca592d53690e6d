"""The suite's own promises: it never reaches for the network (``conftest.no_network``)."""

import socket
import urllib.error
import urllib.request

import pytest


def test_the_network_is_out_of_reach_and_loopback_is_not():
    with pytest.raises(urllib.error.URLError, match="offline"):
        urllib.request.urlopen("http://download.pytorch.org/models/resnet18-f37072fd.pth", timeout=5)
    with pytest.raises(OSError, match="offline"), socket.socket() as client:
        client.connect(("192.0.2.1", 80))
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client.connect(server.getsockname())
        assert client.getpeername() == server.getsockname()
    assert socket.getaddrinfo("localhost", 80)
