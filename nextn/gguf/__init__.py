"""GGUF files: reading, publishing forms, writing, Hugging Face conversion, and the `nextn gguf` tools."""
