"""`run_eval` end to end on a tiny random checkpoint (CPU), the default report folder, and the
one-line errors for bad checkpoints and datasets.

The tiny model is random, so its accuracy is about 0: only keys, types and files are checked.
"""

import json
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from grpo_cli.config.compose import compose_config
from grpo_cli.config.schema import GrpoConfig
from grpo_cli.errors import UserError
from grpo_cli.evaluation import load_checkpoint_config, run_eval
from grpo_cli.evaluation.runner import default_out_dir

REPORT_KEYS = {
    "dataset": str, "num_examples": int, "num_samples": int, "accuracy": float,
    "accuracy_se": float, "accuracy_strict": float, "accuracy_strict_se": float,
    "accuracy_flexible": float, "accuracy_flexible_se": float, "format_rate": float,
    "mean_completion_tokens": float, "truncated_rate": float, "by_level": dict,
    "by_subject": dict, "model": str, "checkpoint": str, "date": str, "config": dict,
}
CONFIG_KEYS = {"template", "max_new_tokens", "temperature", "greedy", "extraction_order"}


def _make_checkpoint(run_dir: Path, base: Path) -> Path:
    """<run_dir>/checkpoints/final with policy/ (a LoRA adapter + tokenizer) and config.yaml."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt = run_dir / "checkpoints" / "final"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"))
    model.save_pretrained(ckpt / "policy")
    AutoTokenizer.from_pretrained(base).save_pretrained(ckpt / "policy")
    return ckpt


def _tiny_cfg(base: Path, ckpt: Path, out: Path | None, num_samples: int) -> GrpoConfig:
    cfg = GrpoConfig()
    cfg.model.name_or_path = str(base)
    cfg.model.adapter_path = str(ckpt / "policy")
    cfg.model.device = "cpu"
    cfg.checkpoint = str(ckpt)
    cfg.data.name, cfg.data.template = "arith", "hash"
    cfg.data.arith.num_examples, cfg.data.test_size = 40, 0.25
    cfg.eval.limit, cfg.eval.num_samples, cfg.eval.batch_size = 3, num_samples, 4
    cfg.eval.max_new_tokens = 6
    cfg.eval.out = None if out is None else str(out)
    cfg.logger.console = "quiet"
    return cfg


@pytest.fixture(scope="module")
def tiny_base(request, tmp_path_factory) -> Path:
    pytest.importorskip("grpo_cli.policy.model")
    try:
        return Path(request.getfixturevalue("tiny_llama_path"))
    except pytest.FixtureLookupError:
        from tiny import make_tiny_model

        return make_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.mark.parametrize("num_samples", [1, 2])
def test_run_eval_on_tiny_checkpoint(tmp_path: Path, tiny_base: Path, num_samples: int) -> None:
    ckpt = _make_checkpoint(tmp_path / "run", tiny_base)
    cfg = _tiny_cfg(tiny_base, ckpt, None, num_samples)
    (ckpt / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    assert isinstance(load_checkpoint_config(ckpt), DictConfig)
    report = run_eval(cfg)

    out = tmp_path / "run" / "eval" / "arith"  # the default: <run dir>/eval/<dataset>
    saved = json.loads((out / "report.json").read_text())
    for key, kind in REPORT_KEYS.items():
        assert isinstance(saved[key], kind), key
    assert CONFIG_KEYS <= set(saved["config"])
    assert saved["config"]["greedy"] is (num_samples == 1)
    assert saved["config"]["max_new_tokens"] == 6
    assert (saved["num_examples"], saved["num_samples"]) == (3, num_samples)
    ks = [1] if num_samples == 1 else [1, 2]
    assert all(isinstance(saved[f"pass@{k}"], float) for k in ks)
    assert all(isinstance(saved[f"maj@{k}"], float) for k in ks)
    assert 0 < saved["mean_completion_tokens"] <= 6
    assert saved["by_subject"]  # arith rows carry subject / level
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["completions"]) == num_samples for r in rows)
    assert report["accuracy"] == saved["accuracy"]


def test_default_out_dir() -> None:
    cfg = GrpoConfig()
    cfg.model.name_or_path, cfg.data.name = "Qwen/Qwen2.5-0.5B-Instruct", "gsm8k"
    assert default_out_dir(cfg) == Path("outputs/eval/Qwen2.5-0.5B-Instruct/gsm8k")
    cfg.checkpoint = "outputs/run1/checkpoints/step_50"
    assert default_out_dir(cfg) == Path("outputs/run1/eval/gsm8k")
    cfg.eval.out = "elsewhere"
    assert default_out_dir(cfg) == Path("elsewhere")


def test_bad_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint_config(tmp_path / "missing")
    (tmp_path / "run" / "checkpoints" / "final").mkdir(parents=True)
    with pytest.raises(UserError, match="run folder"):
        load_checkpoint_config(tmp_path / "run")
    with pytest.raises(UserError, match="config.yaml"):
        load_checkpoint_config(tmp_path / "run" / "checkpoints" / "final")
    (tmp_path / "run" / "checkpoints" / "final" / "config.yaml").write_text("model: {}\n")
    with pytest.raises(UserError, match="policy/"):
        load_checkpoint_config(tmp_path / "run" / "checkpoints" / "final")


def test_unknown_dataset_is_one_line(tmp_path: Path) -> None:
    """The eval config refuses it (schema.py's choices), before run_eval or a model."""
    with pytest.raises(UserError, match="data.name='imagenet' is not allowed; choose one of"):
        compose_config("eval", ["data.name=imagenet", f"eval.completions={tmp_path / 'c.jsonl'}"],
                       for_training=False)


def test_completions_file_with_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"answer": "1", "completion": "#### 1"}) + "\n"
                    + json.dumps({"completion": "#### 2"}) + "\n")
    cfg = GrpoConfig()
    cfg.data.name = "arith"  # the schema leaves data.name to a data=OPTION
    cfg.eval.completions, cfg.eval.out = str(path), str(tmp_path / "out")
    with pytest.raises(UserError, match=r"c\.jsonl:2: missing 'answer'"):
        run_eval(cfg)
    assert not (tmp_path / "out").exists()


def test_eval_samples_greedily_for_one_sample_and_with_eval_keys_for_more():
    from grpo_cli.config.schema import EvalConfig
    from grpo_cli.evaluation.runner import eval_sampling

    one = eval_sampling(EvalConfig(num_samples=1, max_new_tokens=64, temperature=0.6))
    assert one.greedy and (one.num_samples, one.max_new_tokens) == (1, 64)
    many = eval_sampling(EvalConfig(num_samples=4, max_new_tokens=64, temperature=0.6,
                                    top_p=0.95, top_k=10))
    assert not many.greedy
    assert (many.num_samples, many.temperature, many.top_p, many.top_k) == (4, 0.6, 0.95, 10)


def test_eval_chunks_seed_every_problem_apart(tiny_base: Path) -> None:
    """A seeding engine (vllm) gives prompt i of a chunk seed + i * n and its n samples the
    seeds from there: over the chunks of eval.batch_size, every seed is used once."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoTokenizer

    from grpo_cli.data.record import Record
    from grpo_cli.evaluation.runner import generate_problems

    class SeedingEngine:
        def __init__(self) -> None:
            self.seeds: list[int] = []

        def generate(self, prompts, sampling, *, batch_size, seed):
            n = sampling.num_samples
            self.seeds += [seed + i * n + s for i in range(len(prompts)) for s in range(n)]
            rows = len(prompts) * n
            return SimpleNamespace(lengths=torch.ones(rows), truncated=torch.zeros(rows),
                                   texts=["1"] * rows)

    cfg = GrpoConfig()
    cfg.eval.num_samples, cfg.eval.batch_size = 4, 8  # 2 problems a chunk
    records = [Record(id=str(i), prompt=[{"role": "user", "content": f"q{i}"}], answer="1")
               for i in range(5)]
    policy = SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    engine = SeedingEngine()
    problems = generate_problems(policy, records, cfg, engine=engine)
    assert len(problems) == 5
    assert sorted(engine.seeds) == list(range(cfg.trainer.seed, cfg.trainer.seed + 20))
