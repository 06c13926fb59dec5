//! CUDA C kernels compiled at run time by NVRTC, with typed launch wrappers over raw device
//! buffers. Empty until the CUDA backend lands; it knows nothing of tensors.
