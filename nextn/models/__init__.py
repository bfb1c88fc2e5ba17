"""The networks: model config from GGUF metadata, weights, the trunk and MTP forwards, caches."""
