"""isolation=process (what a non-root user gets): limits, session and a temp dir that is
removed; verdicts as with isolation=uid. Run here as root, so the uid-only rows of the README
table are not claimed for it."""

from grpo_cli.sandbox import Limits, Sandbox, TestProgram

STEPS = [("assert f(1) == 2", True), ("assert f(2) == 4", True)]


def test_process_isolation_grades_and_cleans_up():
    sandbox = Sandbox(Limits(wall_s=3, cpu_s=1, memory_mb=256), isolation="process")
    r = sandbox.run(TestProgram("import os\ndef f(x):\n    return x + 1\nprint(os.getcwd())",
                                STEPS))
    assert (r.status, r.passed, r.isolation) == ("failed", 1, ["rlimits"])
    assert "/grpo-sbx-" in r.stdout  # its own temp dir (the autouse fixture: removed)
    assert sandbox.run(TestProgram("while True:\n    pass\n", STEPS)).status == "timeout"
    assert sandbox.run(TestProgram("import os\nos._exit(0)\n", STEPS)).status == "crashed"
