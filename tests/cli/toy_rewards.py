"""A learnable toy reward for loop tests: the share of completion characters that are digits.

A random tiny model emits digits now and then, so rewards vary within a group and GRPO can
push the policy towards digit tokens. `refuses_third_problem` is a reward that finds bad input
only once problems are being scored (as the code reward does with a problem without tests).
`pauses_at_third_problem` holds the run on its third problem for a few seconds, so that a
signal sent once two problems are on disk lands mid-run however fast the rest would go.
"""

import time

from grpo_cli.errors import UserError

SEEN: list[str] = []


def digit_share(prompts, completions, answers, **kwargs):
    return [sum(c.isdigit() for c in text) / max(len(text), 1) for text in completions]


def refuses_third_problem(prompts, completions, answers, **kwargs):
    """0 for each completion of the first two prompts it sees; a UserError on the third."""
    if prompts[0] not in SEEN:
        SEEN.append(prompts[0])
    if len(SEEN) == 3:
        SEEN.clear()
        raise UserError("toy reward: the third problem is refused")
    return [0.0 for _ in completions]


PAUSED: list[str] = []


def pauses_at_third_problem(prompts, completions, answers, **kwargs):
    """digit_share, after a 3 s pause on each sample of the third prompt it sees (below the
    component's 5 s timeout)."""
    if prompts[0] not in PAUSED:
        PAUSED.append(prompts[0])
    if len(PAUSED) == 3:
        time.sleep(3.0)
    return digit_share(prompts, completions, answers)
