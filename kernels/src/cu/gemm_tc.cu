// Tensor-core batched GEMM for bf16 and f16 with f32 accumulation (sm_80 and newer):
// C[z] (+)= act(Σ_{r<red} A[z, r] · B[z, r] + bias), the same contract as gemm_body in matmul.cu
// (strided batches through Dims, `red` reduction steps, any m, n, k), for operands that have a unit
// stride along one of their two dims and 16-byte aligned rows along the other. matmul.rs checks
// that and sends everything else to the SIMT kernel.
//
// Tiling. A 256-thread block (8 warps) computes a 128×128 tile of C, walking k in steps of 32.
// The warps form a 2×4 grid, each owning a 64×32 sub-tile: 4 m16 × 4 n8 mma tiles, 64 f32
// accumulators per thread. Per k16 slice a warp issues 6 ldmatrix.x4 (4 for A, 2 for B) for
// 16 mma.m16n8k16, so shared memory bandwidth is not the limit; 64×32 rather than 64×64 keeps the
// registers (accumulators, fragments, addresses) near 128 per thread, so that 2 blocks (16 warps)
// fit per SM: __launch_bounds__ caps them at 128, which costs 4 to 20 bytes of spills on sm_90a
// and up to 72 on sm_80 (ptxas); uncapped it took some 200 registers and 1 block per SM. To that
// end, fragment addresses are derived from one per-thread offset (frag_at) and the copies index
// within the tile in 32-bit ints.
//
// Pipeline. Global tiles are copied into shared memory with cp.async (16 bytes a copy, no
// registers involved), 3 stages deep: while the warps multiply stage s, the copies of stages s+1
// and s+2 are in flight. One stage is two 128×32 tiles of 2-byte elements, 16 KiB, so 3 stages
// take exactly 48 KiB: the most a kernel may declare statically, with no opt-in attribute needed,
// and 2 blocks per SM still fit on A100 and H100.
//
// Edges. Every copy is guarded: rows past m (or n) and k past k copy 0 bytes, and a 16-byte chunk
// that straddles the end of k (or m, n) copies only its valid elements. cp.async zero-fills the
// rest of the 16 bytes, so tiles past the edges hold zeros and add nothing; the epilogue then
// stores only in-bounds elements. Partial chunks keep their start 16-byte aligned, which is why the
// host requires row strides, batch offsets and the reduction step to be multiples of 8 elements.
//
// Shared layout. Each tile is kept as global memory has it, so that a copy moves 16 contiguous
// bytes: "K-major" (k contiguous: row-major A, transposed B) is 128 rows of 32 k, "MN-major" (m or
// n contiguous: transposed A, row-major B) is 32 k-rows of 128. ldmatrix reads 8 rows of 16 bytes
// per 8×8 matrix; the 16-byte chunks are XOR-swizzled by row so that those 8 rows (and the
// copies' writes) hit 8 distinct groups of 4 banks, with no padding (which would not fit in
// 48 KiB). MN-major tiles are read with ldmatrix.trans, which hands each thread the k-pairs the
// mma fragments want.
//
// Fragments (PTX ISA, mma.m16n8k16 with 16-bit inputs), with lane = 4·g + t:
//   A (16×16): a0 = (row g, k 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16×8):  b0 = (k 2t..2t+1, col g), b1 = (k 2t+8.., col g)
//   C (16×8):  c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g+8, cols 2t, 2t+1)
// ldmatrix.x4 gives register j the 8×8 matrix whose row addresses lanes 8j..8j+7 supply; each lane
// gets 2 consecutive elements of row lane/4 (with .trans: of column lane/4).

#define TC_BM 128
#define TC_BN 128
#define TC_BK 32
#define TC_STAGES 3
#define TC_THREADS 256
// Elements of one operand's tile (128×32 or 32×128).
#define TC_TILE (TC_BM * TC_BK)
// Width of an MN-major tile's rows (TC_BM == TC_BN).
#define TC_WIDE 128

// ---- PTX wrappers ----

__device__ __forceinline__ unsigned smem_address(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

// Copies `bytes` (0..16) from global `src` to shared `dst` and zero-fills the rest of 16 bytes.
// Both addresses must be 16-byte aligned; with 0 bytes nothing is read.
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most N of this thread's committed copy groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8×8 matrices of 16-bit elements from shared memory (transposed when Trans).
template <bool Trans> __device__ __forceinline__ void ldsm_x4(unsigned addr, unsigned (&r)[4]) {
    if (Trans) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(addr)
                     : "memory");
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(addr)
                     : "memory");
    }
}

// d += a · b for one 16×8×16 tile, f32 accumulators.
__device__ __forceinline__ void mma16816(bf16, float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                         unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma16816(f16, float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                         unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- Swizzled tile offsets, in elements ----

// K-major tile, element (row r, k): 4 chunks of 8 per 64-byte row; the chunk moves by (r/2) mod 4,
// so any 8 consecutive rows (r/2 and r's parity differing) cover all 8 bank groups.
__device__ __forceinline__ int kmajor_at(int r, int k) {
    return r * TC_BK + ((((k >> 3) ^ (r >> 1)) & 3) << 3) + (k & 7);
}

// MN-major tile, element (k-row r, column c): 16 chunks per 256-byte row; the chunk moves by r mod 8.
__device__ __forceinline__ int mnmajor_at(int r, int c) {
    return r * TC_WIDE + (((c >> 3) ^ (r & 7)) << 3) + (c & 7);
}

// ---- Tile copies and fragment loads ----

// Starts the copies of one operand's tile for one k-step into the shared tile at `dst`. The tile's
// element (i, kk) is p[i·s_i + kk·s_k] (i a row of A or a column of B), with `i_rem` rows and
// `k_rem` columns of it inside the matrix (each at least 1, so p itself is in bounds). KMajor:
// s_k == 1, else s_i == 1. Each of the 256 threads copies 2 of the tile's 512 chunks.
template <bool KMajor, typename T>
__device__ __forceinline__ void copy_tile(unsigned dst, const T* p, i64 s_i, i64 s_k, int i_rem,
                                          int k_rem) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        const int chunk = threadIdx.x + j * TC_THREADS;
        // The chunk's row and first column within the tile.
        const int r = KMajor ? chunk >> 2 : chunk >> 4;
        const int c = KMajor ? (chunk & 3) * 8 : (chunk & 15) * 8;
        const int i = KMajor ? r : c, kk = KMajor ? c : r;
        // Whole rows out of range copy nothing; along the contiguous dim, at most the elements left.
        const bool in = KMajor ? i < i_rem : kk < k_rem;
        const int left = KMajor ? k_rem - kk : i_rem - i;
        const int elems = in ? min(max(left, 0), 8) : 0;
        // An empty copy still names a valid, aligned address: the tile's first element.
        const T* src = elems > 0 ? p + i * s_i + kk * s_k : p;
        const int off = KMajor ? kmajor_at(r, c) : mnmajor_at(r, c);
        cp_async16(dst + off * 2, src, elems * 2);
    }
}

// Where the thread's ldmatrix row address of fragment i (the i-th step of 16 rows or columns) at
// k slice kk lies, from `first`, that of fragment 0 at kk = 0. In a K-major tile, 16 more rows
// leave the swizzle alone and kk = 16 moves the chunk by 2, an XOR of 16 elements; in an MN-major
// tile, 16 more columns XOR the chunk with 2 and kk adds kk rows. So the per-thread swizzle is
// computed once, and each fragment costs an add and an XOR rather than a register of its own.
template <bool KMajor> __device__ __forceinline__ int frag_at(int first, int i, int kk) {
    return KMajor ? (first + i * 16 * TC_BK) ^ kk : (first ^ (i * 16)) + kk * TC_WIDE;
}

// The ldmatrix row address (in elements) of fragment 0 at kk = 0 for this lane: lanes 8q..8q+7
// address matrix q of an x4 load. For A (rows from `m`), matrix q is rows m + 8·(q & 1), k
// 8·(q >> 1): a0..a3 in order. For B (columns from `n`), matrix q is columns n + 8·(q >> 1), k
// 8·(q & 1): b0, b1 of one n8 tile, then of the next.
template <bool KMajor> __device__ __forceinline__ int first_a(int m) {
    const int lane = threadIdx.x & 31, q = lane >> 3, r = lane & 7;
    return KMajor ? kmajor_at(m + r + 8 * (q & 1), 8 * (q >> 1))
                  : mnmajor_at(r + 8 * (q >> 1), m + 8 * (q & 1));
}
template <bool KMajor> __device__ __forceinline__ int first_b(int n) {
    const int lane = threadIdx.x & 31, q = lane >> 3, r = lane & 7;
    return KMajor ? kmajor_at(n + r + 8 * (q >> 1), 8 * (q & 1))
                  : mnmajor_at(r + 8 * (q & 1), n + 8 * (q >> 1));
}

// The B fragments of the warp's four n8 tiles (two per x4 load) for the k16 slice at kk.
template <bool KMajor>
__device__ __forceinline__ void load_b(unsigned tile, int first, int kk, unsigned (&b)[4][2]) {
#pragma unroll
    for (int nj = 0; nj < 2; ++nj) {
        unsigned t[4];
        ldsm_x4<!KMajor>(tile + frag_at<KMajor>(first, nj, kk) * 2, t);
        b[2 * nj][0] = t[0];
        b[2 * nj][1] = t[1];
        b[2 * nj + 1][0] = t[2];
        b[2 * nj + 1][1] = t[3];
    }
}

// ---- The kernel ----

template <typename T, bool AKMajor, bool BKMajor>
__device__ __forceinline__ void gemm_tc_body(
    i64 m, i64 n, i64 k, i64 batches, i64 red,
    const Dims& da, i64 a_rs, i64 a_cs, i64 a_red, const T* __restrict__ a,
    const Dims& db, i64 b_rs, i64 b_cs, i64 b_red, const T* __restrict__ b,
    const Dims& dc, i64 c_rs, i64 c_cs, int accumulate, const T* __restrict__ bias, int gelu,
    T* __restrict__ c) {
    // [stage][A, B][tile], as raw 16-bit words: only cp.async and ldmatrix touch it.
    __shared__ __align__(128) unsigned short tiles[TC_STAGES][2][TC_TILE];
    const unsigned smem = smem_address(tiles);
    const unsigned stage_bytes = 2 * TC_TILE * 2, b_bytes = TC_TILE * 2;

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp >> 2, wn = warp & 3;
    const int a_first = first_a<AKMajor>(wm * 64), b_first = first_b<BKMajor>(wn * 32);
    const i64 steps = red * ((k + TC_BK - 1) / TC_BK);
    const i64 mtiles = (m + TC_BM - 1) / TC_BM;
    const i64 n0 = (i64)blockIdx.x * TC_BN;

    for (i64 z = blockIdx.z; z < batches; z += gridDim.z) {
        for (i64 tm = blockIdx.y; tm < mtiles; tm += gridDim.y) {
            const i64 m0 = tm * TC_BM;
            // The block's first row of A and column of B, and how many of the tile's rows and
            // columns lie inside C (the tile sizes fit in an int; m and n need not).
            const T* a0 = a + at(da, z) + m0 * a_rs;
            const T* b0 = b + at(db, z) + n0 * b_cs;
            const int m_rem = (int)min(m - m0, (i64)TC_BM), n_rem = (int)min(n - n0, (i64)TC_BN);

            // The next k-step to copy: reduction step `lr`, k offset `lk`, into stage `ls`
            // (counters rather than divisions by ktiles and TC_STAGES, which cost 64-bit divides).
            i64 lr = 0, lk = 0;
            int ls = 0;
            auto copy_next = [&]() {
                const unsigned dst = smem + ls * stage_bytes;
                const int k_rem = (int)min(k - lk, (i64)TC_BK);
                copy_tile<AKMajor>(dst, a0 + lr * a_red + lk * a_cs, a_rs, a_cs, m_rem, k_rem);
                copy_tile<BKMajor>(dst + b_bytes, b0 + lr * b_red + lk * b_rs, b_cs, b_rs, n_rem,
                                   k_rem);
                lk += TC_BK;
                if (lk >= k) {
                    lk = 0;
                    ++lr;
                }
                ls = ls + 1 == TC_STAGES ? 0 : ls + 1;
            };

            float acc[4][4][4];
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;

            // Prologue: the first STAGES-1 steps in flight. Every thread commits one group per
            // step, empty or not, so "step s has landed" is always "at most STAGES-2 pending".
#pragma unroll
            for (int s = 0; s < TC_STAGES - 1; ++s) {
                if (s < steps) copy_next();
                cp_async_commit();
            }
            int read = 0;  // the stage of step s
            for (i64 s = 0; s < steps; ++s) {
                cp_async_wait<TC_STAGES - 2>();
                // Step s is visible to every warp, and every warp is done with step s-1, whose
                // stage the next copy overwrites.
                __syncthreads();
                if (s + TC_STAGES - 1 < steps) copy_next();
                cp_async_commit();

                const unsigned ta = smem + read * stage_bytes;
                const unsigned tb = ta + b_bytes;
#pragma unroll
                for (int kk = 0; kk < TC_BK; kk += 16) {
                    // All of B's fragments, then A's one m16 tile at a time: 12 fragment
                    // registers live rather than 24.
                    unsigned fb[4][2];
                    load_b<BKMajor>(tb, b_first, kk, fb);
#pragma unroll
                    for (int mi = 0; mi < 4; ++mi) {
                        unsigned fa[4];
                        ldsm_x4<!AKMajor>(ta + frag_at<AKMajor>(a_first, mi, kk) * 2, fa);
#pragma unroll
                        for (int ni = 0; ni < 4; ++ni)
                            mma16816(T(), acc[mi][ni], fa, fb[ni][0], fb[ni][1]);
                    }
                }
                read = read + 1 == TC_STAGES ? 0 : read + 1;
            }
            // Only empty groups can be pending; the barrier keeps the next tile's prologue from
            // overwriting stages that slower warps still read.
            cp_async_wait<0>();
            __syncthreads();

            // Epilogue: bias, GELU, then store (or add into C), in-bounds elements only.
            T* cz = c + at(dc, z);
            const int g = lane >> 2, t = lane & 3;
#pragma unroll
            for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const i64 row = m0 + wm * 64 + mi * 16 + g + 8 * h;
                    if (row >= m) continue;
#pragma unroll
                    for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const i64 col = n0 + wn * 32 + ni * 8 + 2 * t + e;
                            if (col >= n) continue;
                            gemm_epilogue(acc[mi][ni][2 * h + e], cz + row * c_rs + col * c_cs,
                                          bias, col, gelu, accumulate);
                        }
                    }
                }
            }
        }
    }
}

// gemm_tc_<type>_<a><b>: a = n for a row-major A (k contiguous), t for a transposed one (m
// contiguous); b = n for a row-major B (n contiguous), t for a transposed one (k contiguous).
#define GEMM_TC_KERNEL(S, T, L, AK, BK)                                                            \
    extern "C" __global__ void __launch_bounds__(TC_THREADS, 2) gemm_tc_##S##_##L(                 \
        i64 m, i64 n, i64 k, i64 batches, i64 red,                                                 \
        Dims da, i64 a_rs, i64 a_cs, i64 a_red, const T* __restrict__ a,                           \
        Dims db, i64 b_rs, i64 b_cs, i64 b_red, const T* __restrict__ b,                           \
        Dims dc, i64 c_rs, i64 c_cs, int accumulate, const T* __restrict__ bias, int gelu,         \
        T* __restrict__ c) {                                                                       \
        gemm_tc_body<T, AK, BK>(m, n, k, batches, red, da, a_rs, a_cs, a_red, a, db, b_rs, b_cs,   \
                                b_red, b, dc, c_rs, c_cs, accumulate, bias, gelu, c);              \
    }
#define GEMM_TC_LAYOUTS(S, T)                                                                      \
    GEMM_TC_KERNEL(S, T, nn, true, false)                                                          \
    GEMM_TC_KERNEL(S, T, nt, true, true)                                                           \
    GEMM_TC_KERNEL(S, T, tn, false, false)                                                         \
    GEMM_TC_KERNEL(S, T, tt, false, true)
GEMM_TC_LAYOUTS(bf16, bf16)
GEMM_TC_LAYOUTS(f16, f16)
