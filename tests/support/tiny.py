"""Tiny random causal LMs (Llama or Qwen2 architecture) built locally, for tests.

`make_tiny_model(path)` writes a normal Hugging Face model folder (config, safetensors weights,
tokenizer, chat template) of a few hundred KB in about a second, with no download, so tests
load it exactly like a real local model. The tokenizer is a byte-level BPE trained on a small
built-in corpus: it encodes any text (unknown characters fall back to bytes), like the
tokenizers of real Llama-3 / Qwen2 models.

Special tokens follow Qwen2 / SmolLM2: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (the
EOS that ends a chat turn) and, unless `with_pad=False`, a dedicated `<pad>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_TOKEN = "<pad>"
VOCAB_SIZE = 400

# A few lines of maths word problems and chat: enough for ~140 useful BPE merges.
_CORPUS = """\
Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.
How many clips did Natalia sell altogether in April and May? The answer is 72.
Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.
What is 2 + 3? 2 + 3 = 5. What is 7 * 8? 7 * 8 = 56. Solve for x: 3x + 4 = 19, so x = 5.
You are a helpful assistant. Think step by step and put the final answer after ####.
<think> First add the numbers, then multiply the result by two. </think> <answer> 42 </answer>
The quick brown fox jumps over the lazy dog. A user asks a question and the assistant answers.
Let us compute the total: the sum of the first ten positive integers is 55. #### 55
system user assistant question answer reasoning therefore because the of and to in is
"""


def _train_tokenizer(with_pad: bool):
    """A byte-level BPE (vocab ~400) wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIAL_TOKENS + ([PAD_TOKEN] if with_pad else [])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", unk_token=None,
        pad_token=PAD_TOKEN if with_pad else None, model_max_length=2048,
    )
    return tok


# arch -> (transformers config class name, tie_word_embeddings). Qwen2 adds q/k/v biases.
ARCHS: Dict[str, tuple[str, bool]] = {"llama": ("LlamaConfig", False),
                                      "qwen2": ("Qwen2Config", True)}


def _config(arch: str, vocab_size: int, eos_id: int, pad_id: int | None, init_std: float,
            heads: int = 4, kv_heads: int = 2):
    import transformers

    class_name, tied = ARCHS[arch]
    return getattr(transformers, class_name)(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
        tie_word_embeddings=tied, eos_token_id=eos_id, bos_token_id=None, pad_token_id=pad_id,
        initializer_range=init_std,
    )


def make_tiny_model(path: str | Path, arch: str = "llama", seed: int = 0, *,
                    with_pad: bool = True, with_chat_template: bool = True,
                    init_std: float = 0.02, heads: int = 4, kv_heads: int = 2) -> Path:
    """Write a tiny random `arch` model + tokenizer to `path` and return it.

    `with_pad=False` leaves the tokenizer without a pad token (and without a `<pad>` entry in
    its vocabulary); `with_chat_template=False` writes a "base model" with no chat template.
    Weights are random (normal, std `init_std`, seeded), so generations are gibberish but
    deterministic. A larger `init_std` (e.g. 0.1) gives the lm-head enough range for a toy
    reward to move the output distribution (at 0.02 every logit stays within about +-1.3).
    `heads=2, kv_heads=1` gives head_dim 32, the smallest vLLM's CPU attention takes.
    """
    from transformers import AutoModelForCausalLM, GenerationConfig

    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}; choose one of {sorted(ARCHS)}")
    path = Path(path)
    tok = _train_tokenizer(with_pad)
    if with_chat_template:
        tok.chat_template = CHATML_TEMPLATE
    eos_id = tok.convert_tokens_to_ids("<|im_end|>")
    config = _config(arch, len(tok), eos_id, tok.pad_token_id, init_std, heads, kv_heads)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
