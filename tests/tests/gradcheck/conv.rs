use autograd::Op;
use tensor::Conv2dParams;

use super::common::{case, randn, Case};

fn params(stride: usize, padding: usize, dilation: usize, groups: usize) -> Conv2dParams {
    Conv2dParams {
        stride: (stride, stride),
        padding: (padding, padding),
        dilation: (dilation, dilation),
        groups,
    }
}

fn conv_cases() -> Vec<Case> {
    vec![
        case(
            "3x3 stride 2 padding 1",
            vec![randn(&[2, 3, 7, 6], 1), randn(&[4, 3, 3, 3], 2)],
            |v| v[0].conv2d(&v[1], None, &params(2, 1, 1, 1)),
        ),
        case(
            "2x3 kernel dilation 2 padding 2",
            vec![randn(&[1, 2, 8, 7], 3), randn(&[3, 2, 2, 3], 4)],
            |v| v[0].conv2d(&v[1], None, &params(1, 2, 2, 1)),
        ),
        case(
            "groups 2 with bias",
            vec![
                randn(&[2, 4, 5, 5], 5),
                randn(&[6, 2, 3, 3], 6),
                randn(&[6], 7),
            ],
            |v| v[0].conv2d(&v[1], Some(&v[2]), &params(1, 1, 1, 2)),
        ),
        case(
            "1x1 pointwise with bias",
            vec![
                randn(&[2, 3, 4, 5], 8),
                randn(&[5, 3, 1, 1], 9),
                randn(&[5], 10),
            ],
            |v| v[0].conv2d(&v[1], Some(&v[2]), &Conv2dParams::default()),
        ),
        case(
            "1x1 stride 2",
            vec![randn(&[1, 2, 5, 5], 11), randn(&[3, 2, 1, 1], 12)],
            |v| v[0].conv2d(&v[1], None, &params(2, 0, 1, 1)),
        ),
        case(
            "NHWC input permuted to NCHW, stride (2, 1), padding (1, 0)",
            vec![randn(&[2, 5, 6, 3], 13), randn(&[2, 3, 3, 2], 14)],
            |v| {
                let p = Conv2dParams {
                    stride: (2, 1),
                    padding: (1, 0),
                    ..Default::default()
                };
                v[0].permute(&[0, 3, 1, 2])?.conv2d(&v[1], None, &p)
            },
        ),
    ]
}

pub fn cases(op: Op) -> Vec<Case> {
    match op {
        Op::Conv2d => conv_cases(),
        Op::UpsampleNearest2d => vec![
            case("upsample 2x2", vec![randn(&[2, 3, 3, 4], 20)], |v| {
                v[0].upsample_nearest2d(2, 2)
            }),
            case(
                "upsample (3, 1) of permuted",
                vec![randn(&[1, 2, 4, 3], 21)],
                |v| v[0].transpose(2, 3)?.upsample_nearest2d(3, 1),
            ),
        ],
        Op::AvgPool2d => vec![
            case(
                "avg_pool 2x2 stride 2",
                vec![randn(&[2, 3, 6, 5], 30)],
                |v| v[0].avg_pool2d((2, 2), (2, 2), (0, 0)),
            ),
            case(
                "avg_pool 3x3 stride 1 padding 1",
                vec![randn(&[1, 2, 5, 4], 31)],
                |v| v[0].avg_pool2d((3, 3), (1, 1), (1, 1)),
            ),
            case(
                "avg_pool 3x2 stride (2, 1) padding (1, 0) of permuted",
                vec![randn(&[1, 2, 5, 7], 32)],
                |v| v[0].transpose(2, 3)?.avg_pool2d((3, 2), (2, 1), (1, 0)),
            ),
        ],
        _ => vec![],
    }
}
