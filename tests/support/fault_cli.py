"""`python tests/support/fault_cli.py train ARGS`: the real `grpo` command with the faults
of the GRPO_FAULT environment variable injected through the trainer's hooks (fault_hooks.py).
The library never reads GRPO_FAULT: only this test entry point does."""

from __future__ import annotations

import os
import sys

from fault_hooks import ENV, FaultHooks

from grpo_cli.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], hooks=FaultHooks(os.environ.get(ENV, ""))))
