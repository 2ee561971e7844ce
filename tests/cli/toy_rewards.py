"""A learnable toy reward for loop tests: the share of completion characters that are digits.

A random tiny model emits digits now and then, so rewards vary within a group and GRPO can
push the policy towards digit tokens.
"""


def digit_share(prompts, completions, answers, **kwargs):
    return [sum(c.isdigit() for c in text) / max(len(text), 1) for text in completions]
