"""Tests never send traffic off the machine: ``patch(monkeypatch)`` makes a connection
from this process to anything but loopback fail the test (both conftests use it)."""
import ipaddress
import socket


def patch(monkeypatch):
    connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                local = host == 'localhost' or ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = False
            if not local:
                raise AssertionError(f'a test tried to connect to {address}; tests stay on this machine')
        return connect(sock, address)
    monkeypatch.setattr(socket.socket, 'connect', loopback_only)
