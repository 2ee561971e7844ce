"""Config schemas: one dataclass per config group.

The YAML files under `configs/` and `recipes/` only set values; every key, its type and its
default live here, once. Hydra merges the YAML onto these dataclasses, so a misspelt key or a
wrong type fails at compose time. Allowed values and ranges are data too: a field's metadata
may hold `choices`, `min` / `max` (inclusive) or `gt` (exclusive), and `rules.validate()`
checks them, plus the cross-field rules in `rules.CROSS_FIELD_RULES`.

Required values are `???` (MISSING). A comment above each field says what it means.

Which keys a resumed run must keep is data too: `resume_fixed=True` marks the fields whose
change between a checkpoint and its resume would corrupt the run (the model and its LoRA
shape, G, the dataset, the optimizer); `resume_fixed_keys()` lists them.

Which command reads a key is data too: `only="train"` / `only="eval"` / `only="sample"`, or a
comma list (`only="eval,sample"`), in a field's metadata (inherited by the keys below it;
`only="both"` lifts it again: every command reads the key). A key typed on the command line of
a command that does not read it is refused (`command_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, Iterator, List, Optional

from omegaconf import MISSING

from grpo_cli.config.algo_schema import AlgoConfig
from grpo_cli.config.fields import bounded, choice, only, resume_fixed  # noqa: F401 (re-export)
from grpo_cli.config.stage_schema import SampleConfig, SftConfig
from grpo_cli.config.vllm_schema import VllmConfig
from grpo_cli.errors import UserError


@dataclass
class LoraConfig:
    # False = full fine-tuning (every weight trains: needs far more memory).
    enabled: bool = resume_fixed(default=True)
    # Rank of the low-rank update.
    r: int = bounded(16, lo=1, resume_fixed=True)
    # Scaling numerator: the update is scaled by alpha / r (alpha / sqrt(r) with rslora).
    alpha: float = bounded(32.0, gt=0, resume_fixed=True)
    # LoRA dropout. grpo train refuses > 0: GRPO's importance ratio compares the policy's
    # log-probs across passes, and random dropout masks make them differ (ratio far from 1).
    dropout: float = bounded(0.0, lo=0, hi=1)
    # "all-linear" = every linear projection of attention and MLP (not the lm-head).
    target_modules: List[str] = resume_fixed(default_factory=lambda: ["all-linear"])
    # Rank-stabilised LoRA (scale alpha / sqrt(r)).
    use_rslora: bool = resume_fixed(default=False)


@dataclass
class ModelConfig:
    # A hub id, a local folder, or a folder/file holding a GGUF file (see gguf_file).
    name_or_path: str = resume_fixed(default=MISSING)
    # GGUF file name inside name_or_path (dequantized on load), or null.
    gguf_file: Optional[str] = resume_fixed(default=None)
    # Hub revision (branch, tag or commit).
    revision: Optional[str] = None
    # Weights / compute dtype of the non-quantized parts. auto = bf16 on CUDA, fp32 on CPU.
    dtype: str = choice("auto", ["auto", "bf16", "fp16", "fp32"])
    # auto = CUDA when present, else CPU.
    device: str = choice("auto", ["auto", "cpu", "cuda"])
    # auto = flash_attention_2 when installed on CUDA, else sdpa.
    attn_implementation: str = choice("auto", ["auto", "sdpa", "eager", "flash_attention_2"])
    # Run code shipped with the model. Off: a model needing it fails with a clear message.
    trust_remote_code: bool = False
    # bitsandbytes quantization of the frozen base weights. nf4 + LoRA = QLoRA.
    quantization: str = choice("none", ["none", "nf4", "fp4", "int8"], resume_fixed=True)
    # Quantize the 4-bit quantization constants too (saves ~0.4 bit / parameter).
    double_quant: bool = True
    # Compute dtype of the 4-bit matmuls. auto = bf16 on CUDA, fp32 on CPU.
    compute_dtype: str = choice("auto", ["auto", "bf16", "fp16", "fp32"])
    # Recompute activations in the backward pass (less memory, ~30% more compute).
    gradient_checkpointing: bool = False
    # Continue training from an existing LoRA adapter folder.
    adapter_path: Optional[str] = None
    # Jinja chat template to use when the tokenizer has none (null = a plain built-in one).
    chat_template: Optional[str] = None
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class ArithConfig:
    # Number of generated problems (split into train/test by data.test_size).
    num_examples: int = bounded(2000, lo=2)
    # Operands are drawn from [min_value, max_value].
    min_value: int = 0
    max_value: int = bounded(20, lo=1)
    # Number of operations per problem.
    num_ops: int = bounded(1, lo=1, hi=6)
    operators: List[str] = field(default_factory=lambda: ["+", "-"])


@dataclass
class PyFuncConfig:
    # Number of generated function-writing problems (split by data.test_size; fewer when the
    # families allow fewer distinct problems). Families: grpo_cli/data/pyfunc.py.
    num_examples: int = bounded(1000, lo=2)
    # Families: easy (literal arithmetic: x plus 3, ...), hard (filters, counts, digits,
    # string edits: the default, where SmolLM2-135M's base pass rate is low), or all.
    level: str = choice("hard", ["easy", "hard", "all"])
    # Generated tests per problem (one more example call is shown in the prompt).
    num_tests: int = bounded(3, lo=1, hi=10)


@dataclass
class DataConfig:
    # Dataset adapter (each data=OPTION sets it).
    name: str = choice(MISSING, ["gsm8k", "math", "math500", "arith", "jsonl", "humaneval",
                                 "mbpp", "pyfunc"], resume_fixed=True)
    # Local folder or JSONL file; null = the hub dataset (hub_id).
    path: Optional[str] = None
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    # Split used for training and the one held out for eval.
    train_split: str = "train"
    test_split: str = "test"
    # Share of rows held out when a source has no test split (arith, a single JSONL file).
    test_size: float = bounded(0.1, lo=0, hi=0.9)
    # jsonl adapter: field names of the question and the gold answer.
    question_field: str = "question"
    answer_field: str = "answer"
    # Keep only the first N rows after shuffling (null = all).
    limit: Optional[int] = bounded(None, lo=1)
    shuffle: bool = True
    # Prompts longer than this (in tokens, after the chat template) are dropped and counted.
    max_prompt_tokens: int = bounded(512, lo=8)
    # Prompt template: r1 = <think>..</think><answer>..</answer>, hash = '#### N', boxed.
    # Code tasks: fenced = write the code in a ```python block; complete = complete the
    # function whose signature and docstring the prompt shows (HumanEval style).
    template: str = choice("hash", ["r1", "hash", "boxed", "fenced", "complete"])
    # Replace the template's system prompt (null = the template's own).
    system_prompt: Optional[str] = None
    # Number of solved train examples shown before each question.
    few_shot: int = bounded(0, lo=0, hi=8)
    arith: ArithConfig = field(default_factory=ArithConfig)
    pyfunc: PyFuncConfig = field(default_factory=PyFuncConfig)


@dataclass
class RewardComponent:
    # A registered reward name (correctness, format, tag_count, length, repetition, ...)
    # or an import path 'package.module:function'.
    fn: str = MISSING
    weight: float = 1.0
    # Keyword arguments passed to the function.
    kwargs: Dict[str, Any] = field(default_factory=dict)
    # Seconds one sample may take; past it the sample gets `fallback`.
    timeout_s: float = bounded(5.0, gt=0)
    # Reward given to a sample whose reward raised or timed out (null = excluded).
    fallback: Optional[float] = 0.0


@dataclass
class RewardConfig:
    # Named components (each a RewardComponent); total reward = sum of weight * component
    # over the applicable ones. Typed as Any so that a component can be added from the shell
    # key by key; compose.finish() checks each one against RewardComponent.
    components: Dict[str, Any] = field(default_factory=dict)
    # Worker threads scoring a batch.
    num_workers: int = bounded(4, lo=1)
    # How several components make the reward the advantage is taken from: sum_then_normalize =
    # the weighted sum (GRPO); normalize_then_sum = GDPO: each component normalised within its
    # group, then weighted and summed (the paper then scales over the batch:
    # algo.scale_rewards=batch). Logged rewards are the weighted sum either way.
    aggregation: str = choice("sum_then_normalize", ["sum_then_normalize", "normalize_then_sum"],
                              only="train")


@dataclass
class RolloutConfig:
    # Sampling runs a decode loop over the transformers model with its KV cache (each prompt
    # prefilled once, its cache copied for the G samples). Eval generates with eval.*.
    max_new_tokens: int = bounded(256, lo=1, only="train")
    # Forces this many tokens before EOS may end a completion (benchmarks use max_new_tokens).
    min_new_tokens: int = bounded(0, lo=0, only="train")
    # Sampling temperature; the loss uses the same temperature for its log-probs.
    temperature: float = bounded(1.0, gt=0, only="train")
    top_p: float = bounded(1.0, gt=0, hi=1, only="train")
    # 0 = off.
    top_k: int = bounded(0, lo=0, only="train")
    # Sequences generated at once, whole groups (null = the whole step's batch); halved for
    # the rest of the run after an out-of-memory error. With engine=vllm: the sequences given
    # to vLLM per call (it schedules them within the KV cache it reserved at start).
    batch_size: Optional[int] = bounded(None, lo=1, only="train")
    # Decode with LoRA merged into dense weights: on, off, or auto = when the merged copy fits
    # in free memory (README: "Merged decoding and the sampler correction"). Eval too.
    merge_adapters: str = choice("auto", ["auto", "on", "off"])
    # Who samples (train and eval): hf = our decode loop; vllm = an in-process vllm.LLM on the
    # base weights, given the current LoRA adapter each step (README: "Rollout engines").
    engine: str = choice("hf", ["hf", "vllm"], only="both")
    vllm: VllmConfig = only("both", default_factory=VllmConfig)


@dataclass
class OptimConfig:
    name: str = choice("adamw", ["adamw", "adamw_8bit", "paged_adamw_8bit"], resume_fixed=True)
    lr: float = bounded(1e-5, lo=0)
    weight_decay: float = bounded(0.0, lo=0)
    beta1: float = bounded(0.9, lo=0, hi=1)
    beta2: float = bounded(0.99, lo=0, hi=1)
    eps: float = bounded(1e-8, gt=0)
    # Gradient norm clipping (0 = off).
    max_grad_norm: float = bounded(1.0, lo=0)
    scheduler: str = choice("constant", ["constant", "linear", "cosine"])
    warmup_steps: int = bounded(0, lo=0)


@dataclass
class WandbConfig:
    # auto = online when logged in or WANDB_API_KEY is set, else offline.
    mode: str = choice("auto", ["auto", "online", "offline", "disabled"])
    project: str = "grpo"
    entity: Optional[str] = None
    # Run name (null = trainer.run_name).
    name: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    # Upload checkpoints as artifacts.
    log_checkpoints: bool = False


@dataclass
class LoggerConfig:
    # rich = progress bars + a line per step; plain = lines only; quiet = errors only.
    console: str = choice("rich", ["rich", "plain", "quiet"])
    # Add the step's completions to the W&B completions table every N steps (0 = never);
    # independent of trainer.log_every, which writes the samples files.
    completions_every: int = bounded(10, lo=0, only="train")
    # Print health warnings (reward hacking, KL blow-up, collapse).
    health_checks: bool = only("train", default=True)
    # Write PNG charts to <output_dir>/plots at the end of training.
    plot_at_end: bool = only("train", default=True)
    wandb: WandbConfig = only("train,sft", default_factory=WandbConfig)


@dataclass
class TrainerConfig:
    # Names the run folder (each recipe sets its own).
    run_name: str = "run"
    # The run directory: metrics, samples, checkpoints, config.yaml.
    output_dir: str = "outputs/${trainer.run_name}"
    # Seeds the prompt order, the sampler and the weights' init (grpo eval reads it too).
    seed: int = only("both", default=0)
    max_steps: int = bounded(100, lo=1)
    # Prompts per step (each gets algo.num_generations completions).
    prompts_per_step: int = bounded(4, lo=1, only="train")
    # Sequences per forward/backward pass. A value >= the step's batch means the whole batch;
    # one that does not divide it leaves a smaller last micro-batch (the loss is normalised by
    # the optimizer step's counts, so the gradient is the same).
    micro_batch_size: int = bounded(8, lo=1)
    # Micro-batches per optimizer step (null = the whole step's batch in one optimizer step);
    # a step's batch that does not split evenly ends with a smaller optimizer step.
    # (grpo sft: sft.batch_size rows per optimizer step, in micro-batches of micro_batch_size.)
    grad_accum_steps: Optional[int] = bounded(None, lo=1, only="train")
    # Save a checkpoint every N steps (0 = only at the end) and keep the newest K.
    save_every: int = bounded(50, lo=0)
    keep_last: int = bounded(2, lo=1)
    # Held-out eval every N steps (0 = never); the best is kept as checkpoints/best.
    eval_every: int = bounded(0, lo=0, only="train")
    # Write sample completions to <output_dir>/samples every N steps.
    log_every: int = bounded(10, lo=1, only="train")
    # null = fresh run (refused when output_dir already holds a run); auto = newest
    # checkpoint in output_dir; or a checkpoint path.
    resume: Optional[str] = None
    # Consecutive non-finite steps tolerated before the run stops.
    max_bad_steps: int = bounded(3, lo=1, only="train")
    # torch threads on CPU. null = auto: the cores not already busy (cores minus the load
    # average, at least 1), or OMP_NUM_THREADS when set; shown at start (see threads.py).
    cpu_threads: Optional[int] = bounded(None, lo=1, only="both")
    # Under torchrun: seconds a rank waits in a collective (gradient sum, checkpoint, eval)
    # for the others before it stops with an error; a checkpoint save or a held-out eval on
    # a big model must fit in it.
    dist_timeout_s: float = bounded(1800.0, gt=0, only="train")


@dataclass
class EvalConfig:
    # Problems evaluated (null = the whole test split). grpo sample: sample.limit.
    limit: Optional[int] = bounded(200, lo=1, only="train,eval")
    # Samples per problem: 1 = greedy, n > 1 = sampled with eval.temperature / top_p / top_k.
    # grpo sample: sample.num_samples.
    num_samples: int = bounded(1, lo=1, only="train,eval")
    # Sequences generated at once.
    batch_size: int = bounded(32, lo=1)
    # grpo eval: grade this JSONL of pre-generated completions instead of generating.
    completions: Optional[str] = only("eval", default=None)
    # grpo eval: report folder (null = <run dir>/eval/<dataset> for a checkpoint of
    # <run dir>/checkpoints, outputs/eval/<completions file name>/<dataset> for
    # eval.completions, else outputs/eval/<model short name>/<dataset>).
    out: Optional[str] = only("eval", default=None)
    # grpo eval: replace a report already in the report folder (false = refuse, none is lost).
    overwrite: bool = only("eval", default=False)
    # Longest completion in every evaluation (grpo eval, trainer.eval_every): the same for a base
    # model and a checkpoint, whatever it was trained with; recorded in the report.
    max_new_tokens: int = bounded(512, lo=1)
    # Sampling temperature when num_samples > 1 (greedy decoding ignores it).
    temperature: float = bounded(1.0, gt=0)
    # Nucleus and top-k sampling when num_samples > 1 (top_k 0 = off).
    top_p: float = bounded(1.0, gt=0, hi=1)
    top_k: int = bounded(0, lo=0)


@dataclass
class GrpoConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = only("train", default_factory=AlgoConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = only("train,sft", default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = only("train,sft", default_factory=TrainerConfig)
    # Held-out eval: grpo eval, and grpo train every trainer.eval_every steps.
    eval: EvalConfig = field(default_factory=EvalConfig)
    # grpo sample: the rejection-sampling stage (its own keys; generation from eval.*).
    sample: SampleConfig = only("sample", default_factory=SampleConfig)
    # grpo sft: supervised fine-tuning on prompt + completion or messages rows (its own keys).
    sft: SftConfig = only("sft", default_factory=SftConfig)
    # grpo eval / grpo sample: the checkpoint to evaluate or sample from (null = the
    # configured model as it is).
    checkpoint: Optional[str] = only("eval,sample", default=None)
    # grpo eval: comma-separated report folders to show side by side.
    compare: Optional[str] = only("eval", default=None)


class ConfigError(UserError):
    """A user-facing configuration error: one line, exit code 2."""


def _walk(schema: Any = GrpoConfig, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, dataclass field) of every key of the schema, in schema order."""
    for f in fields(schema):
        path = f"{prefix}{f.name}"
        yield path, f
        if isinstance(f.default_factory, type) and is_dataclass(f.default_factory):
            yield from _walk(f.default_factory, path + ".")


def schema_keys() -> List[str]:
    """Every dotted key of the schema (used for 'did you mean' suggestions)."""
    return [path for path, _ in _walk()]


def resume_fixed_keys() -> List[str]:
    """The dotted keys marked `resume_fixed=True`, in schema order."""
    return [path for path, f in _walk() if f.metadata.get("resume_fixed")]


def command_of(key: str) -> str:
    """Which commands read a dotted key: "train", "eval", "sample", a comma list of them, or
    "both" = every command (see the module docstring).

    The deepest `only` on the key's path wins; keys outside the schema (user-named reward
    components) are read by both.
    """
    node, found = GrpoConfig, "both"
    for part in key.split("."):
        if node is None:
            break
        match = [f for f in fields(node) if f.name == part]
        if not match:
            break
        found = match[0].metadata.get("only") or found
        factory = match[0].default_factory
        node = factory if isinstance(factory, type) and is_dataclass(factory) else None
    return found
