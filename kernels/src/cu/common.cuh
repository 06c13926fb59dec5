// Shared by every kernel file (prepended to each source before NVRTC compiles it).
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef long long i64;
typedef unsigned char u8;
typedef __nv_bfloat16 bf16;
typedef __half f16;

// A strided view: element i (row-major over `shape`) lives at offset + sum(index_k * stride_k).
// Mirrors kernels::Dims on the Rust side, field by field.
#define MAX_DIMS 8
struct Dims {
    int rank;
    int pad;
    i64 offset;
    i64 shape[MAX_DIMS];
    i64 stride[MAX_DIMS];
};

__device__ __forceinline__ i64 at(const Dims& d, i64 i) {
    i64 off = d.offset;
    for (int k = d.rank - 1; k >= 0; --k) {
        i64 s = d.shape[k];
        off += (i % s) * d.stride[k];
        i /= s;
    }
    return off;
}

#define GRID_STRIDE(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); i += (i64)blockDim.x * gridDim.x)

// Arithmetic type: f32 for every 16- and 32-bit float, f64 for f64.
template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

// Element <-> arithmetic conversions, overloaded per storage type.
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(f16 x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(u8 x) { return (float)x; }
__device__ __forceinline__ double to_acc(i64 x) { return (double)x; }

template <typename T> __device__ __forceinline__ T from_acc(double x);
template <> __device__ __forceinline__ float from_acc<float>(double x) { return (float)x; }
template <> __device__ __forceinline__ double from_acc<double>(double x) { return x; }
template <> __device__ __forceinline__ bf16 from_acc<bf16>(double x) { return __float2bfloat16((float)x); }
template <> __device__ __forceinline__ f16 from_acc<f16>(double x) { return __float2half((float)x); }
template <> __device__ __forceinline__ u8 from_acc<u8>(double x) { return (u8)x; }
template <> __device__ __forceinline__ i64 from_acc<i64>(double x) { return (i64)x; }

// f32 overloads (float arithmetic must not round-trip through double).
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ double from_f<double>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ f16 from_f<f16>(float x) { return __float2half(x); }

template <typename T> __device__ __forceinline__ T store(typename Acc<T>::type x);
template <> __device__ __forceinline__ float store<float>(float x) { return x; }
template <> __device__ __forceinline__ double store<double>(double x) { return x; }
template <> __device__ __forceinline__ bf16 store<bf16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ f16 store<f16>(float x) { return __float2half(x); }

// Instantiates M(suffix, type) for the float storage types.
#define FOR_FLOATS(M) M(f32, float) M(f64, double) M(bf16, bf16) M(f16, f16)
// ... and for every storage type.
#define FOR_ALL(M) FOR_FLOATS(M) M(u8, u8) M(i64, i64)

// Block-wide sum of one value per thread (blockDim.x a multiple of 32, at most 1024).
template <typename A> __device__ A block_sum(A v) {
    __shared__ A partial[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    v = lane < warps ? partial[lane] : (A)0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    if (threadIdx.x == 0) partial[0] = v;
    __syncthreads();
    A total = partial[0];
    return total;
}
