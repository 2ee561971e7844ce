"""The sandbox harness: the child side of one run (stdlib only; executed as `python -c`).

It starts as the parent's user (under isolation bwrap: already inside bubblewrap, see bwrap.py),
reads its job from an inherited file (fd argv[1]), isolates itself (isolation uid: namespaces
and mounts, then the unprivileged slot uid; every isolation: resource limits),
compiles and runs the program, runs the tests, and writes its verdict to a pipe (fd argv[2]).

Verdict lines, each starting with the run's nonce (which the program is never given):
    <nonce> iso <what held>        once, after isolating
    <nonce> syntax <ExcType>       the program does not compile (nothing ran)
    <nonce> program <ExcType>      the program's own code raised or exited (tests not run)
    <nonce> t <i> <0|1>            test step i failed / passed
    <nonce> done <passed> <total>  the last line, written only after every test ran
A run without `done` (and exit status 0) has no verdict: the parent counts it as a crash or
a time-out, with the tests that reported `t <i> 1` before it ended.

Everything the harness needs after the program ran (os.write, exec, ...) is bound to locals of
`main` before the program runs, so a program that rebinds names or patches modules does not
reach it; the tests run with a copy of the builtins taken before the program ran, in a
namespace without the program's names that shadow builtins. Not covered: a program that
inspects the interpreter (frames, gc) can read the nonce and forge a verdict; no in-process
harness can stop that (the host-side limits still hold).
"""

import os
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38


def _isolate(job):
    """Namespaces, private /tmp, limits, then the slot uid. Returns what held, as words."""
    import ctypes
    import resource

    held = list(job["held"])  # what was done before it started (bwrap)
    if held:
        os.environ.pop("PWD", None)  # bwrap's own addition to the run's five variables
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid, work = job["uid"], job["gid"], job["workdir"]
    if job["namespaces"]:
        flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
        if libc.unshare(flags) == 0:
            held.append("netns")
            if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0:
                opts = f"size={job['disk_mb']}m,mode=0700,uid={uid},gid={gid}".encode()
                ok = libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, opts) == 0
                for path in (b"/dev/shm", b"/var/tmp", b"/run/lock"):  # world-writable
                    if os.path.isdir(path):
                        ok &= libc.mount(b"tmpfs", path, b"tmpfs", MS_NOSUID | MS_NODEV,
                                         b"size=64k,mode=0755") == 0
                if ok:
                    held.append("private_tmp")
    if job["drop_uid"]:
        os.makedirs(work, mode=0o700, exist_ok=True)
        os.chown(work, uid, gid)
    os.chdir(work)
    os.umask(0o077)
    cpu = max(1, int(job["cpu_s"] + 0.999))
    for name, soft, hard in (("RLIMIT_CPU", cpu, cpu + 1),
                             ("RLIMIT_AS", job["memory_mb"] << 20, job["memory_mb"] << 20),
                             ("RLIMIT_FSIZE", job["file_bytes"], job["file_bytes"]),
                             ("RLIMIT_NOFILE", job["open_files"], job["open_files"]),
                             ("RLIMIT_NPROC", job["processes"], job["processes"]),
                             ("RLIMIT_CORE", 0, 0)):
        resource.setrlimit(getattr(resource, name), (soft, hard))
    held.append("rlimits")
    if job["drop_uid"]:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        held.append("uid")
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # after setuid, which clears it
    return held


def main():
    import builtins
    import json

    job_fd, out_fd = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(job_fd, "rb") as f:
        job = json.loads(f.read().decode("utf-8"))
    nonce = job["nonce"]
    write, exit_, kill = os.write, os._exit, os.kill
    settrace, setprofile = sys.settrace, sys.setprofile
    compile_, exec_, int_ = compile, exec, int
    base_exc = BaseException
    streams = (sys.stdout, sys.stderr)
    pristine = dict(builtins.__dict__)
    os.set_inheritable(out_fd, False)

    def say(text):
        write(out_fd, (nonce + " " + text + "\n").encode())

    say("iso " + ",".join(_isolate(job)))
    kill_others = job["kill_others"]
    steps = job["steps"]
    try:
        code = compile_(job["program"], "<program>", "exec")
        compiled = [compile_(s, f"<test {i}>", "exec") for i, (s, _) in enumerate(steps)]
    except base_exc as e:  # SyntaxError, ValueError (NUL byte), MemoryError, RecursionError
        say("syntax " + type(e).__name__)
        exit_(0)
    ns = {"__name__": "solution", "__builtins__": builtins}
    try:
        exec_(code, ns)
    except base_exc as e:  # SystemExit too: leaving before the tests is not passing
        say("program " + type(e).__name__)
        ns = None
    passed = 0
    total = sum(1 for _, is_test in steps if is_test)
    if ns is not None:
        tns = {k: v for k, v in ns.items() if k not in pristine}
        tns.update(__name__="tests", __builtins__=dict(pristine))
        entry = job["entry_point"]
        if entry:
            tns["candidate"] = ns.get(entry)
        for i, step in enumerate(compiled):
            settrace(None)
            setprofile(None)
            try:
                exec_(step, tns)
                ok = True
            except base_exc:
                ok = False
            if steps[i][1]:
                passed += int_(ok)
                say(f"t {i} {int_(ok)}")
            elif not ok:
                break  # setup failed: the remaining tests cannot run
    if kill_others:
        try:  # every other process of this slot uid, or in this PID namespace (bwrap): what
            kill(-1, 9)  # the program left behind
        except base_exc:
            pass
    for stream in streams:  # os._exit below skips the interpreter's own flush
        try:
            stream.flush()
        except base_exc:
            pass
    say(f"done {passed} {total}")
    exit_(0)


if __name__ == "__main__":
    main()
