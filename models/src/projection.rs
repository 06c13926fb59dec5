//! DeMe's channel-wise projections ("Decouple-Then-Merge", CVPR 2025): a bias-free map C -> C
//! on a block's output, initialised to the identity, that trains with the model.
//!
//! A model applies the projection of a block where its store holds one (see [`project`]): the
//! reference checkpoints, and a run's frozen teacher, have none, and [`add_projections`] adds
//! identity ones, with which the model computes exactly what it computed without them. A model
//! names its projection points (`Dit::projections`, `UNet2DModel::projections`).

use autograd::Var;
use tensor::{Conv2dParams, Error, Result, Tensor};

use crate::nn::Linear;
use crate::params::{join, ParamStore};

/// The projection on the output of the block `prefix`: `<prefix>.projection.weight`.
pub fn projection_name(prefix: &str) -> String {
    join(prefix, "projection.weight")
}

/// A place a model can project: the weight's name and its shape, `[C, C, 1, 1]` (a 1x1
/// convolution on `[N, C, H, W]`) or `[D, D]` (a linear map of `[N, T, D]`'s last axis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionPoint {
    /// `<block>.projection.weight`.
    pub name: String,
    /// `[C, C, 1, 1]` or `[D, D]`.
    pub shape: Vec<usize>,
}

/// `x` through the projection of the block `prefix` when the store holds one (LoRA factors on
/// it included), else `x` unchanged.
pub fn project(ps: &ParamStore, prefix: &str, x: &Var) -> Result<Var> {
    let name = projection_name(prefix);
    if !ps.contains(&name) {
        return Ok(x.clone());
    }
    if x.shape().len() == 4 {
        x.conv2d(&ps.weight(&name)?, None, &Conv2dParams::default())
    } else {
        Linear::existing(&join(prefix, "projection"), false).forward(ps, x)
    }
}

/// Adds an identity projection at each of `points` the store lacks (trainable), and returns the
/// names it added.
pub fn add_projections(ps: &mut ParamStore, points: &[ProjectionPoint]) -> Result<Vec<String>> {
    let mut added = Vec::new();
    for point in points {
        if ps.contains(&point.name) {
            continue;
        }
        let c = point.shape[0];
        if point.shape.get(1) != Some(&c) || point.shape[2..].iter().any(|&k| k != 1) {
            return Err(Error::msg(format!(
                "projection `{}`: shape {:?} is not [C, C] or [C, C, 1, 1]",
                point.name, point.shape
            )));
        }
        let eye: Vec<f64> = (0..c * c)
            .map(|i| if i / c == i % c { 1.0 } else { 0.0 })
            .collect();
        ps.insert(&point.name, Tensor::from_vec(eye, &point.shape)?)?;
        added.push(point.name.clone());
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::{DType, Device, Generator};

    #[test]
    fn identity_projections_change_nothing_and_then_mix_channels() {
        let mut ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        let mut gen = Generator::new(1);
        let points = [
            ProjectionPoint {
                name: projection_name("conv"),
                shape: vec![3, 3, 1, 1],
            },
            ProjectionPoint {
                name: projection_name("tokens"),
                shape: vec![4, 4],
            },
        ];
        let image = Var::constant(
            Tensor::randn(&[2, 3, 2, 2], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap(),
        );
        let tokens = Var::constant(
            Tensor::randn(&[2, 5, 4], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap(),
        );
        // Without a projection in the store, nothing happens.
        let same = project(&ps, "conv", &image).unwrap();
        assert_eq!(
            same.value().to_vec::<f32>().unwrap(),
            image.value().to_vec::<f32>().unwrap()
        );
        assert_eq!(add_projections(&mut ps, &points).unwrap().len(), 2);
        assert!(
            add_projections(&mut ps, &points).unwrap().is_empty(),
            "added twice"
        );
        for (prefix, x) in [("conv", &image), ("tokens", &tokens)] {
            let y = project(&ps, prefix, x).unwrap();
            assert_eq!(
                y.value().to_vec::<f32>().unwrap(),
                x.value().to_vec::<f32>().unwrap()
            );
        }
        // A channel swap on the image: output channel 0 reads input channel 1.
        let mut swap = vec![0.0f64; 9];
        for (o, i) in [(0, 1), (1, 0), (2, 2)] {
            swap[o * 3 + i] = 1.0;
        }
        ps.set(
            &points[0].name,
            Tensor::from_vec(swap, &[3, 3, 1, 1])
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap(),
        )
        .unwrap();
        let y = project(&ps, "conv", &image)
            .unwrap()
            .value()
            .to_vec::<f32>()
            .unwrap();
        let x = image.value().to_vec::<f32>().unwrap();
        assert_eq!(&y[0..4], &x[4..8]);
        assert_eq!(&y[4..8], &x[0..4]);
        let bad = ProjectionPoint {
            name: projection_name("bad"),
            shape: vec![3, 4],
        };
        assert!(add_projections(&mut ps, &[bad]).is_err());
    }

    /// Both models compute exactly what they computed before identity projections were added,
    /// and a changed projection changes the output.
    #[test]
    fn models_with_identity_projections_are_the_models_without() {
        use crate::dit::{Dit, DitConfig};
        use crate::unet::UNet2DModel;
        let mut gen = Generator::new(3);
        let x = Var::constant(
            Tensor::randn(&[2, 1, 8, 8], 0.0, 1.0, DType::F32, Device::Cpu, &mut gen).unwrap(),
        );
        let t = Tensor::from_vec(vec![10i64, 700], &[2]).unwrap();
        let y = Tensor::from_vec(vec![1i64, 0], &[2]).unwrap();

        let mut unet_ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        let unet = UNet2DModel::from_json(
            &mut unet_ps,
            r#"{"sample_size": 8, "in_channels": 1, "out_channels": 1,
                "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
                "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
                "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8}"#,
        )
        .unwrap();
        let dit_cfg = DitConfig {
            input_size: 8,
            in_channels: 1,
            hidden_size: 16,
            depth: 2,
            num_heads: 2,
            num_classes: 2,
            ..DitConfig::named("DiT-S/2").unwrap()
        };
        let mut dit_ps = ParamStore::new(DType::F32, Device::Cpu, 0);
        let dit = Dit::new(&mut dit_ps, dit_cfg).unwrap();
        // DiT starts with zero adaLN and output layers: draw every weight, so every block acts.
        let names: Vec<String> = dit_ps.names().map(str::to_string).collect();
        for name in names {
            let shape = dit_ps.tensor(&name).unwrap().shape().to_vec();
            let w = Tensor::randn(&shape, 0.0, 0.2, DType::F32, Device::Cpu, &mut gen).unwrap();
            dit_ps.set(&name, w).unwrap();
        }
        let unet_out = |ps: &ParamStore| {
            unet.forward(ps, &x, &t, None)
                .unwrap()
                .value()
                .to_vec::<f32>()
                .unwrap()
        };
        let dit_out = |ps: &ParamStore| {
            dit.forward(ps, &x, &t, &y, None)
                .unwrap()
                .value()
                .to_vec::<f32>()
                .unwrap()
        };
        let before = (unet_out(&unet_ps), dit_out(&dit_ps));
        let points = unet.projections();
        let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "down_blocks.0.projection.weight",
                "down_blocks.1.projection.weight",
                "mid_block.projection.weight",
                "up_blocks.0.projection.weight",
                "up_blocks.1.projection.weight"
            ]
        );
        assert_eq!(points[3].shape, [16, 16, 1, 1]);
        assert_eq!(add_projections(&mut unet_ps, &points).unwrap().len(), 5);
        assert_eq!(
            add_projections(&mut dit_ps, &dit.projections())
                .unwrap()
                .len(),
            2
        );
        assert_eq!((unet_out(&unet_ps), dit_out(&dit_ps)), before);

        for (ps, name) in [
            (&mut unet_ps, "mid_block.projection.weight"),
            (&mut dit_ps, "blocks.0.projection.weight"),
        ] {
            let w = ps.tensor(name).unwrap().mul_scalar(0.5).unwrap();
            ps.set(name, w).unwrap();
        }
        assert_ne!(unet_out(&unet_ps), before.0);
        assert_ne!(dit_out(&dit_ps), before.1);
    }
}
