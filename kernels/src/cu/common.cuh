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
// Integers as Rust's `x.round() as u8/i64`: nearest (halves away from zero), saturating, NaN 0.
__device__ __forceinline__ u8 round_u8(double x) {
    double r = round(x);
    return r != r ? 0 : (u8)fmin(fmax(r, 0.0), 255.0);
}
__device__ __forceinline__ i64 round_i64(double x) {
    double r = round(x);
    if (r != r) return 0;
    if (r >= 9223372036854775807.0) return 9223372036854775807LL;
    if (r <= -9223372036854775808.0) return (-9223372036854775807LL - 1);
    return (i64)r;
}
template <> __device__ __forceinline__ u8 from_acc<u8>(double x) { return round_u8(x); }
template <> __device__ __forceinline__ i64 from_acc<i64>(double x) { return round_i64(x); }

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

// GELU with the tanh approximation: elementwise.cu's U_GELU_TANH and the GEMM epilogues'
// activation.
#define SQRT_2_OVER_PI 0.7978845608028654
#define GELU_TANH_C 0.044715
template <typename A> __device__ __forceinline__ A gelu_tanh(A x) {
    return (A)0.5 * x * ((A)1 + tanh((A)SQRT_2_OVER_PI * (x + (A)GELU_TANH_C * x * x * x)));
}

// The GEMM epilogue of one element v of a product, shared by matmul.cu and gemm_tc.cu: v +
// bias[col] (when `bias` is not null), then gelu_tanh (when `gelu`), then stored at p or, when
// `accumulate`, added to what is there; all in the accumulator type, rounded once.
template <typename T, typename A>
__device__ __forceinline__ void gemm_epilogue(A v, T* p, const T* bias, i64 col, int gelu,
                                              int accumulate) {
    if (bias) v += to_acc(bias[col]);
    if (gelu) v = gelu_tanh(v);
    if (accumulate) v += to_acc(*p);
    *p = store<T>(v);
}

// Instantiates M(suffix, type) for the float storage types.
#define FOR_FLOATS(M) M(f32, float) M(f64, double) M(bf16, bf16) M(f16, f16)
// ... and for every storage type.
#define FOR_ALL(M) FOR_FLOATS(M) M(u8, u8) M(i64, i64)

// ---- Row reductions (reduce.cu, norm.cu) ----

// Reduction ops of row_combine.
#define R_SUM 0
#define R_MAX 1
#define R_MIN 2


// Accumulator: f64 for f32 and f64 (the CPU sums in f64), f32 for the 16-bit floats.
template <typename T> struct Wide { typedef float type; };
template <> struct Wide<float> { typedef double type; };
template <> struct Wide<double> { typedef double type; };

// Accumulator -> element, rounding once.
template <typename T> __device__ __forceinline__ T narrow(double x) { return from_acc<T>(x); }
template <typename T> __device__ __forceinline__ T narrow(float x) { return from_f<T>(x); }

template <typename W> __device__ __forceinline__ W pos_inf();
template <> __device__ __forceinline__ float pos_inf<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double pos_inf<double>() {
    return __longlong_as_double(0x7ff0000000000000LL);
}

// Max and min skip NaN (fmax/fmin), as the CPU's f32::max/min fold does.
template <typename W> __device__ __forceinline__ W identity(int op) {
    return op == R_SUM ? (W)0 : op == R_MAX ? -pos_inf<W>() : pos_inf<W>();
}
template <typename W> __device__ __forceinline__ W combine(int op, W a, W b) {
    return op == R_SUM ? a + b : op == R_MAX ? fmax(a, b) : fmin(a, b);
}

// The rows of this block: each row belongs to one row group, the threads sharing one threadIdx.y
// (a warp when blockDim.x == 32, the whole block when blockDim.y == 1). The loop bound is uniform
// within a row group, so the group's shuffles and barriers are reached by all its threads.
#define FOR_ROWS(r, rows) \
    for (i64 r = (i64)blockIdx.x * blockDim.y + threadIdx.y; r < (i64)(rows); r += (i64)gridDim.x * blockDim.y)

// Combines one value per thread across the row group; every thread gets the total. The xor
// butterfly gives all lanes bitwise the same value (a + b == b + a exactly), so threads that go on
// to use it agree. Block mode needs blockDim.x a multiple of 32 and blockDim.y == 1.
template <typename W> __device__ W row_combine(int op, W v) {
    for (int o = 16; o > 0; o >>= 1) v = combine(op, v, __shfl_xor_sync(0xffffffff, v, o));
    if (blockDim.x == 32) return v;
    __shared__ W partial[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // the previous call's readers are done with `partial`
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? partial[lane] : identity<W>(op);
    for (int o = 16; o > 0; o >>= 1) v = combine(op, v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}
