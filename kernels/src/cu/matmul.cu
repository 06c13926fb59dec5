// matmul kernels: filled in by the CUDA backend work.
