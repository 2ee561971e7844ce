"""Sampling completions: the contract (`engine`: prompts and sampling settings in, a
`Rollout` out) and its engines, today our decode loop (`hf`)."""
