"""Slot uids: each concurrent sandbox run (as root) gets a uid of its own.

Why a uid per run: RLIMIT_NPROC counts the processes of a *uid*, so a fork bomb is capped only
when no other run shares the uid; a process of another uid cannot signal the parent (it could
as root, or as the parent's own user); and "nothing left behind" can be checked exactly: when
the run is over, no process of its uid may exist. The uids are UID_BASE + slot, numbers no
account uses; no /etc/passwd entry is needed to run as one.

A slot is held with flock on `<lock dir>/slot-<n>.lock` (an flock is per open file, so threads
and other processes on the machine exclude each other). Before a slot is handed out and after
each run, `sweep` kills every process of its uid. The slots are taken in rotation (each
acquire starts after the slot the previous one took), not lowest first: a killed program's
processes stay zombies until init reaps them (here up to ~2 s), and a zombie still counts
against its uid's RLIMIT_NPROC, so a slot reused at once could not fork its full share.
"""

from __future__ import annotations

import fcntl
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional

UID_BASE = 1_990_000_000
MAX_SLOTS = 256


def processes_of(uid: int) -> List[int]:
    """Live pids whose real or effective uid is `uid` (read from /proc/<pid>/status).

    Zombies are left out: they run nothing and hold no memory, and init reaps them once
    their parent is gone (a killed program's children are reparented to it)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"State:") and line.split()[1] in (b"Z", b"X"):
                        break
                    if line.startswith(b"Uid:"):
                        real, eff = line.split()[1:3]
                        if int(real) == uid or int(eff) == uid:
                            pids.append(int(name))
                        break
        except OSError:  # exited meanwhile
            continue
    return pids


def sweep(uid: int, rounds: int = 200) -> int:
    """SIGKILL every process of `uid` until none is left; returns how many were killed.

    A process that forks between the scan and the kill is found by the next round; with
    RLIMIT_NPROC the population is bounded, so this ends in a few rounds.
    """
    if uid == 0 or uid == os.getuid():
        raise ValueError(f"refusing to sweep uid {uid}: not a sandbox uid")
    killed = 0
    for _ in range(rounds):
        pids = processes_of(uid)
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.001)
    raise RuntimeError(f"sandbox uid {uid}: processes still alive after {rounds} sweeps")


class Slots:
    """Hands out slot uids: `with slots.take() as uid: ...`."""

    def __init__(self, lock_dir: Optional[str] = None) -> None:
        self.lock_dir = Path(lock_dir or Path(tempfile.gettempdir()) /
                             f"grpo-sandbox-slots-{os.getuid()}")
        self.lock_dir.mkdir(mode=0o700, exist_ok=True)
        self._swept: set[int] = set()
        self._lock = threading.Lock()
        self._next = 0  # where the next acquire starts looking (rotation)

    def acquire(self) -> tuple[int, int]:
        """(uid, fd of the held lock file); waits while every slot is busy."""
        while True:
            start = self._next
            for slot in ((start + k) % MAX_SLOTS for k in range(MAX_SLOTS)):
                fd = os.open(self.lock_dir / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                uid = UID_BASE + slot
                with self._lock:
                    self._next = (slot + 1) % MAX_SLOTS
                    first = uid not in self._swept
                    self._swept.add(uid)
                if first:  # left over from a parent that died mid-run
                    sweep(uid)
                return uid, fd
            time.sleep(0.01)

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)  # closing the file drops the flock
