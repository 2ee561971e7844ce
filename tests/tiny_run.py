"""The fast CPU config the CLI tests train with: 2 prompts x G=4, 12 new tokens, a toy reward."""

from __future__ import annotations

from pathlib import Path


def base_args(model: Path, out: Path, steps: int, *extra: str,
              reward: str = "toy_rewards:digit_share") -> list[str]:
    return [
        f"model.name_or_path={model}", "model.dtype=fp32", "data=arith",
        "data.arith.num_examples=200", f"trainer.output_dir={out}",
        f"trainer.max_steps={steps}", "trainer.prompts_per_step=2", "trainer.micro_batch_size=4",
        "algo.num_generations=4", "rollout.max_new_tokens=12", "logger.wandb.mode=disabled",
        "logger.console=plain", "logger.plot_at_end=false", "trainer.save_every=0",
        f"+reward.components.digits.fn={reward}", "~reward.components.format", *extra]
