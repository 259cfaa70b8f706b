"""The namespace fixture the virtual classroom builds on: real stacks joined by a veth pair."""

import socket
import sys

import pytest

from appliance.harness.netns import ip

pytestmark = pytest.mark.integration

ECHO = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.0.2.1", 7007)); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()
"""


def test_two_namespaces_pass_traffic(network):
    network.add("pi")
    network.add("laptop")
    network.link("pi", "laptop", "192.0.2.1/24", "192.0.2.50/24")
    pi, laptop = network.namespaces["pi"], network.namespaces["laptop"]

    assert "1 received" in laptop.run("ping", "-c", "1", "-W", "2", "192.0.2.1").stdout

    server = pi.popen(sys.executable, "-c", ECHO, stdout=-1, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        client = laptop.run(sys.executable, "-c", (
            "import socket; c = socket.create_connection(('192.0.2.1', 7007), 3);"
            "c.sendall(b'hello'); print(c.recv(100).decode())"))
        assert client.stdout.strip() == "HELLO"
    finally:
        server.wait(5)


def test_namespaces_are_isolated_from_the_host(network):
    network.add("pi")
    # No route out: the namespace cannot reach anything but itself (only lo exists).
    result = network.namespaces["pi"].run("ping", "-c", "1", "-W", "1", "198.51.100.1", check=False)
    assert result.returncode != 0
    # And the host cannot reach into it.
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 7007), 0.5)


def test_namespaces_are_removed_afterwards(network):
    ns = network.add("gone")
    network.close()
    assert ns.name not in ip("netns", "list").stdout
