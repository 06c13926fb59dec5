// 2-D convolution helpers around the GEMM of matmul.cu: im2col (image to column matrix), col2im
// (its adjoint, for the input gradient) and the sum of per-split weight-gradient partials.
//
// Column matrix layout, per image b: col[b][(c·kh + ky)·kw + kx][oy·wo + ox], i.e. [images,
// cin·kh·kw, ho·wo] contiguous; group g's rows are one contiguous block (its channels
// g·cin/groups up to (g+1)·cin/groups). Images are [images, cin, h, w] contiguous.

// Mirrors kernels::conv::ConvShape field by field.
struct ConvShape {
    i64 images, cin, h, w, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw;
};

// Index arithmetic in I: int when every count and extent is below 2^30 (the caller's `wide` flag
// is 0; the margin keeps i + grid stride from overflowing), else i64. The flat index is split
// with divisions, which are several times cheaper in 32 bits.
template <typename I, typename T>
__device__ __forceinline__ void im2col_body(const ConvShape& g, const T* __restrict__ x,
                                            T* __restrict__ col) {
    const I kw = (I)g.kw, kh = (I)g.kh, wo = (I)g.wo, l = (I)(g.ho * g.wo);
    const I ck = (I)(g.cin * g.kh * g.kw);
    const I n = (I)g.images * ck * l;
    const T zero = store<T>((typename Acc<T>::type)0);
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)blockDim.x * gridDim.x) {
        const I pos = i % l, row = (i / l) % ck, img = i / (l * ck);
        const I kx = row % kw, ky = (row / kw) % kh, c = row / (kw * kh);
        const I oy = pos / wo, ox = pos % wo;
        const i64 iy = (i64)oy * g.sh - g.ph + (i64)ky * g.dh;
        const i64 ix = (i64)ox * g.sw - g.pw + (i64)kx * g.dw;
        const bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
        col[i] = inside ? x[(((i64)img * g.cin + c) * g.h + iy) * g.w + ix] : zero;
    }
}

// One thread per input pixel gathers every column entry that im2col copied from it (no atomics):
// tap (ky, kx) reads pixel iy from output row oy when oy·sh = iy + ph - ky·dh.
template <typename I, typename T>
__device__ __forceinline__ void col2im_body(const ConvShape& g, const T* __restrict__ col,
                                            T* __restrict__ dx) {
    typedef typename Acc<T>::type A;
    const I w = (I)g.w, h = (I)g.h, cin = (I)g.cin, kh = (I)g.kh, kw = (I)g.kw;
    const I ho = (I)g.ho, wo = (I)g.wo, sh = (I)g.sh, sw = (I)g.sw;
    const I ph = (I)g.ph, pw = (I)g.pw, dh = (I)g.dh, dw = (I)g.dw;
    const I n = (I)g.images * cin * h * w;
    const i64 l = g.ho * g.wo;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)blockDim.x * gridDim.x) {
        const I ix = i % w, iy = (i / w) % h, c = (i / (w * h)) % cin, img = i / (w * h * cin);
        // The kh·kw column rows of (img, c), l entries each, start here.
        const T* cc = col + ((i64)img * g.cin + c) * (g.kh * g.kw) * l;
        A s = (A)0;
        for (I ky = 0; ky < kh; ++ky) {
            const I ty = iy + ph - ky * dh;
            if (ty < 0) break;  // ty only falls as ky grows
            if (ty % sh != 0) continue;
            const I oy = ty / sh;
            if (oy >= ho) continue;
            for (I kx = 0; kx < kw; ++kx) {
                const I tx = ix + pw - kx * dw;
                if (tx < 0) break;
                if (tx % sw != 0) continue;
                const I ox = tx / sw;
                if (ox >= wo) continue;
                s += to_acc(cc[((i64)ky * kw + kx) * l + (i64)oy * wo + ox]);
            }
        }
        dx[i] = store<T>(s);
    }
}

#define CONV_KERNELS(S, T)                                                                         \
    extern "C" __global__ void im2col_##S(ConvShape g, int wide, const T* x, i64 x_off, T* col) {  \
        if (wide) im2col_body<i64, T>(g, x + x_off, col);                                         \
        else im2col_body<int, T>(g, x + x_off, col);                                              \
    }                                                                                              \
    extern "C" __global__ void col2im_##S(ConvShape g, int wide, const T* col, T* dx, i64 dx_off) { \
        if (wide) col2im_body<i64, T>(g, col, dx + dx_off);                                       \
        else col2im_body<int, T>(g, col, dx + dx_off);                                            \
    }                                                                                              \
    /* out[i] (+)= Σ_p parts[p·len + i]: the weight-gradient splits added up. */                   \
    extern "C" __global__ void sum_parts_##S(i64 len, i64 parts, const T* p, int accumulate,      \
                                             T* out) {                                             \
        typedef Acc<T>::type A;                                                                    \
        GRID_STRIDE(i, len) {                                                                      \
            A s = accumulate ? to_acc(out[i]) : (A)0;                                              \
            for (i64 q = 0; q < parts; ++q) s += to_acc(p[q * len + i]);                           \
            out[i] = store<T>(s);                                                                  \
        }                                                                                          \
    }
FOR_FLOATS(CONV_KERNELS)
