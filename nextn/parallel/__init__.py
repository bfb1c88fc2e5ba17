"""Tensor and expert parallelism over torch.distributed: `comm` (the collectives the forward needs),
`shard` (which slice of each GGUF weight a rank holds), `mirror` (rank 0 drives, the other ranks run the
same forwards), `launch` (ranks started by `--tp N` on one host, or by torchrun across hosts)."""
