"""`grpo ARGS` in the test process: `cli.main(argv)` with pytest's capsys, in milliseconds
where a subprocess costs seconds of imports. For tests of what the command says (an `error:`
line, its exit code, --cfg job, --help); the real command keeps a few subprocess tests.

The result is a `subprocess.CompletedProcess`, so the subprocess tests' assertions apply
unchanged. grpo's log handler is made anew on the captured stderr (`cli.setup_logging` keeps
the first one it made, which would write to an earlier test's stream); transformers' progress
bars and warnings are off, as the environment `setup_logging` sets does in a fresh process
(this one imported transformers before); and what `main` changes in the process (grpo's
logger, torch threads and RNG, the environment) is put back.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess

import numpy as np
import pytest
import torch
from transformers.utils import logging as hf_logging

from grpo_cli import cli


def grpo(capsys: pytest.CaptureFixture, *argv: str) -> subprocess.CompletedProcess:
    """`grpo ARGV` run by `cli.main`, stdout and stderr captured."""
    logger = logging.getLogger("grpo")
    handlers, level = logger.handlers[:], logger.level
    env, threads = dict(os.environ), torch.get_num_threads()
    rng = random.getstate(), np.random.get_state(), torch.get_rng_state()
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    capsys.readouterr()  # what earlier code printed is not this command's
    logger.handlers = []
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        code = cli.main(list(argv))
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        logger.handlers, logger.level = handlers, level
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(threads)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["grpo", *argv], code, out, err)
