// Indexing kernels: gather (index_select and gather) and scatter_add (index_add and scatter_add).
//
// Both walk the n elements of the index's shape in row-major order. `dbase` is the view of the
// data tensor over the index's shape with the indexed dim's stride set to 0, so element i of the
// data lives at at(dbase, i) + idx[at(di, i)] * dim_stride. index_select's 1-D index is passed as
// a view broadcast over the output's shape (stride 0 outside the indexed dim).
//
// A kernel cannot raise an error: an index outside 0..size is skipped (scatter_add) or reads as
// zero (gather). The CPU ops reject such indices.

#define GATHER_KERNEL(S, T)                                                                        \
    extern "C" __global__ void gather_##S(i64 n, i64 size, i64 dim_stride, Dims dbase,            \
                                           const T* x, Dims di, const i64* idx, T* out) {          \
        GRID_STRIDE(i, n) {                                                                        \
            i64 v = idx[at(di, i)];                                                                \
            out[i] = (v >= 0 && v < size) ? x[at(dbase, i) + v * dim_stride] : from_acc<T>(0.0);   \
        }                                                                                          \
    }
FOR_ALL(GATHER_KERNEL)

// acc: the zero-filled output in the arithmetic type (f32 for f32/bf16/f16, f64 for f64), cast to
// the element type afterwards where it differs, so bf16/f16 sums accumulate in f32. The order of
// the atomic additions is not fixed: results may differ in the last bits from run to run.
#define SCATTER_ADD_KERNEL(S, T)                                                                   \
    extern "C" __global__ void scatter_add_##S(i64 n, i64 size, i64 dim_stride, Dims dbase,       \
                                                Dims di, const i64* idx, Dims ds, const T* src,    \
                                                Acc<T>::type* acc) {                               \
        GRID_STRIDE(i, n) {                                                                        \
            i64 v = idx[at(di, i)];                                                                \
            if (v >= 0 && v < size) atomicAdd(acc + at(dbase, i) + v * dim_stride, to_acc(src[at(ds, i)])); \
        }                                                                                          \
    }
FOR_FLOATS(SCATTER_ADD_KERNEL)
