// Fused normalisations: softmax and log-softmax along a dim (forward and backward), and the row
// normalisation behind layer norm and group norm (forward, dx, and the parameter gradients).
//
// Every kernel walks rows of `len` elements. Softmax views (tensor side) move the softmax dim last,
// for the input and for the contiguous output alike, so element j of row r is at
// at(d, r * len + j) in each; the output's view puts each value where the original shape's
// row-major order wants it. The row norms' rows are contiguous runs of the input's row-major order
// (the last dims for layer norm, one (sample, group) for group norm).
//
// Row groups as in reduce.cu: a warp per row (blockDim = 32 x rows-per-block) for short rows, a
// whole block per row (blockDim.x > 32, blockDim.y = 1) for long ones.

#define MAX_THREADS 512

// ---- Softmax ----

// y = softmax(x) or log_softmax(x) along each row, as the CPU: the row max m (in the element's
// arithmetic type A), s = Σ exp(x − m) in the wide type, then exp(x − m)·(1/s) or x − m − ln s.
template <typename T>
__device__ void softmax_rows(int log_, i64 rows, i64 len, const Dims& dx, const T* x, const Dims& dy,
                             T* y) {
    typedef typename Acc<T>::type A;
    typedef typename Wide<T>::type W;
    FOR_ROWS(r, rows) {
        const i64 base = r * len;
        A m = -pos_inf<A>();
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) m = fmax(m, to_acc(x[at(dx, base + j)]));
        m = row_combine(R_MAX, m);
        W s = 0;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) s += (W)exp(to_acc(x[at(dx, base + j)]) - m);
        s = row_combine(R_SUM, s);
        if (log_) {
            const A log_s = (A)log(s);
            for (i64 j = threadIdx.x; j < len; j += blockDim.x)
                y[at(dy, base + j)] = store<T>(to_acc(x[at(dx, base + j)]) - m - log_s);
        } else {
            const A inv = (A)((W)1 / s);
            for (i64 j = threadIdx.x; j < len; j += blockDim.x)
                y[at(dy, base + j)] = store<T>(exp(to_acc(x[at(dx, base + j)]) - m) * inv);
        }
    }
}

// The gradient from the forward output y and the output gradient g, per row:
// softmax y·(g − Σ g·y), log-softmax g − exp(y)·Σ g (products in A, sums in the wide type).
template <typename T>
__device__ void softmax_backward_rows(int log_, i64 rows, i64 len, const Dims& dy, const T* y,
                                      const Dims& dg, const T* g, const Dims& dout, T* out) {
    typedef typename Acc<T>::type A;
    typedef typename Wide<T>::type W;
    FOR_ROWS(r, rows) {
        const i64 base = r * len;
        W s = 0;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            A gj = to_acc(g[at(dg, base + j)]);
            s += log_ ? (W)gj : (W)(gj * to_acc(y[at(dy, base + j)]));
        }
        const A sum = (A)row_combine(R_SUM, s);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            A yj = to_acc(y[at(dy, base + j)]), gj = to_acc(g[at(dg, base + j)]);
            out[at(dout, base + j)] = store<T>(log_ ? gj - exp(yj) * sum : yj * (gj - sum));
        }
    }
}

// ---- Layer norm and group norm ----
//
// `rows` rows of `len` elements, each normalised to zero mean and unit (biased) variance, then
// scaled and shifted by the affine parameter p(r, j) = ((r % groups) * len + j) / inner of its
// element j. Layer norm: groups = inner = 1, so p = j. Group norm of [N, C, *spatial]: row
// r = n * groups + g, inner = the spatial size, so p is the element's channel. Arithmetic in the
// wide type (f64 for f32, as the CPU).

__device__ __forceinline__ i64 param_index(i64 r, i64 j, i64 len, i64 groups, i64 inner) {
    const i64 k = (r % groups) * len + j;
    return inner == 1 ? k : k / inner;
}

// y contiguous like x; mean and rstd = 1/√(var + eps) per row, contiguous. w and b may be null.
template <typename T>
__device__ void row_norm_rows(i64 rows, i64 len, i64 groups, i64 inner, double eps, const Dims& dx,
                              const T* x, const Dims& dw, const T* w, const Dims& db, const T* b,
                              T* y, T* mean, T* rstd) {
    typedef typename Wide<T>::type W;
    FOR_ROWS(r, rows) {
        const i64 base = r * len;
        W s = 0;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) s += (W)to_acc(x[at(dx, base + j)]);
        const W mu = row_combine(R_SUM, s) / (W)len;
        // Second pass around the mean: no cancellation when the mean is large against the spread.
        W q = 0;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            W d = (W)to_acc(x[at(dx, base + j)]) - mu;
            q += d * d;
        }
        const W var = row_combine(R_SUM, q) / (W)len;
        const W rs = (W)1 / sqrt(var + (W)eps);
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            const i64 p = param_index(r, j, len, groups, inner);
            W v = ((W)to_acc(x[at(dx, base + j)]) - mu) * rs;
            if (w) v *= (W)to_acc(w[at(dw, p)]);
            if (b) v += (W)to_acc(b[at(db, p)]);
            y[base + j] = narrow<T>(v);
        }
        if (threadIdx.x == 0) {
            mean[r] = narrow<T>(mu);
            rstd[r] = narrow<T>(rs);
        }
    }
}

// dx per row, with x̂ = (x − mean)·rstd and dx̂ = dy·w (w null: 1):
// dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)). mean and rstd are the forward's (rounded to T).
template <typename T>
__device__ void row_norm_backward_rows(i64 rows, i64 len, i64 groups, i64 inner, const Dims& dx,
                                       const T* x, const Dims& dg, const T* g, const Dims& dm,
                                       const T* mean, const Dims& dr, const T* rstd, const Dims& dw,
                                       const T* w, T* out) {
    typedef typename Wide<T>::type W;
    FOR_ROWS(r, rows) {
        const i64 base = r * len;
        const W mu = (W)to_acc(mean[at(dm, r)]), rs = (W)to_acc(rstd[at(dr, r)]);
        W s1 = 0, s2 = 0;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            const W xhat = ((W)to_acc(x[at(dx, base + j)]) - mu) * rs;
            W dxhat = (W)to_acc(g[at(dg, base + j)]);
            if (w) dxhat *= (W)to_acc(w[at(dw, param_index(r, j, len, groups, inner))]);
            s1 += dxhat;
            s2 += dxhat * xhat;
        }
        const W m1 = row_combine(R_SUM, s1) / (W)len;
        const W m2 = row_combine(R_SUM, s2) / (W)len;
        for (i64 j = threadIdx.x; j < len; j += blockDim.x) {
            const W xhat = ((W)to_acc(x[at(dx, base + j)]) - mu) * rs;
            W dxhat = (W)to_acc(g[at(dg, base + j)]);
            if (w) dxhat *= (W)to_acc(w[at(dw, param_index(r, j, len, groups, inner))]);
            out[base + j] = narrow<T>(rs * (dxhat - m1 - xhat * m2));
        }
    }
}

// dweight = Σ dy·x̂ and dbias = Σ dy per parameter, first pass. The elements, in row-major order,
// repeat their parameters every cols = groups·len elements (a layer-norm row; a sample of a group
// norm), so view them as [cycles, cols]: element e = c·cols + q lies in row e / len and belongs to
// parameter q / inner. Thread (q, blockIdx.y) sums column q over the cycles
// [blockIdx.y · per, min(cycles, (blockIdx.y + 1) · per)) — adjacent threads read adjacent
// elements — and writes f64 partials to part_w / part_b[blockIdx.y · cols + q].
template <typename T>
__device__ void norm_param_partial(i64 cycles, i64 cols, i64 len, i64 per, const Dims& dx, const T* x,
                                   const Dims& dg, const T* g, const Dims& dm, const T* mean,
                                   const Dims& dr, const T* rstd, double* part_w, double* part_b) {
    typedef typename Wide<T>::type W;
    const i64 c0 = (i64)blockIdx.y * per;
    const i64 c1 = c0 + per < cycles ? c0 + per : cycles;
    GRID_STRIDE(q, cols) {
        W sw = 0, sb = 0;
        for (i64 c = c0; c < c1; ++c) {
            const i64 e = c * cols + q, r = e / len;
            const W mu = (W)to_acc(mean[at(dm, r)]), rs = (W)to_acc(rstd[at(dr, r)]);
            const W xhat = ((W)to_acc(x[at(dx, e)]) - mu) * rs;
            const W d = (W)to_acc(g[at(dg, e)]);
            sw += d * xhat;
            sb += d;
        }
        part_w[(i64)blockIdx.y * cols + q] = (double)sw;
        part_b[(i64)blockIdx.y * cols + q] = (double)sb;
    }
}

// Second pass: parameter p (one row group each) sums the partials of its columns
// q = p·inner + s over every chunk: part[chunk · cols + p · inner + s].
template <typename T>
__device__ void norm_param_finish(i64 params, i64 chunks, i64 cols, i64 inner, const double* part_w,
                                  const double* part_b, T* dw, T* db) {
    FOR_ROWS(p, params) {
        double sw = 0, sb = 0;
        for (i64 k = threadIdx.x; k < chunks * inner; k += blockDim.x) {
            const i64 i = (k / inner) * cols + p * inner + k % inner;
            sw += part_w[i];
            sb += part_b[i];
        }
        sw = row_combine(R_SUM, sw);
        sb = row_combine(R_SUM, sb);
        if (threadIdx.x == 0) {
            dw[p] = narrow<T>(sw);
            db[p] = narrow<T>(sb);
        }
    }
}

#define NORM_KERNELS(S, T)                                                                          \
    extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                      \
        softmax_##S(int log_, i64 rows, i64 len, Dims dx, const T* x, Dims dy, T* y) {             \
        softmax_rows<T>(log_, rows, len, dx, x, dy, y);                                            \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                      \
        softmax_backward_##S(int log_, i64 rows, i64 len, Dims dy, const T* y, Dims dg, const T* g, \
                             Dims dout, T* out) {                                                  \
        softmax_backward_rows<T>(log_, rows, len, dy, y, dg, g, dout, out);                        \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                      \
        row_norm_##S(i64 rows, i64 len, i64 groups, i64 inner, double eps, Dims dx, const T* x,    \
                     Dims dw, const T* w, Dims db, const T* b, T* y, T* mean, T* rstd) {           \
        row_norm_rows<T>(rows, len, groups, inner, eps, dx, x, dw, w, db, b, y, mean, rstd);       \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                      \
        row_norm_backward_##S(i64 rows, i64 len, i64 groups, i64 inner, Dims dx, const T* x,       \
                              Dims dg, const T* g, Dims dm, const T* mean, Dims dr,                \
                              const T* rstd, Dims dw, const T* w, T* out) {                        \
        row_norm_backward_rows<T>(rows, len, groups, inner, dx, x, dg, g, dm, mean, dr, rstd, dw,  \
                                  w, out);                                                         \
    }                                                                                              \
    extern "C" __global__ void norm_param_partial_##S(i64 cycles, i64 cols, i64 len, i64 per,      \
                                                       Dims dx, const T* x, Dims dg, const T* g,   \
                                                       Dims dm, const T* mean, Dims dr,            \
                                                       const T* rstd, double* part_w,              \
                                                       double* part_b) {                           \
        norm_param_partial<T>(cycles, cols, len, per, dx, x, dg, g, dm, mean, dr, rstd, part_w,    \
                              part_b);                                                             \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                      \
        norm_param_finish_##S(i64 params, i64 chunks, i64 cols, i64 inner, const double* part_w,   \
                              const double* part_b, T* dw, T* db) {                                \
        norm_param_finish<T>(params, chunks, cols, inner, part_w, part_b, dw, db);                 \
    }

FOR_FLOATS(NORM_KERNELS)
