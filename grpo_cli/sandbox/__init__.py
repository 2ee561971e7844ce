"""Run untrusted programs (model-written code) with their tests, under stated limits.

`Sandbox(limits, isolation).run(TestProgram(...)) -> RunResult`; runner.py says what each run
gets, harness.py what the child does, bwrap.py the bubblewrap command of isolation `bwrap`,
slots.py why each run (as root) has a uid of its own.
"""

from grpo_cli.sandbox.runner import (
    ISOLATIONS,
    STATUSES,
    Limits,
    RunResult,
    Sandbox,
    SandboxError,
    TestProgram,
)

__all__ = ["ISOLATIONS", "STATUSES", "Limits", "RunResult", "Sandbox", "SandboxError",
           "TestProgram"]
