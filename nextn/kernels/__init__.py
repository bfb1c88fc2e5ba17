"""Weight formats and the matmul kernels that use them."""
