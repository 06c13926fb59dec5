// Elementwise kernels: unary maps and their derivatives, broadcasting binary ops, comparisons,
// where, casts and strided copies. Inputs are strided views (Dims), outputs are contiguous.

// Op codes: the order of kernels::UnaryCode.
#define U_NEG 0
#define U_EXP 1
#define U_LOG 2
#define U_SQRT 3
#define U_RSQRT 4
#define U_ABS 5
#define U_SQUARE 6
#define U_TANH 7
#define U_SIGMOID 8
#define U_RELU 9
#define U_SILU 10
#define U_GELU_ERF 11
#define U_GELU_TANH 12
#define U_POWF 13
#define U_CLAMP 14
#define U_ADD_SCALAR 15
#define U_MUL_SCALAR 16

#define FRAC_1_SQRT_2 0.7071067811865476
#define INV_SQRT_2PI 0.3989422804014327

template <typename A> __device__ __forceinline__ A sigmoid_(A x) { return (A)1 / ((A)1 + exp(-x)); }
template <typename A> __device__ __forceinline__ A step_(A x) { return x > (A)0 ? (A)1 : (A)0; }

template <typename A> __device__ A unary_forward(int op, A x, A p0, A p1) {
    switch (op) {
    case U_NEG: return -x;
    case U_EXP: return exp(x);
    case U_LOG: return log(x);
    case U_SQRT: return sqrt(x);
    case U_RSQRT: return (A)1 / sqrt(x);
    case U_ABS: return fabs(x);
    case U_SQUARE: return x * x;
    case U_TANH: return tanh(x);
    case U_SIGMOID: return sigmoid_(x);
    case U_RELU: return x > (A)0 ? x : (A)0;
    case U_SILU: return x * sigmoid_(x);
    case U_GELU_ERF: return (A)0.5 * x * ((A)1 + erf(x * (A)FRAC_1_SQRT_2));
    case U_GELU_TANH:
        return gelu_tanh(x);
    case U_POWF: return pow(x, p0);
    case U_CLAMP: return fmin(fmax(x, p0), p1);
    case U_ADD_SCALAR: return x + p0;
    case U_MUL_SCALAR: return x * p0;
    }
    return x;
}

// f' from the saved value v (the input x or the output y, as UnaryOp::saves says on the Rust side).
template <typename A> __device__ A unary_derivative(int op, A v, A p0, A p1) {
    A x = v, y = v;
    switch (op) {
    case U_NEG: return (A)-1;
    case U_EXP: return y;
    case U_LOG: return (A)1 / x;
    case U_SQRT: return (A)0.5 / y;
    case U_RSQRT: return (A)-0.5 * y * y * y;
    case U_ABS: return step_(x) - step_(-x);
    case U_SQUARE: return (A)2 * x;
    case U_TANH: return (A)1 - y * y;
    case U_SIGMOID: return y * ((A)1 - y);
    case U_RELU: return step_(x);
    case U_SILU: {
        A s = sigmoid_(x);
        return s * ((A)1 + x * ((A)1 - s));
    }
    case U_GELU_ERF: {
        A cdf = (A)0.5 * ((A)1 + erf(x * (A)FRAC_1_SQRT_2));
        A pdf = exp((A)-0.5 * x * x) * (A)INV_SQRT_2PI;
        return cdf + x * pdf;
    }
    case U_GELU_TANH: {
        A t = tanh((A)SQRT_2_OVER_PI * (x + (A)GELU_TANH_C * x * x * x));
        A du = (A)SQRT_2_OVER_PI * ((A)1 + (A)(3.0 * GELU_TANH_C) * x * x);
        return (A)0.5 * ((A)1 + t) + (A)0.5 * x * ((A)1 - t * t) * du;
    }
    case U_POWF: return p0 * pow(x, p0 - (A)1);
    case U_CLAMP: return (x >= p0 && x <= p1) ? (A)1 : (A)0;
    case U_ADD_SCALAR: return (A)1;
    case U_MUL_SCALAR: return p0;
    }
    return (A)0;
}

#define B_ADD 0
#define B_SUB 1
#define B_MUL 2
#define B_DIV 3
#define B_MAXIMUM 4
#define B_MINIMUM 5

template <typename A> __device__ __forceinline__ A binary_apply(int op, A a, A b) {
    switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_MAXIMUM: return fmax(a, b);
    case B_MINIMUM: return fmin(a, b);
    }
    return a;
}

#define C_EQ 0
#define C_NE 1
#define C_LT 2
#define C_LE 3
#define C_GT 4
#define C_GE 5

__device__ __forceinline__ bool cmp_apply(int op, double a, double b) {
    switch (op) {
    case C_EQ: return a == b;
    case C_NE: return a != b;
    case C_LT: return a < b;
    case C_LE: return a <= b;
    case C_GT: return a > b;
    case C_GE: return a >= b;
    }
    return false;
}

#define FLOAT_KERNELS(S, T)                                                                        \
    extern "C" __global__ void unary_##S(i64 n, int op, double p0, double p1, Dims dx,            \
                                          const T* x, T* y) {                                      \
        typedef Acc<T>::type A;                                                                    \
        GRID_STRIDE(i, n) { y[i] = store<T>(unary_forward<A>(op, to_acc(x[at(dx, i)]), (A)p0, (A)p1)); } \
    }                                                                                              \
    extern "C" __global__ void unary_backward_##S(i64 n, int op, double p0, double p1, Dims dv,   \
                                                   const T* saved, Dims dg, const T* grad, T* out) { \
        typedef Acc<T>::type A;                                                                    \
        GRID_STRIDE(i, n) {                                                                        \
            A d = unary_derivative<A>(op, to_acc(saved[at(dv, i)]), (A)p0, (A)p1);                \
            out[i] = store<T>(d * to_acc(grad[at(dg, i)]));                                        \
        }                                                                                          \
    }                                                                                              \
    extern "C" __global__ void binary_##S(i64 n, int op, Dims da, const T* a, Dims db,            \
                                           const T* b, T* out) {                                   \
        typedef Acc<T>::type A;                                                                    \
        GRID_STRIDE(i, n) { out[i] = store<T>(binary_apply<A>(op, to_acc(a[at(da, i)]), to_acc(b[at(db, i)]))); } \
    }                                                                                              \
    extern "C" __global__ void where_##S(i64 n, Dims dm, const u8* mask, Dims dt, const T* t,     \
                                          Dims df, const T* f, T* out) {                           \
        GRID_STRIDE(i, n) { out[i] = mask[at(dm, i)] ? t[at(dt, i)] : f[at(df, i)]; }             \
    }
FOR_FLOATS(FLOAT_KERNELS)

#define ALL_KERNELS(S, T)                                                                          \
    extern "C" __global__ void cmp_##S(i64 n, int op, Dims da, const T* a, Dims db, const T* b,   \
                                        u8* out) {                                                 \
        GRID_STRIDE(i, n) { out[i] = cmp_apply(op, (double)to_acc(a[at(da, i)]), (double)to_acc(b[at(db, i)])) ? 1 : 0; } \
    }                                                                                              \
    extern "C" __global__ void fill_##S(i64 n, double value, T* out) {                            \
        T v = from_acc<T>(value);                                                                  \
        GRID_STRIDE(i, n) { out[i] = v; }                                                          \
    }                                                                                              \
    extern "C" __global__ void copy_##S(i64 n, Dims dx, const T* x, Dims dy, T* y) {              \
        GRID_STRIDE(i, n) { y[at(dy, i)] = x[at(dx, i)]; }                                         \
    }                                                                                              \
    extern "C" __global__ void to_f32_##S(i64 n, Dims dx, const T* x, float* y) {                 \
        GRID_STRIDE(i, n) { y[i] = (float)to_acc(x[at(dx, i)]); }                                  \
    }                                                                                              \
    extern "C" __global__ void to_f64_##S(i64 n, Dims dx, const T* x, double* y) {                \
        GRID_STRIDE(i, n) { y[i] = (double)to_acc(x[at(dx, i)]); }                                 \
    }                                                                                              \
    extern "C" __global__ void to_bf16_##S(i64 n, Dims dx, const T* x, bf16* y) {                 \
        GRID_STRIDE(i, n) { y[i] = __float2bfloat16((float)to_acc(x[at(dx, i)])); }               \
    }                                                                                              \
    extern "C" __global__ void to_f16_##S(i64 n, Dims dx, const T* x, f16* y) {                   \
        GRID_STRIDE(i, n) { y[i] = __float2half((float)to_acc(x[at(dx, i)])); }                  \
    }                                                                                              \
    extern "C" __global__ void to_u8_##S(i64 n, Dims dx, const T* x, u8* y) {                     \
        GRID_STRIDE(i, n) { y[i] = round_u8((double)to_acc(x[at(dx, i)])); }                             \
    }                                                                                              \
    extern "C" __global__ void to_i64_##S(i64 n, Dims dx, const T* x, i64* y) {                   \
        GRID_STRIDE(i, n) { y[i] = round_i64((double)to_acc(x[at(dx, i)])); }                            \
    }
FOR_ALL(ALL_KERNELS)
