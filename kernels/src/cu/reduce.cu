// Reductions over rows of a strided view: sum, max, min and argmax.
//
// The tensor side permutes the reduced dims last, so the input is a view of shape
// [rows, len] (possibly many dims merged into each): element j of row r is x[at(dx, r * len + j)].
// The output is contiguous, one value per row, in row-major order of the kept dims (which is the
// output's order with or without keepdim).
//
// Three launch shapes, picked by kernels::reduce:
// - reduce_short: one thread per row, for rows of at most a few dozen elements (a column sum of
//   [N, C] over N reads adjacent columns in adjacent threads).
// - reduce_rows: a warp per row (blockDim = 32 x rows-per-block) or a whole block per row
//   (blockDim.x > 32, blockDim.y = 1), for everything else...
// - reduce_split + reduce_finish: ...except a few very long rows, split across blocks into f64
//   partials, then combined.

// Every row kernel is launched with at most this many threads a block (the bound keeps the
// register count launchable).
#define MAX_THREADS 512

// ---- Sum, max, min ----

// One thread per row, elements in order.
template <typename T>
__device__ void reduce_short(int op, i64 rows, i64 len, const Dims& dx, const T* x, T* out) {
    typedef typename Wide<T>::type W;
    GRID_STRIDE(r, rows) {
        W acc = identity<W>(op);
        for (i64 j = 0; j < len; ++j) acc = combine(op, acc, (W)to_acc(x[at(dx, r * len + j)]));
        out[r] = narrow<T>(acc);
    }
}

// One row group per row: each thread strides over the row, then the group combines.
template <typename T>
__device__ void reduce_rows(int op, i64 rows, i64 len, const Dims& dx, const T* x, T* out) {
    typedef typename Wide<T>::type W;
    FOR_ROWS(r, rows) {
        W acc = identity<W>(op);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x)
            acc = combine(op, acc, (W)to_acc(x[at(dx, r * len + j)]));
        acc = row_combine(op, acc);
        if (threadIdx.x == 0) out[r] = narrow<T>(acc);
    }
}

// Block b (1-D blocks) takes part b % splits of row b / splits, the elements
// [part * chunk, min(len, (part + 1) * chunk)), and writes its result to partial[b] in f64 (exact
// for every accumulator). A part past the row's end writes the identity.
template <typename T>
__device__ void reduce_split(int op, i64 rows, i64 len, i64 splits, const Dims& dx, const T* x,
                             double* partial) {
    typedef typename Wide<T>::type W;
    const i64 chunk = (len + splits - 1) / splits;
    for (i64 b = blockIdx.x; b < rows * splits; b += gridDim.x) {
        const i64 r = b / splits, start = (b % splits) * chunk;
        const i64 end = start + chunk < len ? start + chunk : len;
        W acc = identity<W>(op);
        for (i64 j = start + threadIdx.x; j < end; j += blockDim.x)
            acc = combine(op, acc, (W)to_acc(x[at(dx, r * len + j)]));
        acc = row_combine(op, acc);
        if (threadIdx.x == 0) partial[b] = (double)acc;
    }
}

// out[r] from the `splits` contiguous partials of row r (row groups as reduce_rows).
template <typename T>
__device__ void reduce_finish(int op, i64 rows, i64 splits, const double* partial, T* out) {
    FOR_ROWS(r, rows) {
        double acc = identity<double>(op);
        for (i64 j = threadIdx.x; j < splits; j += blockDim.x)
            acc = combine(op, acc, partial[r * splits + j]);
        acc = row_combine(op, acc);
        if (threadIdx.x == 0) out[r] = narrow<T>(acc);
    }
}

// ---- Argmax ----

// The CPU folds `best = x[j] > x[best] ? j : best` from best = 0: the first index of the largest
// value, NaNs never win except at index 0, where nothing compares greater than them. Here each
// thread keeps a candidate (value, index), index -1 for none, skips NaNs past index 0, and
// candidates are merged with `beats`, a strict total order on the candidates that can occur (their
// indices differ), so every merge order gives the CPU's answer.
template <typename A> __device__ __forceinline__ bool beats(A va, i64 ia, A vb, i64 ib) {
    if (ia < 0) return false;
    if (ib < 0) return true;
    if (ia == 0 && isnan(va)) return true;
    if (ib == 0 && isnan(vb)) return false;
    if (va != vb) return va > vb;
    return ia < ib;
}

// Folds x[at(dx, base + j)] for this thread's j into the candidate (v, i).
template <typename T, typename A>
__device__ __forceinline__ void argmax_take(A& v, i64& i, const Dims& dx, const T* x, i64 base, i64 j) {
    A u = to_acc(x[at(dx, base + j)]);
    if (isnan(u) && j != 0) return;
    if (beats(u, j, v, i)) {
        v = u;
        i = j;
    }
}

// Merges the row group's candidates (see row_combine); every thread gets the winner's index.
template <typename A> __device__ i64 row_argmax(A v, i64 i) {
    for (int o = 16; o > 0; o >>= 1) {
        A ov = __shfl_xor_sync(0xffffffff, v, o);
        i64 oi = __shfl_xor_sync(0xffffffff, i, o);
        if (beats(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
    if (blockDim.x == 32) return i;
    __shared__ A pv[32];
    __shared__ i64 pi[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) {
        pv[warp] = v;
        pi[warp] = i;
    }
    __syncthreads();
    bool live = lane < (int)(blockDim.x >> 5);
    v = live ? pv[lane] : (A)0;
    i = live ? pi[lane] : (i64)-1;
    for (int o = 16; o > 0; o >>= 1) {
        A ov = __shfl_xor_sync(0xffffffff, v, o);
        i64 oi = __shfl_xor_sync(0xffffffff, i, o);
        if (beats(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
    return i;
}

template <typename T>
__device__ void argmax_short(i64 rows, i64 len, const Dims& dx, const T* x, i64* out) {
    typedef typename Acc<T>::type A;
    GRID_STRIDE(r, rows) {
        A v = (A)0;
        i64 i = -1;
        for (i64 j = 0; j < len; ++j) argmax_take(v, i, dx, x, r * len, j);
        out[r] = i;
    }
}

template <typename T>
__device__ void argmax_rows(i64 rows, i64 len, const Dims& dx, const T* x, i64* out) {
    typedef typename Acc<T>::type A;
    FOR_ROWS(r, rows) {
        A v = (A)0;
        i64 i = -1;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) argmax_take(v, i, dx, x, r * len, j);
        i = row_argmax(v, i);
        if (threadIdx.x == 0) out[r] = i;
    }
}

#define REDUCE_KERNELS(S, T)                                                                        \
    extern "C" __global__ void reduce_short_##S(int op, i64 rows, i64 len, Dims dx, const T* x,    \
                                                 T* out) {                                          \
        reduce_short<T>(op, rows, len, dx, x, out);                                                \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                      \
        reduce_rows_##S(int op, i64 rows, i64 len, Dims dx, const T* x, T* out) {                  \
        reduce_rows<T>(op, rows, len, dx, x, out);                                                 \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                      \
        reduce_split_##S(int op, i64 rows, i64 len, i64 splits, Dims dx, const T* x,               \
                         double* partial) {                                                        \
        reduce_split<T>(op, rows, len, splits, dx, x, partial);                                    \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                      \
        reduce_finish_##S(int op, i64 rows, i64 splits, const double* partial, T* out) {           \
        reduce_finish<T>(op, rows, splits, partial, out);                                          \
    }                                                                                              \
    extern "C" __global__ void argmax_short_##S(i64 rows, i64 len, Dims dx, const T* x, i64* out) { \
        argmax_short<T>(rows, len, dx, x, out);                                                    \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                      \
        argmax_rows_##S(i64 rows, i64 len, Dims dx, const T* x, i64* out) {                        \
        argmax_rows<T>(rows, len, dx, x, out);                                                     \
    }

FOR_FLOATS(REDUCE_KERNELS)
