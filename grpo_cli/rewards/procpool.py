"""A small pool of long-lived worker processes whose calls have a hard time limit.

Why processes, and why these: sympy (under math-verify) can hang on a pathological expression,
and a thread cannot be killed. math-verify's own time limit uses `signal.alarm`, which only
works in the main thread, while rewards are scored from worker threads. So symbolic checks run
in worker processes that the parent kills (and replaces) when a call passes its deadline.

Each worker is a plain `python -c` subprocess speaking JSON lines over stdin/stdout:
  request  {"fn": "package.module:function", "args": [...]}
  response {"ok": true, "value": ...} | {"ok": false, "error": "..."}
We use `subprocess` rather than `multiprocessing`: `fork` copies a multi-threaded training
process (CUDA, tokenizer threads), and `spawn`/`forkserver` re-import the caller's `__main__`
(the whole CLI, torch included) in every worker. A subprocess imports only what it preloads.
A worker starts in ~1.5 s (importing math-verify), once, and again only after a kill.

`TimedProcessPool.call(fn_path, args, timeout_s) -> Outcome` is thread-safe: each call checks a
worker out of the idle queue, so concurrent callers run in parallel up to the pool size.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

_STARTUP_TIMEOUT_S = 120.0  # a fresh worker importing sympy on a busy machine
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding grpo_cli/


@dataclass
class Outcome:
    """Result of one call: status is 'ok' (value set), 'error' (message in value) or 'timeout'."""

    status: str
    value: Any = None


def _resolve(fn_path: str, cache: Dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    """`package.module:function` -> the function (imported once per worker)."""
    if fn_path not in cache:
        module, _, name = fn_path.partition(":")
        cache[fn_path] = getattr(import_module(module), name)
    return cache[fn_path]


def worker_main() -> None:
    """Worker loop (runs in the subprocess): preload modules, say ready, answer requests."""
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints of called code must not break the protocol
    for module in sys.argv[1:]:
        import_module(module)
    cache: Dict[str, Callable[..., Any]] = {}
    out.write(json.dumps({"ok": True, "value": "ready"}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"ok": True, "value": _resolve(request["fn"], cache)(*request["args"])}
        except Exception as e:  # reported to the parent, which decides what it means
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


class _Worker:
    """One subprocess plus a reader thread that turns its stdout lines into a queue."""

    def __init__(self, preload: Sequence[str]) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from grpo_cli.rewards.procpool import worker_main; "
             "worker_main()", *preload],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
        self.replies: "queue.Queue[Optional[dict]]" = queue.Queue()
        self.ready = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            for line in stdout:
                self.replies.put(json.loads(line))
        except (OSError, ValueError):  # a torn line from a killed worker
            pass
        finally:
            stdout.close()
            self.replies.put(None)  # EOF: the process died or was killed

    def _reply(self, timeout_s: float) -> Optional[dict]:
        """Next reply; raises queue.Empty on timeout; None when the worker died."""
        return self.replies.get(timeout=timeout_s)

    def call(self, fn_path: str, args: Sequence[Any], timeout_s: float) -> Outcome:
        if not self.ready:  # startup time does not count against the call's limit
            try:
                if self._reply(_STARTUP_TIMEOUT_S) is None:
                    return Outcome("error", "worker process failed to start")
            except queue.Empty:
                return Outcome("timeout")
            self.ready = True
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"fn": fn_path, "args": list(args)}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            return Outcome("error", f"worker process is gone: {e}")
        try:
            reply = self._reply(timeout_s)
        except queue.Empty:
            return Outcome("timeout")
        if reply is None:
            return Outcome("error", "worker process died")
        return Outcome("ok", reply["value"]) if reply["ok"] else Outcome("error", reply["error"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:  # a broken pipe when flushing to a dead process
                pass


class TimedProcessPool:
    """`size` worker processes, started on first use; a call past its deadline kills its worker."""

    def __init__(self, size: int, preload: Sequence[str] = ()) -> None:
        self.size = size
        self.preload = list(preload)
        self._idle: "queue.Queue[_Worker]" = queue.Queue()
        self._started = False
        self._lock = threading.Lock()
        self._workers: Set[_Worker] = set()  # every live worker, idle or busy (for close)
        self.restarts = 0  # workers replaced after a time-out or a crash

    def _new_worker(self) -> _Worker:
        """Start a worker (the caller holds self._lock)."""
        worker = _Worker(self.preload)
        self._workers.add(worker)
        return worker

    def call(self, fn_path: str, args: Sequence[Any], timeout_s: float) -> Outcome:
        """Run `fn_path(*args)` in a worker with a hard limit of `timeout_s` seconds."""
        with self._lock:
            if not self._started:  # all at once, so that they import in parallel
                self._started = True
                for _ in range(self.size):
                    self._idle.put(self._new_worker())
        worker = self._idle.get()
        try:
            if not worker.alive():  # crashed while idle, or the pool was closed
                with self._lock:
                    worker = self._new_worker()
            outcome = worker.call(fn_path, args, timeout_s)
            if outcome.status == "timeout" or not worker.alive():
                worker.kill()
                with self._lock:
                    self._workers.discard(worker)
                    self.restarts += 1
                    worker = self._new_worker()  # starts now, ready by the next call
            return outcome
        finally:
            self._idle.put(worker)

    def map(self, fn_path: str, args_list: Sequence[Sequence[Any]],
            timeout_s: float) -> List[Outcome]:
        """`call` for each argument tuple, up to `size` at a time."""
        if len(args_list) <= 1:
            return [self.call(fn_path, args, timeout_s) for args in args_list]
        with ThreadPoolExecutor(min(self.size, len(args_list))) as threads:
            return list(threads.map(lambda a: self.call(fn_path, a, timeout_s), args_list))

    def close(self) -> None:
        """Kill every worker (a later call starts new ones)."""
        with self._lock:
            workers, self._workers = self._workers, set()
        for worker in workers:
            worker.kill()


_POOLS: Dict[tuple, TimedProcessPool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(preload: Sequence[str], size: Optional[int] = None) -> TimedProcessPool:
    """The process-wide pool for these preloaded modules (created once, closed at exit)."""
    size = size or max(1, min(4, os.cpu_count() or 1))
    key = (tuple(preload), size)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = TimedProcessPool(size, preload)
        return _POOLS[key]


@atexit.register
def _close_pools() -> None:
    for pool in list(_POOLS.values()):
        pool.close()
