import os
import socket

from bzzz.systemd import Notifier


def test_notifications_reach_the_socket(tmp_path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        notifier.ready("peers=0")
        notifier.watchdog()
        notifier.stopping()
        received = [server.recv(4096).decode() for _ in range(3)]
    assert received == ["READY=1\nSTATUS=peers=0", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]


def test_abstract_sockets_are_supported():
    name = f"bzzz-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert server.recv(100) == b"WATCHDOG=1"


def test_watchdog_interval_is_half_of_systemds_and_only_for_our_pid():
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    mine = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval == 15.0
    other = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    assert Notifier(other).watchdog_interval is None


def test_without_systemd_nothing_happens():
    Notifier({}).ready("x")  # no socket, no error


def test_a_receiver_that_does_not_drain_never_blocks_the_sender(tmp_path):
    path = tmp_path / "full.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        for _ in range(5000):  # far beyond the queue of any datagram socket
            notifier.watchdog()
        assert server.recv(100) == b"WATCHDOG=1"
