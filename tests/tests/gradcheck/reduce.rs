use autograd::{Op, Var};

use super::common::{case, randn, Case};

pub fn cases(op: Op) -> Vec<Case> {
    match op {
        Op::Sum => vec![
            case(
                "sum dims [0, 2] of [3, 4, 2]",
                vec![randn(&[3, 4, 2], 1)],
                |v| v[0].sum(&[0, 2], false),
            ),
            case(
                "sum dim 1 keepdim of permuted",
                vec![randn(&[3, 4, 2], 2)],
                |v| v[0].permute(&[2, 0, 1])?.sum(&[1], true),
            ),
            case("sum_all", vec![randn(&[5], 3)], |v| v[0].sum_all()),
        ],
        Op::Mean => vec![case(
            "mean dim 1 of [4, 6]^T",
            vec![randn(&[4, 6], 4)],
            |v| v[0].transpose(0, 1)?.mean(&[1], false),
        )],
        Op::Max => vec![
            case("max dim 1", vec![randn(&[3, 5], 5)], |v| {
                v[0].max(&[1], false)
            }),
            case(
                "max dims [0, 1] keepdim of narrowed",
                vec![randn(&[4, 6, 2], 6)],
                |v| v[0].narrow(1, 2, 3)?.max(&[0, 1], true),
            ),
        ],
        Op::Min => vec![case("min dim 0", vec![randn(&[4, 3], 7)], |v| {
            v[0].min(&[0], false)
        })],
        Op::Var => vec![
            case("var unbiased dim 1", vec![randn(&[3, 6], 8)], |v| {
                v[0].var(&[1], false, true)
            }),
            case(
                "var biased dims [0, 2] keepdim",
                vec![randn(&[2, 3, 4], 9)],
                |v| v[0].var(&[0, 2], true, false),
            ),
        ],
        Op::Matmul => vec![
            case(
                "matmul [3, 4] x [4, 5]",
                vec![randn(&[3, 4], 1), randn(&[4, 5], 2)],
                |v| v[0].matmul(&v[1]),
            ),
            case(
                "matmul batch broadcast [2, 1, 3, 4] x [3, 4, 2]",
                vec![randn(&[2, 1, 3, 4], 3), randn(&[3, 4, 2], 4)],
                |v| v[0].matmul(&v[1]),
            ),
            case(
                "matmul transposed operands [4, 3]^T x [5, 4]^T",
                vec![randn(&[4, 3], 5), randn(&[5, 4], 6)],
                |v| v[0].transpose(0, 1)?.matmul(&v[1].transpose(0, 1)?),
            ),
            case(
                "matmul Linear-shaped [2, 3, 4] x [4, 5] (batch dims fold into one GEMM)",
                vec![randn(&[2, 3, 4], 9), randn(&[4, 5], 10)],
                |v| v[0].matmul(&v[1]),
            ),
            case(
                "matmul of a permuted lhs [3, 2, 4] x [4, 5] (rows not foldable)",
                vec![randn(&[2, 3, 4], 11), randn(&[4, 5], 12)],
                |v| v[0].transpose(0, 1)?.matmul(&v[1]),
            ),
            case("matmul frozen rhs", vec![randn(&[2, 3], 7)], |v| {
                let w = Var::constant(randn(&[3, 2], 8));
                v[0].matmul(&w)
            }),
        ],
        _ => vec![],
    }
}
