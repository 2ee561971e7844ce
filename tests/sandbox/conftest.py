"""Fixtures of the sandbox tests: a sandbox with small limits, and the leftover check.

Every test here runs hostile programs; `no_leftovers` (autouse) asserts after each one that no
process of a sandbox uid is alive and that no sandbox temp dir is left in the host's /tmp.
The `sandbox` fixture runs each test under every isolation this machine has: `uid` as root
(`process` otherwise) and `bwrap` where a working bubblewrap is found (else skipped, saying why).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from contextlib import contextmanager

import pytest

from grpo_cli.errors import UserError
from grpo_cli.sandbox import Limits, Sandbox
from grpo_cli.sandbox.slots import MAX_SLOTS, UID_BASE

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="isolation 'uid' needs root")


def _no_bwrap() -> str:
    """Why isolation=bwrap cannot run here ('' when it can)."""
    try:
        Sandbox(isolation="bwrap")
    except UserError as e:
        return str(e)
    return ""


NO_BWRAP = _no_bwrap()
needs_bwrap = pytest.mark.skipif(bool(NO_BWRAP), reason=NO_BWRAP)
ISOLATIONS = [pytest.param("uid" if ROOT else "process"),
              pytest.param("bwrap", marks=needs_bwrap)]


def needs_isolation(sandbox: Sandbox) -> None:
    """Skip a test of what only isolation uid or bwrap gives (not process)."""
    if sandbox.isolation == "process":
        pytest.skip("isolation 'process' (not root, no working bwrap) does not give this")


def sandbox_leftovers() -> list[int]:
    """Live processes of any slot uid (one pass over /proc: slots are taken in rotation)."""
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = dict(line.split(b":", 1) for line in f if b":" in line)
        except OSError:  # exited meanwhile
            continue
        uids = [int(u) for u in status.get(b"Uid", b"").split()[:2]]
        state = status.get(b"State", b"?").split()[:1]
        if state not in ([b"Z"], [b"X"]) and any(UID_BASE <= u < UID_BASE + MAX_SLOTS
                                                 for u in uids):
            pids.append(int(name))
    return pids


def _tmp_entries() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("grpo-sbx-")}


@pytest.fixture(autouse=True)
def no_leftovers():
    before = _tmp_entries()
    yield
    assert sandbox_leftovers() == []
    assert _tmp_entries() - before == set()


@pytest.fixture(scope="module", params=ISOLATIONS)
def sandbox(request) -> Sandbox:
    """wall 3 s, CPU 1 s, 256 MB, 64 KB files, 8 processes; one per isolation."""
    return Sandbox(Limits(wall_s=3.0, cpu_s=1.0, memory_mb=256, file_mb=1 / 16,
                          processes=8, output_chars=500), isolation=request.param)


assert MAX_SLOTS >= 8


@contextmanager
def localhost_listener(timeout_s: float):
    """A server on 127.0.0.1 for network tests: yields (port, got), `got` receiving the first
    connection's first bytes. On exit, if nothing connected, the test connects itself and sends
    b"parent" (waking accept() up), then the server closes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(timeout_s)
    got: list = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100))
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield server.getsockname()[1], got
    finally:
        if not got:
            with socket.create_connection(("127.0.0.1", server.getsockname()[1])) as ours:
                ours.sendall(b"parent")
        thread.join()
        server.close()
