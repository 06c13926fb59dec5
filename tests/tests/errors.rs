//! Wrong shapes and dtypes are errors, never panics, and their messages name the op and the shapes
//! or dtypes involved. Each test asserts on the message text.

use autograd::{Grads, Var};
use tensor::{DType, Device, Error, Result, Tensor};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, Device::Cpu).unwrap()
}

fn ids(values: &[i64]) -> Tensor {
    Tensor::from_slice(values, &[values.len()]).unwrap()
}

/// The message of an error `result` must be, after checking that it contains every one of `parts`.
#[track_caller]
fn expect_err<T>(result: Result<T>, parts: &[&str]) -> Error {
    let Err(e) = result else {
        panic!("expected an error containing {parts:?}, got Ok")
    };
    let msg = e.to_string();
    for part in parts {
        assert!(msg.contains(part), "`{msg}` does not contain `{part}`");
    }
    e
}

#[test]
fn matmul_inner_dimension_mismatch() {
    let e = expect_err(
        zeros(&[2, 3]).matmul(&zeros(&[4, 5])),
        &["matmul", "[2, 3]", "[4, 5]", "3", "4"],
    );
    assert!(matches!(e, Error::Shape { op: "matmul", .. }));
    // Batch dims that do not broadcast, and too few dims.
    expect_err(
        zeros(&[2, 2, 3]).matmul(&zeros(&[3, 3, 4])),
        &["matmul", "[2, 2, 3]", "[3, 3, 4]", "batch"],
    );
    expect_err(
        zeros(&[3]).matmul(&zeros(&[3, 4])),
        &["matmul", "[3]", "2 dims"],
    );
    // Through autograd too.
    let (a, b) = (Var::param(zeros(&[2, 3])), Var::param(zeros(&[2, 3])));
    expect_err(a.matmul(&b), &["matmul", "[2, 3]"]);
}

#[test]
fn add_of_shapes_that_do_not_broadcast() {
    let e = expect_err(
        zeros(&[2, 3]).add(&zeros(&[4, 3])),
        &["add", "[2, 3]", "[4, 3]", "broadcast"],
    );
    assert!(matches!(e, Error::Shape { .. }));
    expect_err(zeros(&[3]).mul(&zeros(&[2])), &["mul", "[3]", "[2]"]);
    let (a, b) = (Var::param(zeros(&[2, 3])), Var::constant(zeros(&[3, 2])));
    expect_err(a.sub(&b), &["sub", "[2, 3]", "[3, 2]"]);
    expect_err(
        zeros(&[2, 3]).broadcast_as(&[4, 3]),
        &["broadcast_as", "[2, 3]", "[4, 3]"],
    );
}

#[test]
fn cat_of_mismatched_shapes() {
    let (a, b) = (zeros(&[2, 3]), zeros(&[2, 4]));
    expect_err(
        Tensor::cat(&[&a, &b], 0),
        &["cat", "[2, 3]", "[2, 4]", "dim 0"],
    );
    expect_err(
        Tensor::cat(&[&a, &zeros(&[2, 3, 1])], 0),
        &["cat", "[2, 3, 1]"],
    );
    expect_err(Tensor::cat(&[&a, &a], 2), &["cat", "dim 2", "[2, 3]"]);
    expect_err(Tensor::cat(&[], 0), &["cat", "no tensors"]);
    let (va, vb) = (Var::param(a), Var::param(b));
    expect_err(Var::cat(&[&va, &vb], 0), &["cat", "[2, 3]", "[2, 4]"]);
    expect_err(
        Var::stack(&[&va, &vb], 0),
        &["cat", "[1, 2, 3]", "[1, 2, 4]"],
    );
}

#[test]
fn reshape_to_a_wrong_element_count() {
    let e = expect_err(
        zeros(&[2, 3]).reshape(&[4, 2]),
        &["reshape", "[2, 3]", "[4, 2]", "6"],
    );
    assert!(matches!(e, Error::Shape { op: "reshape", .. }));
    // A non-contiguous view too, and through autograd.
    let t = zeros(&[2, 3]).transpose(0, 1).unwrap();
    expect_err(t.reshape(&[5]), &["reshape", "[3, 2]", "[5]"]);
    expect_err(Var::param(t).reshape(&[7]), &["reshape", "[3, 2]", "[7]"]);
}

#[test]
fn narrow_out_of_range() {
    let x = zeros(&[2, 3]);
    expect_err(x.narrow(1, 2, 2), &["narrow", "2..4", "dim 1", "[2, 3]"]);
    expect_err(x.narrow(2, 0, 1), &["narrow", "dim 2", "[2, 3]"]);
    expect_err(Var::param(x).narrow(0, 1, 5), &["narrow", "1..6", "[2, 3]"]);
}

#[test]
fn permute_with_a_bad_permutation() {
    let x = zeros(&[2, 3, 4]);
    for bad in [&[0, 1][..], &[0, 1, 1], &[0, 1, 3], &[0, 1, 2, 3]] {
        expect_err(
            x.permute(bad),
            &["permute", &format!("{bad:?}"), "[2, 3, 4]", "permutation"],
        );
    }
    expect_err(
        Var::param(x.clone()).permute(&[2, 2, 0]),
        &["permute", "[2, 2, 0]"],
    );
    expect_err(x.transpose(0, 3), &["transpose", "[2, 3, 4]"]);
}

#[test]
fn index_select_with_bad_indices() {
    let table = zeros(&[4, 3]);
    // Out of range, and negative.
    expect_err(
        table.index_select(0, &ids(&[1, 4])),
        &["index_select", "index 4", "size 4"],
    );
    expect_err(table.index_select(0, &ids(&[-1])), &["index_select", "-1"]);
    // Indices of another dtype.
    let e = expect_err(
        table.index_select(0, &zeros(&[2])),
        &["index_select", "f32", "i64"],
    );
    assert!(matches!(e, Error::DType { .. }));
    let u8_index = Tensor::from_vec(vec![0u8, 1], &[2]).unwrap();
    expect_err(
        table.index_select(1, &u8_index),
        &["index_select", "u8", "i64"],
    );
    // A bad dim, and a 2-D index.
    expect_err(
        table.index_select(2, &ids(&[0])),
        &["index_select", "dim 2", "[4, 3]"],
    );
    let ids2 = Tensor::from_vec(vec![0i64, 1], &[1, 2]).unwrap();
    expect_err(
        table.index_select(0, &ids2),
        &["index_select", "1-D", "[1, 2]"],
    );
    // Through autograd: index_select and embedding.
    let w = Var::param(table);
    expect_err(w.index_select(0, &ids(&[9])), &["index_select", "index 9"]);
    expect_err(w.embedding(&ids(&[0, 7])), &["index_select", "index 7"]);
    let far = Tensor::from_vec(vec![5i64], &[1, 1]).unwrap();
    expect_err(w.gather(1, &far), &["gather", "index 5", "size 3"]);
}

#[test]
fn integer_tensors_where_floats_are_needed() {
    let bytes = Tensor::from_vec(vec![1u8, 2, 3, 4], &[2, 2]).unwrap();
    let labels = Tensor::from_vec(vec![1i64, 2, 3, 4], &[2, 2]).unwrap();
    for (t, name) in [(&bytes, "u8"), (&labels, "i64")] {
        let e = expect_err(t.exp(), &["exp", name, "f32 or f64"]);
        assert!(matches!(e, Error::DType { .. }));
        expect_err(t.tanh(), &["tanh", name]);
        expect_err(t.add(t), &["add", name]);
        expect_err(t.matmul(t), &["matmul", name]);
        expect_err(t.sum(&[0], false), &["sum", name]);
        expect_err(t.mul_scalar(2.0), &["mul_scalar", name]);
        expect_err(Var::constant(t.clone()).tanh(), &["tanh", name]);
    }
    // Casting first makes them work.
    assert!(bytes.to_dtype(DType::F32).unwrap().exp().is_ok());
}

#[test]
fn mixing_f32_and_f64() {
    let a = zeros(&[2, 2]);
    let b = Tensor::zeros(&[2, 2], DType::F64, Device::Cpu).unwrap();
    for (result, op) in [
        (a.add(&b), "add"),
        (a.mul(&b), "mul"),
        (a.matmul(&b), "matmul"),
        (Tensor::cat(&[&a, &b], 0), "cat"),
    ] {
        let e = expect_err(result, &[op, "f32", "f64"]);
        assert!(matches!(e, Error::DType { .. }), "{e}");
    }
    let (va, vb) = (Var::param(a), Var::param(b));
    expect_err(va.add(&vb), &["add", "f32", "f64"]);
    expect_err(va.matmul(&vb), &["matmul", "f32", "f64"]);
}

#[test]
fn backward_of_a_non_scalar() {
    let x = Var::param(zeros(&[2, 3]));
    let y = x.tanh().unwrap();
    let e = expect_err(y.backward(), &["backward", "one element", "[2, 3]"]);
    assert!(matches!(e, Error::Shape { op: "backward", .. }));
    // The failed call did not consume the graph: the scalar of it still differentiates.
    assert!(y.sum_all().unwrap().backward().is_ok());
    // A loss that depends on no trainable Var.
    let c = Var::constant(zeros(&[1]));
    expect_err(
        c.sum_all().unwrap().backward(),
        &["backward", "requires a gradient"],
    );
}

#[test]
fn second_backward_through_a_freed_graph() {
    let w = Var::param(Tensor::from_vec(vec![1f64, 2., 3.], &[3]).unwrap());
    let h = w.square().unwrap();
    let loss = h.sum_all().unwrap();
    loss.backward().unwrap();
    expect_err(
        loss.backward(),
        &["backward", "freed", "Sum", "forward again"],
    );
    let mut grads = Grads::default();
    expect_err(loss.backward_into(&mut grads), &["backward", "freed"]);
    // A new loss built on a freed intermediate is refused as well, naming the freed op.
    let again = h.mul_scalar(2.0).unwrap().sum_all().unwrap();
    expect_err(again.backward(), &["backward", "freed", "Square"]);
    // A fresh forward from the parameter works.
    let fresh = w.square().unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(
        fresh.get(&w).unwrap().to_vec::<f64>().unwrap(),
        vec![2., 4., 6.]
    );
}
