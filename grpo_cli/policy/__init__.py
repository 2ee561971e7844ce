"""The policy: building it (quantization, LoRA, tokenizer), fused and merged LoRA, the
embedded demo model, merged export."""
