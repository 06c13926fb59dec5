// Resampling of NCHW images: nearest-neighbour upsampling, average and max pooling, bilinear
// resizing, and the backward passes of upsampling and average pooling. Inputs are strided views
// (Dims) read at their row-major NCHW index; outputs are contiguous. One thread per output
// element; the backward kernels gather from the windows covering their element (no atomics).

// Pooling geometry, mirroring kernels::pool::Pool2d: input h x w, output ho x wo, kernel,
// stride and padding along (y, x).
struct Pool2d {
    i64 h, w, ho, wo;
    i64 kh, kw, sh, sw, ph, pw;
};

// The input range [lo, hi) that output o's window covers, padding excluded (cpu/pool.rs: window).
__device__ __forceinline__ void window(i64 o, i64 stride, i64 pad, i64 k, i64 len, i64& lo, i64& hi) {
    i64 start = o * stride - pad;
    lo = start < 0 ? 0 : (start > len ? len : start);
    i64 end = start + k;
    hi = end < lo ? lo : (end > len ? len : end);
}

// The outputs [lo, hi] whose windows cover input y (padding p, kernel k, stride s, out_len outputs).
__device__ __forceinline__ void covering(i64 y, i64 s, i64 p, i64 k, i64 out_len, i64& lo, i64& hi) {
    i64 t = y + p - k;  // window oy covers y iff oy*s - p <= y < oy*s - p + k
    lo = t < 0 ? 0 : t / s + 1;
    hi = (y + p) / s;
    if (hi > out_len - 1) hi = out_len - 1;
}

// Products and sums rounded separately (no FMA contraction), as the CPU computes them.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

template <typename A> __device__ __forceinline__ A neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000ULL);
}

// Source taps of bilinear resizing along one axis (cpu/pool.rs: bilinear_taps): output o reads
// i0 and i1 with weights w0 and w1; the coordinate is computed in f64 as on the CPU.
__device__ __forceinline__ void bilinear_tap(i64 o, i64 len, i64 out_len, i64& i0, i64& i1, double& w0,
                                             double& w1) {
    double scale = (double)len / (double)out_len;
    double src = __dadd_rn(__dmul_rn((double)o + 0.5, scale), -0.5);
    if (!(src >= 0.0)) src = 0.0;
    i0 = (i64)src;
    if (i0 > len - 1) i0 = len - 1;
    i1 = i0 + 1 < len - 1 ? i0 + 1 : len - 1;
    w1 = src - (double)i0;
    w0 = 1.0 - w1;
}

#define POOL_KERNELS(S, T)                                                                         \
    /* n = planes * ho * wo outputs, each its window's sum times 1/(kh*kw) (include_pad) or      \
       divided by the number of inputs it covers. */                                              \
    extern "C" __global__ void avg_pool2d_##S(i64 n, Pool2d p, int include_pad, Dims dx,          \
                                               const T* x, T* out) {                               \
        typedef Acc<T>::type A;                                                                    \
        A scale = (A)(1.0 / (double)(p.kh * p.kw));                                                \
        GRID_STRIDE(i, n) {                                                                        \
            i64 ox = i % p.wo, oy = (i / p.wo) % p.ho, plane = i / (p.wo * p.ho);                  \
            i64 y0, y1, x0, x1;                                                                    \
            window(oy, p.sh, p.ph, p.kh, p.h, y0, y1);                                             \
            window(ox, p.sw, p.pw, p.kw, p.w, x0, x1);                                             \
            A sum = (A)0;                                                                          \
            for (i64 y = y0; y < y1; ++y)                                                          \
                for (i64 xx = x0; xx < x1; ++xx)                                                   \
                    sum += to_acc(x[at(dx, (plane * p.h + y) * p.w + xx)]);                        \
            A count = (A)((y1 - y0) * (x1 - x0));                                                  \
            out[i] = store<T>(include_pad ? mul_rn(sum, scale) : sum / count);                    \
        }                                                                                          \
    }                                                                                              \
    /* n = planes * h * w input gradients: the sum of g * 1/(kh*kw) over the covering windows. */ \
    extern "C" __global__ void avg_pool2d_backward_##S(i64 n, Pool2d p, Dims dg, const T* g,      \
                                                        T* out) {                                  \
        typedef Acc<T>::type A;                                                                    \
        A scale = (A)(1.0 / (double)(p.kh * p.kw));                                                \
        GRID_STRIDE(i, n) {                                                                        \
            i64 xx = i % p.w, y = (i / p.w) % p.h, plane = i / (p.w * p.h);                        \
            i64 oy0, oy1, ox0, ox1;                                                                \
            covering(y, p.sh, p.ph, p.kh, p.ho, oy0, oy1);                                         \
            covering(xx, p.sw, p.pw, p.kw, p.wo, ox0, ox1);                                        \
            A sum = (A)0;                                                                          \
            for (i64 oy = oy0; oy <= oy1; ++oy)                                                    \
                for (i64 ox = ox0; ox <= ox1; ++ox)                                                \
                    sum = add_rn(sum, mul_rn(to_acc(g[at(dg, (plane * p.ho + oy) * p.wo + ox)]), scale)); \
            out[i] = store<T>(sum);                                                                \
        }                                                                                          \
    }                                                                                              \
    /* Max over the window, padding excluded (= padded with -inf); a NaN in a window wins. */     \
    extern "C" __global__ void max_pool2d_##S(i64 n, Pool2d p, Dims dx, const T* x, T* out) {     \
        typedef Acc<T>::type A;                                                                    \
        GRID_STRIDE(i, n) {                                                                        \
            i64 ox = i % p.wo, oy = (i / p.wo) % p.ho, plane = i / (p.wo * p.ho);                  \
            i64 y0, y1, x0, x1;                                                                    \
            window(oy, p.sh, p.ph, p.kh, p.h, y0, y1);                                             \
            window(ox, p.sw, p.pw, p.kw, p.w, x0, x1);                                             \
            A m = neg_inf<A>();                                                                    \
            for (i64 y = y0; y < y1; ++y)                                                          \
                for (i64 xx = x0; xx < x1; ++xx) {                                                 \
                    A v = to_acc(x[at(dx, (plane * p.h + y) * p.w + xx)]);                         \
                    if (v > m || v != v) m = v;                                                    \
                }                                                                                  \
            out[i] = store<T>(m);                                                                  \
        }                                                                                          \
    }                                                                                              \
    /* n = planes * (h*sh) * (w*sw) outputs, each a copy of its source pixel. */                  \
    extern "C" __global__ void upsample_nearest2d_##S(i64 n, i64 h, i64 w, i64 sh, i64 sw,        \
                                                       Dims dx, const T* x, T* out) {              \
        i64 ho = h * sh, wo = w * sw;                                                              \
        GRID_STRIDE(i, n) {                                                                        \
            i64 ox = i % wo, oy = (i / wo) % ho, plane = i / (wo * ho);                            \
            out[i] = x[at(dx, (plane * h + oy / sh) * w + ox / sw)];                               \
        }                                                                                          \
    }                                                                                              \
    /* n = planes * h * w input gradients, each the sum of its sh x sw block of g. */             \
    extern "C" __global__ void upsample_nearest2d_backward_##S(i64 n, i64 h, i64 w, i64 sh,       \
                                                                i64 sw, Dims dg, const T* g,       \
                                                                T* out) {                          \
        typedef Acc<T>::type A;                                                                    \
        i64 ho = h * sh, wo = w * sw;                                                              \
        GRID_STRIDE(i, n) {                                                                        \
            i64 xx = i % w, y = (i / w) % h, plane = i / (w * h);                                  \
            A sum = (A)0;                                                                          \
            for (i64 a = 0; a < sh; ++a)                                                           \
                for (i64 b = 0; b < sw; ++b)                                                       \
                    sum += to_acc(g[at(dg, (plane * ho + y * sh + a) * wo + xx * sw + b)]);        \
            out[i] = store<T>(sum);                                                                \
        }                                                                                          \
    }                                                                                              \
    /* n = planes * oh * ow outputs, each blending four input pixels (align_corners = false). */  \
    extern "C" __global__ void resize_bilinear2d_##S(i64 n, i64 h, i64 w, i64 oh, i64 ow,         \
                                                      Dims dx, const T* x, T* out) {               \
        typedef Acc<T>::type A;                                                                    \
        GRID_STRIDE(i, n) {                                                                        \
            i64 ox = i % ow, oy = (i / ow) % oh, plane = i / (ow * oh);                            \
            i64 y0, y1, x0, x1;                                                                    \
            double wy0, wy1, wx0, wx1;                                                             \
            bilinear_tap(oy, h, oh, y0, y1, wy0, wy1);                                             \
            bilinear_tap(ox, w, ow, x0, x1, wx0, wx1);                                             \
            i64 r0 = (plane * h + y0) * w, r1 = (plane * h + y1) * w;                              \
            A a00 = to_acc(x[at(dx, r0 + x0)]), a01 = to_acc(x[at(dx, r0 + x1)]);                  \
            A a10 = to_acc(x[at(dx, r1 + x0)]), a11 = to_acc(x[at(dx, r1 + x1)]);                  \
            A fx0 = (A)wx0, fx1 = (A)wx1, fy0 = (A)wy0, fy1 = (A)wy1;                              \
            A top = add_rn(mul_rn(fx0, a00), mul_rn(fx1, a01));                                    \
            A bottom = add_rn(mul_rn(fx0, a10), mul_rn(fx1, a11));                                 \
            out[i] = store<T>(add_rn(mul_rn(fy0, top), mul_rn(fy1, bottom)));                     \
        }                                                                                          \
    }
FOR_FLOATS(POOL_KERNELS)
