// Optimizer steps. AdamW over one parameter in one pass: each thread reads p, g, m and v once and
// writes the new p, m and v, where the composite of elementwise ops makes 13 passes. Inputs are
// strided views (Dims), outputs contiguous. The scalars are tensor::AdamWStep's:
// decay = 1 - lr*wd, step_size = lr*sqrt(bc2)/bc1, eps = eps*sqrt(bc2). Halves compute in f32.
#define ADAMW_KERNEL(S, T)                                                                         \
    extern "C" __global__ void adamw_##S(i64 n, double b1, double b2, double decay,               \
                                         double step_size, double eps, Dims dp, const T* p,       \
                                         Dims dg, const T* g, Dims dm, const T* m, Dims dv,       \
                                         const T* v, T* p_out, T* m_out, T* v_out) {              \
        typedef Acc<T>::type A;                                                                    \
        const A b1_ = (A)b1, rest1 = (A)(1.0 - b1), b2_ = (A)b2, rest2 = (A)(1.0 - b2);            \
        const A decay_ = (A)decay, step_ = (A)step_size, eps_ = (A)eps;                            \
        GRID_STRIDE(i, n) {                                                                        \
            A gi = to_acc(g[at(dg, i)]);                                                           \
            A mi = to_acc(m[at(dm, i)]) * b1_ + gi * rest1;                                        \
            A vi = to_acc(v[at(dv, i)]) * b2_ + gi * (gi * rest2);                                 \
            A pi = to_acc(p[at(dp, i)]) * decay_ - mi / (sqrt(vi) + eps_) * step_;                 \
            p_out[i] = store<T>(pi);                                                               \
            m_out[i] = store<T>(mi);                                                               \
            v_out[i] = store<T>(vi);                                                               \
        }                                                                                          \
    }
FOR_FLOATS(ADAMW_KERNEL)
