use autograd::{Op, Var};

use super::common::{case, ids, randn, Case};

pub fn cases(op: Op) -> Vec<Case> {
    match op {
        Op::Reshape => vec![
            case("reshape [2, 6] -> [3, 4]", vec![randn(&[2, 6], 1)], |v| {
                v[0].reshape(&[3, 4])?.exp()
            }),
            case(
                "reshape of transposed (copies)",
                vec![randn(&[3, 4], 2)],
                |v| v[0].transpose(0, 1)?.reshape(&[2, 6])?.exp(),
            ),
        ],
        Op::Permute => vec![case(
            "permute [2, 3, 4] -> [2, 0, 1]",
            vec![randn(&[2, 3, 4], 3)],
            |v| v[0].permute(&[2, 0, 1])?.tanh(),
        )],
        Op::Transpose => vec![case("transpose 0, 2", vec![randn(&[2, 3, 4], 4)], |v| {
            v[0].transpose(0, 2)?.sigmoid()
        })],
        Op::Narrow => vec![case(
            "narrow dim 1 [1..3] of [3, 5, 2]",
            vec![randn(&[3, 5, 2], 5)],
            |v| v[0].narrow(1, 1, 2)?.square(),
        )],
        Op::BroadcastAs => vec![case(
            "broadcast [3, 1] -> [2, 3, 4]",
            vec![randn(&[3, 1], 6)],
            |v| {
                v[0].broadcast_as(&[2, 3, 4])?
                    .mul(&Var::constant(randn(&[2, 3, 4], 60)))
            },
        )],
        Op::Squeeze => vec![case("squeeze dim 1", vec![randn(&[3, 1, 2], 7)], |v| {
            v[0].squeeze(1)?.exp()
        })],
        Op::Unsqueeze => vec![case(
            "unsqueeze dim 0 of permuted",
            vec![randn(&[3, 2], 8)],
            |v| v[0].transpose(0, 1)?.unsqueeze(0)?.exp(),
        )],
        Op::Contiguous => vec![case(
            "contiguous of permuted",
            vec![randn(&[3, 4], 9)],
            |v| v[0].transpose(0, 1)?.contiguous(),
        )],
        Op::Cat => vec![case(
            "cat dim 1 of [2, 3], [2, 1], [3, 2]^T",
            vec![randn(&[2, 3], 1), randn(&[2, 1], 2), randn(&[3, 2], 3)],
            |v| Var::cat(&[&v[0], &v[1], &v[2].transpose(0, 1)?], 1),
        )],
        Op::Stack => vec![case(
            "stack dim 1",
            vec![randn(&[2, 3], 4), randn(&[2, 3], 5)],
            |v| Var::stack(&[&v[0], &v[1]], 1),
        )],
        Op::Chunk => vec![case(
            "chunk 3 of dim 0 size 7",
            vec![randn(&[7, 2], 6)],
            |v| {
                let parts = v[0].chunk(3, 0)?;
                parts[0].sum_all()?.mul(&parts[2].square()?.sum_all()?)
            },
        )],
        Op::Split => vec![case(
            "split size 2 of dim 1",
            vec![randn(&[2, 5], 7)],
            |v| {
                let parts = v[0].split(2, 1)?;
                Var::cat(&[&parts[2], &parts[0].exp()?], 1)
            },
        )],
        Op::IndexSelect => vec![case(
            "index_select dim 1 with repeats",
            vec![randn(&[3, 4, 2], 8)],
            |v| v[0].index_select(1, &ids(&[3, 0, 3, 1], &[4])),
        )],
        Op::Embedding => vec![case(
            "embedding [5, 3] with ids [2, 2]",
            vec![randn(&[5, 3], 9)],
            |v| v[0].embedding(&ids(&[4, 0, 4, 2], &[2, 2])),
        )],
        Op::Gather => vec![case("gather dim 1", vec![randn(&[3, 4], 10)], |v| {
            v[0].gather(1, &ids(&[0, 3, 1, 1, 2, 2], &[3, 2]))
        })],
        Op::Pad => vec![case(
            "pad H and W of NCHW, narrowed input",
            vec![randn(&[1, 2, 3, 5], 11)],
            |v| v[0].narrow(3, 1, 3)?.pad(&[(1, 2), (0, 1)], 0.5)?.square(),
        )],
        _ => vec![],
    }
}
