// Batched GEMM over strided views: C[z] (+)= A[z] · B[z] for every batch index z, with
// A[z] m×k, B[z] k×n, C[z] m×n. Each operand is read or written through a row stride and a column
// stride (so transposed views cost no copy) from a per-batch base offset at(d, z): the batch dims
// are a Dims view whose strides may be 0 (broadcast batches).
//
// Epilogue: each element v of the product becomes v + bias[col] (when `bias` is not null), then
// gelu_tanh(v) (when `gelu`), then is stored or, when `accumulate`, added to C.
//
// `red` folds a second sum into the product: C[z] (+)= Σ_{r<red} A[z] shifted by r·a_red times
// B[z] shifted by r·b_red (the conv weight gradient sums over images this way). Plain GEMM: red = 1.
//
// Tiling: a 256-thread block computes a 64×64 tile of C, walking k in slices of 16 through shared
// memory; each thread owns a 4×4 micro-tile at rows ty + 16i and columns tx + 16j, so the B reads
// from shared memory and the C stores are consecutive across a half-warp. The next slice is
// fetched into registers while the current one is multiplied. Every load and store is
// bounds-checked, so no size needs to be a multiple of the tile.

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16
#define GEMM_THREADS 256
// Loads per thread per slice: a 64×16 (and a 16×64) slice over 256 threads.
#define GEMM_LOADS ((GEMM_BM * GEMM_BK) / GEMM_THREADS)
// Shared rows are padded by 2 so that the k-fast stores (16 k-values of two rows per warp) land
// in 32 distinct banks.
#define GEMM_PAD 2

template <typename T>
__device__ __forceinline__ void gemm_body(
    i64 m, i64 n, i64 k, i64 batches, i64 red,
    const Dims& da, i64 a_rs, i64 a_cs, i64 a_red, const T* __restrict__ a,
    const Dims& db, i64 b_rs, i64 b_cs, i64 b_red, const T* __restrict__ b,
    const Dims& dc, i64 c_rs, i64 c_cs, int accumulate, const T* __restrict__ bias, int gelu,
    T* __restrict__ c) {
    typedef typename Acc<T>::type A;
    __shared__ A tile_a[GEMM_BK][GEMM_BM + GEMM_PAD];
    __shared__ A tile_b[GEMM_BK][GEMM_BN + GEMM_PAD];

    const int tid = threadIdx.x;
    const int tx = tid & 15, ty = tid >> 4;
    // Load pattern: the index with the smaller stride runs fastest across threads, so that
    // neighbouring threads read neighbouring addresses (row-major and transposed alike). Thread
    // tid loads tile elements (mm + l·dm, kk + l·dk) of A for l < GEMM_LOADS, likewise for B.
    const bool a_kfast = a_cs <= a_rs;
    const int a_mm = a_kfast ? (tid >> 4) : (tid & 63), a_kk = a_kfast ? (tid & 15) : (tid >> 6);
    const int a_dm = a_kfast ? 16 : 0, a_dk = a_kfast ? 0 : 4;
    const i64 a_step = a_dm * a_rs + a_dk * a_cs;
    const bool b_nfast = b_cs <= b_rs;
    const int b_nn = b_nfast ? (tid & 63) : (tid >> 4), b_kk = b_nfast ? (tid >> 6) : (tid & 15);
    const int b_dn = b_nfast ? 0 : 16, b_dk = b_nfast ? 4 : 0;
    const i64 b_step = b_dn * b_cs + b_dk * b_rs;

    const i64 ktiles = (k + GEMM_BK - 1) / GEMM_BK;
    const i64 steps = red * ktiles;
    const i64 mtiles = (m + GEMM_BM - 1) / GEMM_BM;
    const i64 n0 = (i64)blockIdx.x * GEMM_BN;
    const i64 n_left = n - n0;

    for (i64 z = blockIdx.z; z < batches; z += gridDim.z) {
        const T* az = a + at(da, z);
        const T* bz = b + at(db, z);
        T* cz = c + at(dc, z);
        for (i64 tm = blockIdx.y; tm < mtiles; tm += gridDim.y) {
            const i64 m0 = tm * GEMM_BM;
            const i64 m_left = m - m0;
            A acc[4][4];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = (A)0;

            A ra[GEMM_LOADS], rb[GEMM_LOADS];
            // Fetches slice `s` (reduction step r, k offset k0) into ra/rb; zeros out of bounds.
            auto fetch = [&](i64 s) {
                const i64 r = s / ktiles;
                const i64 k0 = (s - r * ktiles) * GEMM_BK;
                const i64 k_left = k - k0;
                const T* pa = az + r * a_red + (m0 + a_mm) * a_rs + (k0 + a_kk) * a_cs;
                const T* pb = bz + r * b_red + (k0 + b_kk) * b_rs + (n0 + b_nn) * b_cs;
#pragma unroll
                for (int l = 0; l < GEMM_LOADS; ++l) {
                    const bool in = a_mm + l * a_dm < m_left && a_kk + l * a_dk < k_left;
                    ra[l] = in ? to_acc(pa[l * a_step]) : (A)0;
                }
#pragma unroll
                for (int l = 0; l < GEMM_LOADS; ++l) {
                    const bool in = b_nn + l * b_dn < n_left && b_kk + l * b_dk < k_left;
                    rb[l] = in ? to_acc(pb[l * b_step]) : (A)0;
                }
            };

            if (steps > 0) fetch(0);
            for (i64 s = 0; s < steps; ++s) {
#pragma unroll
                for (int l = 0; l < GEMM_LOADS; ++l) {
                    tile_a[a_kk + l * a_dk][a_mm + l * a_dm] = ra[l];
                    tile_b[b_kk + l * b_dk][b_nn + l * b_dn] = rb[l];
                }
                __syncthreads();
                // The next slice's global loads are in flight while this one is multiplied.
                if (s + 1 < steps) fetch(s + 1);
#pragma unroll
                for (int kk = 0; kk < GEMM_BK; ++kk) {
                    A av[4], bv[4];
#pragma unroll
                    for (int i = 0; i < 4; ++i) av[i] = tile_a[kk][ty + 16 * i];
#pragma unroll
                    for (int j = 0; j < 4; ++j) bv[j] = tile_b[kk][tx + 16 * j];
#pragma unroll
                    for (int i = 0; i < 4; ++i)
#pragma unroll
                        for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
                }
                // Everyone is done reading this slice before the next one overwrites it.
                __syncthreads();
            }

#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const i64 row = m0 + ty + 16 * i;
                if (row >= m) continue;
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const i64 col = n0 + tx + 16 * j;
                    if (col >= n) continue;
                    gemm_epilogue(acc[i][j], cz + row * c_rs + col * c_cs, bias, col, gelu,
                                  accumulate);
                }
            }
        }
    }
}

#define GEMM_KERNEL(S, T)                                                                          \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS) gemm_##S(                           \
        i64 m, i64 n, i64 k, i64 batches, i64 red,                                                 \
        Dims da, i64 a_rs, i64 a_cs, i64 a_red, const T* __restrict__ a,                           \
        Dims db, i64 b_rs, i64 b_cs, i64 b_red, const T* __restrict__ b,                           \
        Dims dc, i64 c_rs, i64 c_cs, int accumulate, const T* __restrict__ bias, int gelu,         \
        T* __restrict__ c) {                                                                       \
        gemm_body<T>(m, n, k, batches, red, da, a_rs, a_cs, a_red, a, db, b_rs, b_cs, b_red, b,   \
                     dc, c_rs, c_cs, accumulate, bias, gelu, c);                                   \
    }
FOR_FLOATS(GEMM_KERNEL)
