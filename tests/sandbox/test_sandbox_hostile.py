"""Hostile programs, each contained: the right status and share, the parent alive, nothing left.

Each runs under every isolation this machine has (conftest.py). The list is issue 19's:
infinite loop, fork bomb, memory bomb, output flood, writes outside the
work dir, reading the parent's secrets, a socket to 127.0.0.1, killing the parent, leaving
early, a fake "all tests passed", redefined helpers and harness names, background processes.
The autouse `no_leftovers` fixture (conftest.py) checks for processes and temp dirs after each.
"""

from __future__ import annotations

import os

import pytest
from conftest import localhost_listener, needs_isolation

from grpo_cli.sandbox import TestProgram

F_TESTS = [("assert f(1) == 2", True), ("assert f(2) == 3", True), ("assert f(3) == 4", True)]
GOOD_F = "def f(x):\n    return x + 1\n"


def run(sandbox, program: str, steps=F_TESTS):
    return sandbox.run(TestProgram(program, steps))


def test_infinite_loop_hits_the_cpu_limit(sandbox):
    r = run(sandbox, GOOD_F + "while True:\n    pass\n")
    assert (r.status, r.passed) == ("timeout", 0) and "CPU" in r.detail


def test_sleeping_forever_hits_the_wall_clock(sandbox):
    r = run(sandbox, GOOD_F + "import time\ntime.sleep(1000)\n")
    assert (r.status, r.passed) == ("timeout", 0) and "wall" in r.detail
    assert r.seconds < sandbox.limits.wall_s + 2


def test_a_loop_inside_a_test_keeps_the_tests_passed_before_it(sandbox):
    prog = "def f(x):\n    while x == 3:\n        pass\n    return x + 1\n"
    r = run(sandbox, prog)
    assert (r.status, r.passed, r.total) == ("timeout", 2, 3)


def test_process_limit_caps_forks(sandbox):
    """Small scale first: 8 tasks in all, so at most 7 forks succeed."""
    needs_isolation(sandbox)
    prog = GOOD_F + (
        "import os, time\nok = 0\nfor i in range(20):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(60)\n"
        "        os._exit(0)\n    ok += 1\nprint('forked', ok)\n")
    r = run(sandbox, prog)
    assert r.status == "passed"
    assert "forked 7" in r.stdout


def test_fork_bomb(sandbox):
    needs_isolation(sandbox)
    prog = GOOD_F + "import os\nwhile True:\n    try:\n        os.fork()\n" \
                    "    except OSError:\n        pass\n"
    r = run(sandbox, prog)
    assert r.status == "timeout" and r.passed == 0


def test_memory_bomb_at_top_level(sandbox):
    r = run(sandbox, GOOD_F + "x = []\nwhile True:\n    x.append(bytearray(10 << 20))\n")
    assert (r.status, r.passed) == ("crashed", 0) and "MemoryError" in r.detail


def test_memory_bomb_inside_one_test_fails_that_test(sandbox):
    prog = "def f(x):\n    if x == 2:\n        return len(bytearray(1 << 40))\n    return x + 1\n"
    r = run(sandbox, prog)
    assert (r.status, r.passed) == ("failed", 2)


def test_gigabytes_of_output_are_cut_by_the_file_size_limit(sandbox):
    r = run(sandbox, GOOD_F + "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    # Python ignores SIGXFSZ: the write past RLIMIT_FSIZE raises OSError (EFBIG) instead
    assert (r.status, r.passed) == ("crashed", 0) and r.detail == "program raised OSError"
    assert len(r.stdout) == sandbox.limits.output_chars


def test_a_large_file_is_cut_too(sandbox):
    r = run(sandbox, GOOD_F + "with open('big', 'wb') as f:\n    f.write(b'x' * (1 << 30))\n")
    assert r.status == "crashed"


def test_writes_outside_the_work_dir_do_not_land(sandbox, tmp_path):
    needs_isolation(sandbox)
    run_dir = tmp_path / "run"  # like outputs/<run>: root's, 0755
    run_dir.mkdir()
    targets = [run_dir / "pwned", "/root/pwned", "/tmp/grpo-sbx-pwned", "/var/tmp/pwned",
               "/dev/shm/pwned", os.path.abspath("pwned-by-sandbox")]
    prog = GOOD_F + "import os\nfor p in %r:\n    try:\n        open(p, 'w').write('x')\n" \
                    "        print('wrote', p)\n    except OSError as e:\n" \
                    "        print('refused', p, type(e).__name__)\n" % [str(t) for t in targets]
    r = run(sandbox, prog)
    assert r.status == "passed"
    for t in targets:
        assert not os.path.exists(t), t
    # /tmp is the run's own (a private tmpfs): writing there works, and is gone afterwards
    assert "wrote /tmp/grpo-sbx-pwned" in r.stdout
    assert "refused /root/pwned" in r.stdout and f"refused {run_dir / 'pwned'}" in r.stdout


def test_what_it_can_read(sandbox):
    """bwrap: a root of its own, without the source tree, /root or /etc's files; uid and
    process: whatever is world-readable (README: not covered there)."""
    here = os.path.abspath(__file__)
    prog = GOOD_F + "import os\nfor p in %r:\n    try:\n        open(p, 'rb').read(1)\n" \
                    "        print('read', p)\n    except OSError as e:\n" \
                    "        print('refused', p, type(e).__name__)\n" % [here, "/etc/hostname"]
    r = run(sandbox, prog)
    assert r.status == "passed"
    if sandbox.isolation == "bwrap":
        assert f"refused {here} FileNotFoundError" in r.stdout
        assert "refused /etc/hostname FileNotFoundError" in r.stdout
    elif os.path.exists("/etc/hostname") and os.stat("/etc/hostname").st_mode & 0o004:
        assert "read /etc/hostname" in r.stdout


def test_the_parents_secrets_do_not_reach_it(sandbox, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sekrit-wandb-0123")
    monkeypatch.setenv("HF_TOKEN", "sekrit-hf-4567")
    prog = GOOD_F + (
        "import os\nprint(dict(os.environ))\n"
        "for p in ('/proc/%d/environ' % os.getppid(), '/proc/1/environ', "
        "'/proc/self/environ'):\n    try:\n        print(open(p, 'rb').read())\n"
        "    except OSError as e:\n        print('refused', p, type(e).__name__)\n")
    r = run(sandbox, prog)
    assert r.status == "passed"
    assert "sekrit" not in r.stdout + r.stderr
    assert sorted(eval(r.stdout.splitlines()[0])) == ["HOME", "LANG", "PATH", "PYTHONHASHSEED",
                                                       "TMPDIR"]


def test_no_socket_to_a_server_on_localhost(sandbox):
    needs_isolation(sandbox)
    with localhost_listener(4.0) as (port, got):
        prog = GOOD_F + ("import socket\ntry:\n    s = socket.create_connection(('127.0.0.1', "
                         f"{port}), timeout=1)\n    s.sendall(b'leak')\n    print('connected')\n"
                         "except OSError as e:\n    print('refused', type(e).__name__)\n")
        r = run(sandbox, prog)
    assert got == [b"parent"] and "refused" in r.stdout and r.status == "passed"


def test_killing_the_parent_fails(sandbox):
    needs_isolation(sandbox)
    r = run(sandbox, GOOD_F + "import os\nos.kill(os.getppid(), 9)\nprint(os.getppid())\n")
    if sandbox.isolation == "bwrap":  # its parent is the PID namespace's init: grpo is not
        assert (r.status, r.stdout) == ("passed", "1\n")  # in it; init ignores the signal
    else:
        assert (r.status, r.detail) == ("crashed", "program raised PermissionError")
    r = run(sandbox, GOOD_F + "import os, signal\nos.killpg(os.getpgid(os.getppid()), 9)\n")
    assert r.status == "crashed"  # we are alive to see it


@pytest.mark.parametrize("leave", ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n",
                                   "raise SystemExit\n", "import os, signal\n"
                                   "os.kill(os.getpid(), signal.SIGKILL)\n"])
def test_leaving_before_the_tests_is_not_passing(sandbox, leave):
    r = run(sandbox, GOOD_F + leave)
    assert (r.status, r.passed) == ("crashed", 0)


def test_exiting_inside_a_test_keeps_only_the_tests_before(sandbox):
    prog = "import os\ndef f(x):\n    if x == 2:\n        os._exit(0)\n    return x + 1\n"
    r = run(sandbox, prog)
    assert (r.status, r.passed) == ("crashed", 1)
    prog = "import sys\ndef f(x):\n    if x == 2:\n        sys.exit(0)\n    return x + 1\n"
    assert run(sandbox, prog).passed == 2  # SystemExit in a test fails that test only


def test_printing_a_fake_verdict_does_not_pass(sandbox):
    prog = ("import os\nprint('all tests passed')\nfor fd in range(3, 64):\n    try:\n"
            "        os.write(fd, b'done 3 3\\nt 0 1\\nt 1 1\\nt 2 1\\n')\n    except OSError:\n"
            "        pass\nprint('3/3 tests passed')\ndef f(x):\n    return 0\n")
    r = run(sandbox, prog)
    assert (r.status, r.passed) == ("failed", 0)


def test_redefined_helpers_and_harness_names_do_not_pass(sandbox):
    prog = ("import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.AssertionError = None\n"
            "def abs(x):\n    return 0\ndef check(candidate):\n    return True\n"
            "candidate = lambda *a: True\nsay = print\ndef f(x):\n    return 10 * x\n")
    steps = [("assert abs(f(1) - 2) < 1e-9", True), ("assert f(2) == 3", True),
             ("assert candidate(1) == 2", True)]
    r = sandbox.run(TestProgram(prog, steps, entry_point="f"))
    assert (r.status, r.passed) == ("failed", 0)


def test_background_processes_are_killed(sandbox):
    needs_isolation(sandbox)
    prog = GOOD_F + (
        "import os, subprocess, time\nsubprocess.Popen(['sleep', '1000'])\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(1000)\n"
        "    os._exit(0)\n")
    r = run(sandbox, prog)
    assert r.status == "passed"  # the autouse fixture checks that no process is left
