// conv kernels: filled in by the CUDA backend work.
