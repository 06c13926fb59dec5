use autograd::{Op, Var};
use tensor::{CmpOp, DType, Tensor};

use super::common::{case, here, randn, uniform, Case};

/// A unary op on a contiguous input, on a transposed one, and on a narrowed one.
fn unary(name: &str, lo: f64, hi: f64, f: fn(&Var) -> tensor::Result<Var>) -> Vec<Case> {
    vec![
        case(
            &format!("{name} [3, 5]"),
            vec![uniform(&[3, 5], lo, hi, 1)],
            move |v| f(&v[0]),
        ),
        case(
            &format!("{name} transposed [4, 3]^T"),
            vec![uniform(&[4, 3], lo, hi, 2)],
            move |v| f(&v[0].transpose(0, 1)?),
        ),
        case(
            &format!("{name} narrowed [2, 6, 3][:, 1..4]"),
            vec![uniform(&[2, 6, 3], lo, hi, 3)],
            move |v| f(&v[0].narrow(1, 1, 3)?),
        ),
    ]
}

/// A binary op with equal shapes, broadcasting shapes, and a permuted operand.
fn binary(name: &str, f: fn(&Var, &Var) -> tensor::Result<Var>, b_lo: f64) -> Vec<Case> {
    vec![
        case(
            &format!("{name} [2, 3]"),
            vec![randn(&[2, 3], 1), uniform(&[2, 3], b_lo, 2.0, 2)],
            move |v| f(&v[0], &v[1]),
        ),
        case(
            &format!("{name} broadcast [3, 1, 4] x [2, 4]"),
            vec![randn(&[3, 1, 4], 3), uniform(&[2, 4], b_lo, 2.0, 4)],
            move |v| f(&v[0], &v[1]),
        ),
        case(
            &format!("{name} broadcast scalar x permuted [4, 2]^T"),
            vec![uniform(&[], b_lo, 2.0, 5), randn(&[4, 2], 6)],
            move |v| f(&v[1].transpose(0, 1)?, &v[0]),
        ),
    ]
}

pub fn cases(op: Op) -> Vec<Case> {
    match op {
        Op::Add => binary("add", Var::add, -2.0),
        Op::Sub => binary("sub", Var::sub, -2.0),
        Op::Mul => binary("mul", Var::mul, -2.0),
        Op::Div => binary("div", Var::div, 0.5),
        Op::Neg => unary("neg", -2.0, 2.0, Var::neg),
        Op::AddScalar => unary("add_scalar", -2.0, 2.0, |x| x.add_scalar(0.7)),
        Op::MulScalar => unary("mul_scalar", -2.0, 2.0, |x| x.mul_scalar(-1.3)),
        Op::Exp => unary("exp", -2.0, 2.0, Var::exp),
        Op::Log => unary("log", 0.2, 3.0, Var::log),
        Op::Sqrt => unary("sqrt", 0.2, 3.0, Var::sqrt),
        Op::Rsqrt => unary("rsqrt", 0.2, 3.0, Var::rsqrt),
        Op::Powf => unary("powf", 0.2, 3.0, |x| x.powf(2.5)),
        // Away from the kinks at 0, where the derivative is not defined.
        Op::Abs => unary("abs", 0.1, 2.0, |x| x.neg()?.abs()),
        Op::Square => unary("square", -2.0, 2.0, Var::square),
        Op::Tanh => unary("tanh", -2.0, 2.0, Var::tanh),
        Op::Sigmoid => unary("sigmoid", -3.0, 3.0, Var::sigmoid),
        Op::Relu => {
            let mut c = unary("relu", 0.05, 2.0, Var::relu);
            c.push(case(
                "relu negative side",
                vec![uniform(&[6], -2.0, -0.05, 9)],
                |v| v[0].relu(),
            ));
            c
        }
        Op::Silu => unary("silu", -3.0, 3.0, Var::silu),
        Op::Gelu => unary("gelu", -3.0, 3.0, Var::gelu),
        Op::GeluTanh => unary("gelu_tanh", -3.0, 3.0, Var::gelu_tanh),
        Op::Clamp => vec![case(
            "clamp [-0.5, 0.5] of values around it",
            vec![randn(&[4, 4], 7)],
            |v| {
                // randn values are never within 1e-6 of the bounds here: no kink is crossed.
                v[0].clamp(-0.5, 0.5)
            },
        )],
        Op::Where => vec![case(
            "where broadcast mask [3, 1] over [3, 4] and [4]",
            vec![randn(&[3, 4], 1), randn(&[4], 2)],
            |v| {
                let mask = here(Tensor::from_vec(vec![1u8, 0, 1], &[3, 1])?);
                Var::where_cond(&mask, &v[0], &v[1])
            },
        )],
        Op::MaskedFill => vec![case(
            "masked_fill where x > 0",
            vec![randn(&[5, 3], 3)],
            |v| {
                let mask = v[0].value().cmp(
                    CmpOp::Gt,
                    &Tensor::zeros(&[], DType::F64, v[0].value().device())?,
                )?;
                v[0].masked_fill(&mask, -4.0)
            },
        )],
        Op::ToDtype => vec![case("to f32 and back", vec![randn(&[3, 3], 4)], |v| {
            v[0].to_dtype(DType::F32)?.square()?.to_dtype(DType::F64)
        })
        .with_loose_tolerance()],
        _ => vec![],
    }
}

trait Loose {
    fn with_loose_tolerance(self) -> Self;
}

impl Loose for Case {
    /// The f32 round trip loses digits; the check is that the gradient flows back at all.
    fn with_loose_tolerance(mut self) -> Self {
        self.opts = Some(autograd::check::CheckOptions {
            eps: 1e-3,
            atol: 1e-3,
            rtol: 1e-2,
            ..Default::default()
        });
        self
    }
}
