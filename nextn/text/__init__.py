"""Text in and out: the byte-level BPE tokenizer and chat template rebuilt from GGUF metadata."""
