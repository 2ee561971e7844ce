"""`python -m grpo_cli ...` is the `grpo` command; torchrun launches it this way:

    torchrun --nproc_per_node=4 -m grpo_cli train +recipe=gsm8k_qwen7b
"""

import sys

from grpo_cli.cli import main

sys.exit(main())
