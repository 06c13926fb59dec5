//! The Inception-v3 of FID, as pytorch-fid computes it (`pytorch_fid.inception.InceptionV3` with
//! `use_fid_inception=True`, `resize_input=True`, `normalize_input=True`): the network of
//! TensorFlow's original FID code, whose 2048-d pool3 features are compared by the Fréchet
//! distance. Inference only, f32, on [`tensor::Tensor`] ops (no autograd), with each BatchNorm
//! folded into its convolution at load time.
//!
//! ```text
//! images [N, 1|3, H, W] in [0, 1]  (1 channel: repeated to RGB)
//!   -> bilinear resize to 299x299 (align_corners = false) -> 2x - 1
//!   -> Conv2d_1a_3x3 (s2) -> Conv2d_2a_3x3 -> Conv2d_2b_3x3 (p1) -> max-pool 3/2   block 0:   64 ch
//!   -> Conv2d_3b_1x1 -> Conv2d_4a_3x3 -> max-pool 3/2                                block 1:  192 ch
//!   -> Mixed_5b/5c/5d (A) -> Mixed_6a (B) -> Mixed_6b/6c/6d/6e (C)                   block 2:  768 ch
//!   -> Mixed_7a (D) -> Mixed_7b (E, avg-pool branch) -> Mixed_7c (E, max-pool branch)
//!   -> global average pool                                                          block 3: 2048 ch
//! ```
//!
//! Every convolution is pytorch-fid's `BasicConv2d`: a bias-free convolution, a BatchNorm with
//! `eps = 0.001` and a ReLU. The FID blocks differ from torchvision's Inception-v3 in their pool
//! branches: blocks A, C and the first E average over 3x3 windows without counting the padding
//! (`count_include_pad = False`), the last E takes a 3x3 max-pool instead.
//!
//! # The FID weights
//!
//! pytorch-fid's weights, `pt_inception-2015-12-05-6726825d.pth` (downloaded by pytorch-fid from
//! its GitHub release `fid_weights`, or from the URL in `pytorch_fid/inception.py`), are a plain
//! PyTorch state dict; convert it once with the repository's converter (needs torch):
//!
//! ```text
//! python3 tools/convert_pt.py pt_inception-2015-12-05-6726825d.pth pt_inception-2015-12-05.safetensors
//! ```
//!
//! and load the result:
//!
//! ```no_run
//! use models::inception::InceptionV3;
//! use tensor::{DType, Device, Tensor};
//! let net = InceptionV3::load("pt_inception-2015-12-05.safetensors")?;
//! let images = Tensor::zeros(&[4, 3, 32, 32], DType::F32, Device::Cpu)?; // in [0, 1]
//! let features = net.features(&images)?; // [4, 2048], f32
//! # Ok::<(), tensor::Error>(())
//! ```
//!
//! Names are those of the state dict (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_var`,
//! ...). `fc.*`, `*.num_batches_tracked` and any other extra tensor are ignored, but a `fc.weight`
//! of another shape than `[1008, 2048]` is refused: that is torchvision's ImageNet Inception-v3,
//! whose features are not FID's.
//!
//! # Portable random weights
//!
//! [`portable_weight`] generates deterministic weights from the parameter names alone, identically
//! here and in `tools/make_inception_fixture.py` (numpy), so the parity fixture needs no 95 MB of
//! weights: per tensor, seed = FNV-1a 64 of the name; value `i` (row-major) is the splitmix64
//! finaliser of `seed + (i + 1) · 0x9E3779B97F4A7C15`, mapped to `x = 2 · (z >> 11) · 2⁻⁵³ - 1` in
//! `[-1, 1)`, then by name suffix: `conv.weight` `x · √(6 / fan_in)`, `bn.weight` `1 + 0.1 x`,
//! `bn.bias` and `bn.running_mean` `0.1 x`, `bn.running_var` `1 + 0.5 x`, in f64 rounded to f32.

use std::path::Path;

use tensor::safetensors::SafeTensorsFile;
use tensor::{Conv2dParams, DType, Device, Error, Result, Tensor};

/// Length of the pool3 feature vector.
pub const FEATURE_DIM: usize = 2048;

/// Height and width the images are resized to.
pub const INPUT_SIZE: usize = 299;

/// Channels of the outputs of pytorch-fid's four blocks (its `BLOCK_INDEX_BY_DIM`).
pub const BLOCK_CHANNELS: [usize; 4] = [64, 192, 768, 2048];

/// The epsilon of every BatchNorm of the network.
const BN_EPS: f64 = 1e-3;

/// Images per pass through the network: bounds the activations' memory (about 40 MB per image).
const CHUNK: usize = 16;

/// The classifier shape of the FID weights (1008 classes); torchvision's has 1000.
const FID_FC_SHAPE: [usize; 2] = [1008, FEATURE_DIM];

/// Gives the f32 tensor of a parameter, checked against the expected shape.
type Source<'a> = dyn FnMut(&str, &[usize]) -> Result<Tensor> + 'a;

/// One `BasicConv2d` with its BatchNorm folded in: `relu(conv(x, weight) + bias)`.
#[derive(Debug)]
struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    params: Conv2dParams,
}

impl ConvBn {
    /// Reads `{name}.conv.weight` and `{name}.bn.*` from `src` and folds the BatchNorm:
    /// `s = γ / √(var + eps)`, weight `w · s`, bias `β - mean · s` (in f64, stored in f32).
    fn new(
        src: &mut Source,
        name: &str,
        (cin, cout): (usize, usize),
        kernel: (usize, usize),
        stride: usize,
        padding: (usize, usize),
    ) -> Result<ConvBn> {
        let w = src(
            &format!("{name}.conv.weight"),
            &[cout, cin, kernel.0, kernel.1],
        )?;
        let mut bn =
            |p: &str| -> Result<Vec<f64>> { src(&format!("{name}.bn.{p}"), &[cout])?.to_f64_vec() };
        let (gamma, beta) = (bn("weight")?, bn("bias")?);
        let (mean, var) = (bn("running_mean")?, bn("running_var")?);
        let scale: Vec<f64> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + BN_EPS).sqrt())
            .collect();
        let per_out = cin * kernel.0 * kernel.1;
        let weight: Vec<f32> = w
            .to_f64_vec()?
            .chunks(per_out)
            .zip(&scale)
            .flat_map(|(row, s)| row.iter().map(move |v| (v * s) as f32))
            .collect();
        let bias: Vec<f32> = (0..cout)
            .map(|c| (beta[c] - mean[c] * scale[c]) as f32)
            .collect();
        Ok(ConvBn {
            weight: Tensor::from_vec(weight, &[cout, cin, kernel.0, kernel.1])?,
            bias: Tensor::from_vec(bias, &[cout])?,
            params: Conv2dParams {
                stride: (stride, stride),
                padding,
                ..Default::default()
            },
        })
    }

    /// A square `k x k` convolution.
    fn square(
        src: &mut Source,
        name: &str,
        chans: (usize, usize),
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<ConvBn> {
        ConvBn::new(src, name, chans, (k, k), stride, (pad, pad))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d_bias(&self.weight, Some(&self.bias), &self.params)?
            .relu()
    }
}

/// Applies `convs` one after the other.
fn chain(x: &Tensor, convs: &[&ConvBn]) -> Result<Tensor> {
    convs.iter().try_fold(x.clone(), |h, c| c.forward(&h))
}

/// The 3x3, stride-1, padding-1 average pooling of the FID blocks, padding left out of the count.
fn fid_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.avg_pool2d_exclude_pad((3, 3), (1, 1), (1, 1))
}

/// The 3x3, stride-2 max-pooling that halves the grid.
fn max_pool_s2(x: &Tensor) -> Result<Tensor> {
    x.max_pool2d((3, 3), (2, 2), (0, 0))
}

/// `FIDInceptionA` (Mixed_5b/5c/5d): 1x1, 5x5 and double-3x3 branches and an average-pool branch.
#[derive(Debug)]
struct BlockA {
    b1x1: ConvBn,
    b5x5: [ConvBn; 2],
    b3x3dbl: [ConvBn; 3],
    pool: ConvBn,
}

impl BlockA {
    fn new(src: &mut Source, name: &str, cin: usize, pool_features: usize) -> Result<BlockA> {
        let n = |b: &str| format!("{name}.{b}");
        Ok(BlockA {
            b1x1: ConvBn::square(src, &n("branch1x1"), (cin, 64), 1, 1, 0)?,
            b5x5: [
                ConvBn::square(src, &n("branch5x5_1"), (cin, 48), 1, 1, 0)?,
                ConvBn::square(src, &n("branch5x5_2"), (48, 64), 5, 1, 2)?,
            ],
            b3x3dbl: [
                ConvBn::square(src, &n("branch3x3dbl_1"), (cin, 64), 1, 1, 0)?,
                ConvBn::square(src, &n("branch3x3dbl_2"), (64, 96), 3, 1, 1)?,
                ConvBn::square(src, &n("branch3x3dbl_3"), (96, 96), 3, 1, 1)?,
            ],
            pool: ConvBn::square(src, &n("branch_pool"), (cin, pool_features), 1, 1, 0)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [a, b] = &self.b5x5;
        let [c, d, e] = &self.b3x3dbl;
        Tensor::cat(
            &[
                &self.b1x1.forward(x)?,
                &chain(x, &[a, b])?,
                &chain(x, &[c, d, e])?,
                &self.pool.forward(&fid_avg_pool(x)?)?,
            ],
            1,
        )
    }
}

/// `InceptionB` (Mixed_6a): strided 3x3 and double-3x3 branches and a max-pool branch.
#[derive(Debug)]
struct BlockB {
    b3x3: ConvBn,
    b3x3dbl: [ConvBn; 3],
}

impl BlockB {
    fn new(src: &mut Source, name: &str, cin: usize) -> Result<BlockB> {
        let n = |b: &str| format!("{name}.{b}");
        Ok(BlockB {
            b3x3: ConvBn::square(src, &n("branch3x3"), (cin, 384), 3, 2, 0)?,
            b3x3dbl: [
                ConvBn::square(src, &n("branch3x3dbl_1"), (cin, 64), 1, 1, 0)?,
                ConvBn::square(src, &n("branch3x3dbl_2"), (64, 96), 3, 1, 1)?,
                ConvBn::square(src, &n("branch3x3dbl_3"), (96, 96), 3, 2, 0)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [a, b, c] = &self.b3x3dbl;
        Tensor::cat(
            &[
                &self.b3x3.forward(x)?,
                &chain(x, &[a, b, c])?,
                &max_pool_s2(x)?,
            ],
            1,
        )
    }
}

/// `FIDInceptionC` (Mixed_6b..6e): 1x1, factorised 7x7 and double-7x7 branches and an
/// average-pool branch.
#[derive(Debug)]
struct BlockC {
    b1x1: ConvBn,
    b7x7: [ConvBn; 3],
    b7x7dbl: [ConvBn; 5],
    pool: ConvBn,
}

impl BlockC {
    fn new(src: &mut Source, name: &str, cin: usize, c7: usize) -> Result<BlockC> {
        let n = |b: &str| format!("{name}.{b}");
        let (row, col) = (((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0)));
        let mut conv = |b: &str, chans, (k, s, p)| ConvBn::new(src, &n(b), chans, k, s, p);
        Ok(BlockC {
            b1x1: conv("branch1x1", (cin, 192), ((1, 1), 1, (0, 0)))?,
            b7x7: [
                conv("branch7x7_1", (cin, c7), ((1, 1), 1, (0, 0)))?,
                conv("branch7x7_2", (c7, c7), row)?,
                conv("branch7x7_3", (c7, 192), col)?,
            ],
            b7x7dbl: [
                conv("branch7x7dbl_1", (cin, c7), ((1, 1), 1, (0, 0)))?,
                conv("branch7x7dbl_2", (c7, c7), col)?,
                conv("branch7x7dbl_3", (c7, c7), row)?,
                conv("branch7x7dbl_4", (c7, c7), col)?,
                conv("branch7x7dbl_5", (c7, 192), row)?,
            ],
            pool: conv("branch_pool", (cin, 192), ((1, 1), 1, (0, 0)))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [a, b, c] = &self.b7x7;
        let [d, e, f, g, h] = &self.b7x7dbl;
        Tensor::cat(
            &[
                &self.b1x1.forward(x)?,
                &chain(x, &[a, b, c])?,
                &chain(x, &[d, e, f, g, h])?,
                &self.pool.forward(&fid_avg_pool(x)?)?,
            ],
            1,
        )
    }
}

/// `InceptionD` (Mixed_7a): strided 3x3 and 7x7-then-3x3 branches and a max-pool branch.
#[derive(Debug)]
struct BlockD {
    b3x3: [ConvBn; 2],
    b7x7x3: [ConvBn; 4],
}

impl BlockD {
    fn new(src: &mut Source, name: &str, cin: usize) -> Result<BlockD> {
        let n = |b: &str| format!("{name}.{b}");
        Ok(BlockD {
            b3x3: [
                ConvBn::square(src, &n("branch3x3_1"), (cin, 192), 1, 1, 0)?,
                ConvBn::square(src, &n("branch3x3_2"), (192, 320), 3, 2, 0)?,
            ],
            b7x7x3: [
                ConvBn::square(src, &n("branch7x7x3_1"), (cin, 192), 1, 1, 0)?,
                ConvBn::new(src, &n("branch7x7x3_2"), (192, 192), (1, 7), 1, (0, 3))?,
                ConvBn::new(src, &n("branch7x7x3_3"), (192, 192), (7, 1), 1, (3, 0))?,
                ConvBn::square(src, &n("branch7x7x3_4"), (192, 192), 3, 2, 0)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [a, b] = &self.b3x3;
        let [c, d, e, f] = &self.b7x7x3;
        Tensor::cat(
            &[
                &chain(x, &[a, b])?,
                &chain(x, &[c, d, e, f])?,
                &max_pool_s2(x)?,
            ],
            1,
        )
    }
}

/// `FIDInceptionE_1` (Mixed_7b, average-pool branch) and `FIDInceptionE_2` (Mixed_7c, max-pool
/// branch): 1x1, split-3x3 and double-split-3x3 branches and a pool branch.
#[derive(Debug)]
struct BlockE {
    b1x1: ConvBn,
    b3x3: [ConvBn; 3],
    b3x3dbl: [ConvBn; 4],
    pool: ConvBn,
    max_pool: bool,
}

impl BlockE {
    fn new(src: &mut Source, name: &str, cin: usize, max_pool: bool) -> Result<BlockE> {
        let n = |b: &str| format!("{name}.{b}");
        let (row, col) = (((1, 3), (0, 1)), ((3, 1), (1, 0)));
        let mut conv = |b: &str, chans, (k, p)| ConvBn::new(src, &n(b), chans, k, 1, p);
        Ok(BlockE {
            b1x1: conv("branch1x1", (cin, 320), ((1, 1), (0, 0)))?,
            b3x3: [
                conv("branch3x3_1", (cin, 384), ((1, 1), (0, 0)))?,
                conv("branch3x3_2a", (384, 384), row)?,
                conv("branch3x3_2b", (384, 384), col)?,
            ],
            b3x3dbl: [
                conv("branch3x3dbl_1", (cin, 448), ((1, 1), (0, 0)))?,
                conv("branch3x3dbl_2", (448, 384), ((3, 3), (1, 1)))?,
                conv("branch3x3dbl_3a", (384, 384), row)?,
                conv("branch3x3dbl_3b", (384, 384), col)?,
            ],
            pool: conv("branch_pool", (cin, 192), ((1, 1), (0, 0)))?,
            max_pool,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [s, s_a, s_b] = &self.b3x3;
        let [d1, d2, d_a, d_b] = &self.b3x3dbl;
        let split = s.forward(x)?;
        let dbl = d2.forward(&d1.forward(x)?)?;
        let pooled = if self.max_pool {
            x.max_pool2d((3, 3), (1, 1), (1, 1))?
        } else {
            fid_avg_pool(x)?
        };
        Tensor::cat(
            &[
                &self.b1x1.forward(x)?,
                &s_a.forward(&split)?,
                &s_b.forward(&split)?,
                &d_a.forward(&dbl)?,
                &d_b.forward(&dbl)?,
                &self.pool.forward(&pooled)?,
            ],
            1,
        )
    }
}

/// pytorch-fid's FID Inception-v3, with BatchNorms folded: see the [module docs](self).
#[derive(Debug)]
pub struct InceptionV3 {
    stem0: [ConvBn; 3],
    stem1: [ConvBn; 2],
    mixed_5: [BlockA; 3],
    mixed_6a: BlockB,
    mixed_6: [BlockC; 4],
    mixed_7a: BlockD,
    mixed_7: [BlockE; 2],
}

impl InceptionV3 {
    /// The network with the parameters of the safetensors file at `path`, under pytorch-fid's
    /// state-dict names (see the [module docs](self) for converting the FID weights). Float
    /// tensors of any dtype are accepted (computed in f32); a missing tensor, a mis-shaped or
    /// non-float one, or torchvision's 1000-class `fc.weight`, is an error naming it.
    pub fn load(path: impl AsRef<Path>) -> Result<InceptionV3> {
        let file = SafeTensorsFile::open(path.as_ref())?;
        let err = |msg: String| Error::Format {
            path: path.as_ref().to_path_buf(),
            msg: format!("Inception-v3 (FID) weights: {msg}"),
        };
        if file.contains("fc.weight") {
            let (_, shape) = file.info("fc.weight")?;
            if shape != FID_FC_SHAPE {
                return Err(err(format!(
                    "tensor `fc.weight` has shape {shape:?}, expected {FID_FC_SHAPE:?}: these are \
                     not the FID weights (torchvision's ImageNet Inception-v3 has 1000 classes); \
                     convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth"
                )));
            }
        }
        InceptionV3::from_source(&mut |name, shape| {
            if !file.contains(name) {
                return Err(err(format!(
                    "missing tensor `{name}` (expected shape {shape:?}; the file holds {} tensors)",
                    file.names().len()
                )));
            }
            let (dtype, found) = file.info(name)?;
            if found != shape {
                return Err(err(format!(
                    "tensor `{name}` has shape {found:?}, expected {shape:?}"
                )));
            }
            if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
                return Err(err(format!(
                    "tensor `{name}` {shape:?} has dtype {dtype}, expected a float dtype"
                )));
            }
            file.tensor(name)?.to_dtype(DType::F32)
        })
    }

    /// The network with parameters from `get(name, expected_shape)`, for weights that are not in
    /// a file. Each returned tensor must have the expected shape and a float dtype.
    pub fn from_fn(mut get: impl FnMut(&str, &[usize]) -> Result<Tensor>) -> Result<InceptionV3> {
        InceptionV3::from_source(&mut |name, shape| {
            let t = get(name, shape)?;
            if t.shape() != shape {
                return Err(Error::shape(
                    "InceptionV3::from_fn",
                    format!(
                        "parameter `{name}` has shape {:?}, expected {shape:?}",
                        t.shape()
                    ),
                ));
            }
            t.to_dtype(DType::F32)
        })
    }

    /// The network on the deterministic weights of [`portable_weight`] (the parity fixture's).
    pub fn portable_random() -> Result<InceptionV3> {
        InceptionV3::from_fn(portable_weight)
    }

    /// The names and shapes of every parameter the network reads, in pytorch-fid's state-dict
    /// naming (the BatchNorm statistics included; `fc.*` and `num_batches_tracked` excluded).
    pub fn param_shapes() -> Vec<(String, Vec<usize>)> {
        let mut seen = Vec::new();
        // Zero tensors of the expected shapes fold without error.
        let _ = InceptionV3::from_source(&mut |name, shape| {
            seen.push((name.to_string(), shape.to_vec()));
            Tensor::zeros(shape, DType::F32, Device::Cpu)
        });
        seen
    }

    fn from_source(src: &mut Source) -> Result<InceptionV3> {
        let sq = ConvBn::square;
        Ok(InceptionV3 {
            stem0: [
                sq(src, "Conv2d_1a_3x3", (3, 32), 3, 2, 0)?,
                sq(src, "Conv2d_2a_3x3", (32, 32), 3, 1, 0)?,
                sq(src, "Conv2d_2b_3x3", (32, 64), 3, 1, 1)?,
            ],
            stem1: [
                sq(src, "Conv2d_3b_1x1", (64, 80), 1, 1, 0)?,
                sq(src, "Conv2d_4a_3x3", (80, 192), 3, 1, 0)?,
            ],
            mixed_5: [
                BlockA::new(src, "Mixed_5b", 192, 32)?,
                BlockA::new(src, "Mixed_5c", 256, 64)?,
                BlockA::new(src, "Mixed_5d", 288, 64)?,
            ],
            mixed_6a: BlockB::new(src, "Mixed_6a", 288)?,
            mixed_6: [
                BlockC::new(src, "Mixed_6b", 768, 128)?,
                BlockC::new(src, "Mixed_6c", 768, 160)?,
                BlockC::new(src, "Mixed_6d", 768, 160)?,
                BlockC::new(src, "Mixed_6e", 768, 192)?,
            ],
            mixed_7a: BlockD::new(src, "Mixed_7a", 768)?,
            mixed_7: [
                BlockE::new(src, "Mixed_7b", 1280, false)?,
                BlockE::new(src, "Mixed_7c", 2048, true)?,
            ],
        })
    }

    /// The 2048-d pool3 features of `images`, `[N, 2048]` in f32: what FID compares.
    ///
    /// `images` is `[N, C, H, W]` with values in **[0, 1]** (as pytorch-fid takes them; map
    /// images in [-1, 1] with `x · 0.5 + 0.5` first), `C` = 3 (RGB) or 1 (grayscale, repeated
    /// to RGB), any `H, W` (resized to 299x299), f32 or f64 (computed in f32). Large batches are
    /// run a few images at a time.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let n = images.dim("InceptionV3::features", 0)?;
        let pooled = self.forward_blocks(images, 3)?.pop();
        pooled
            .ok_or_else(|| Error::msg("InceptionV3::features: no output block"))?
            .reshape(&[n, FEATURE_DIM])
    }

    /// The outputs of pytorch-fid's blocks `0..=last` (`last` ≤ 3), as its
    /// `InceptionV3(output_blocks=...)` returns them: `[N, 64, 73, 73]` after the first
    /// max-pool, `[N, 192, 35, 35]` after the second, `[N, 768, 17, 17]` after Mixed_6e and
    /// `[N, 2048, 1, 1]` after the final average pool. `images` as in
    /// [`InceptionV3::features`].
    pub fn forward_blocks(&self, images: &Tensor, last: usize) -> Result<Vec<Tensor>> {
        const OP: &str = "InceptionV3::forward_blocks";
        if last > 3 {
            return Err(Error::msg(format!(
                "{OP}: block {last} does not exist (blocks 0 to 3)"
            )));
        }
        let x = preprocess(images)?;
        let n = x.shape()[0];
        if n == 0 {
            let sizes = [73, 35, 17, 1];
            return (0..=last)
                .map(|b| {
                    let (c, s) = (BLOCK_CHANNELS[b], sizes[b]);
                    Tensor::zeros(&[0, c, s, s], DType::F32, Device::Cpu)
                })
                .collect();
        }
        let mut outs: Vec<Vec<Tensor>> = vec![Vec::new(); last + 1];
        for start in (0..n).step_by(CHUNK) {
            let chunk = x.narrow(0, start, CHUNK.min(n - start))?;
            for (b, out) in self.run_blocks(&chunk, last)?.into_iter().enumerate() {
                outs[b].push(out);
            }
        }
        outs.iter()
            .map(|parts| Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0))
            .collect()
    }

    /// Blocks `0..=last` of a preprocessed `[n, 3, 299, 299]` batch in [-1, 1].
    fn run_blocks(&self, x: &Tensor, last: usize) -> Result<Vec<Tensor>> {
        let mut outs = Vec::with_capacity(last + 1);
        let [c1, c2, c3] = &self.stem0;
        outs.push(max_pool_s2(&chain(x, &[c1, c2, c3])?)?);
        if last >= 1 {
            let [c4, c5] = &self.stem1;
            outs.push(max_pool_s2(&chain(&outs[0], &[c4, c5])?)?);
        }
        if last >= 2 {
            let mut h = outs[1].clone();
            for block in &self.mixed_5 {
                h = block.forward(&h)?;
            }
            h = self.mixed_6a.forward(&h)?;
            for block in &self.mixed_6 {
                h = block.forward(&h)?;
            }
            outs.push(h);
        }
        if last >= 3 {
            let mut h = self.mixed_7a.forward(&outs[2])?;
            for block in &self.mixed_7 {
                h = block.forward(&h)?;
            }
            outs.push(h.mean(&[2, 3], true)?);
        }
        Ok(outs)
    }
}

/// Checks `images`, makes them f32 RGB, resizes them to 299x299 and maps [0, 1] to [-1, 1].
fn preprocess(images: &Tensor) -> Result<Tensor> {
    const OP: &str = "InceptionV3::features";
    let shape = images.shape();
    let &[n, c, h, w] = shape else {
        return Err(Error::shape(
            OP,
            format!("images {shape:?}: expected [N, C, H, W] with C = 1 or 3"),
        ));
    };
    if c != 1 && c != 3 {
        return Err(Error::shape(
            OP,
            format!("images {shape:?}: expected 1 (grayscale) or 3 (RGB) channels, got {c}"),
        ));
    }
    if h == 0 || w == 0 {
        return Err(Error::shape(OP, format!("images {shape:?} are empty")));
    }
    if !matches!(images.dtype(), DType::F32 | DType::F64) {
        return Err(Error::dtype(
            OP,
            images.dtype(),
            "f32 or f64 images in [0, 1] (cast u8 images and divide by 255)",
        ));
    }
    let x = images.to_dtype(DType::F32)?;
    let x = if c == 1 {
        x.broadcast_as(&[n, 3, h, w])?
    } else {
        x
    };
    let x = if (h, w) == (INPUT_SIZE, INPUT_SIZE) {
        x.contiguous()?
    } else {
        x.resize_bilinear2d(INPUT_SIZE, INPUT_SIZE)?
    };
    x.mul_scalar(2.0)?.add_scalar(-1.0)
}

/// FNV-1a, 64 bits, of `bytes`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The splitmix64 finaliser.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `i`-th uniform value in [-1, 1) of the stream of a tensor seeded with `seed` (exact f64).
fn portable_uniform(seed: u64, i: u64) -> f64 {
    let z = splitmix64(seed.wrapping_add((i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    2.0 * ((z >> 11) as f64 * (-53f64).exp2()) - 1.0
}

/// The deterministic f32 value of parameter `name` with `shape`, identical to
/// `portable_weight` of `tools/make_inception_fixture.py` (see the [module docs](self) for the
/// rule). Convolution weights are `[Cout, Cin, kh, kw]`; names of other kinds than
/// `*.conv.weight`, `*.bn.{weight,bias,running_mean,running_var}` and `fc.{weight,bias}` are an
/// error.
pub fn portable_weight(name: &str, shape: &[usize]) -> Result<Tensor> {
    let bad = || {
        Error::msg(format!(
            "portable_weight: no rule for parameter `{name}` with shape {shape:?}"
        ))
    };
    let x = |i: usize| portable_uniform(fnv1a64(name.as_bytes()), i as u64);
    let (scale, offset) = if name.ends_with("conv.weight") {
        let &[_, cin, kh, kw] = shape else {
            return Err(bad());
        };
        ((6.0 / (cin * kh * kw) as f64).sqrt(), 0.0)
    } else if name.ends_with("bn.weight") {
        (0.1, 1.0)
    } else if name.ends_with("bn.bias") || name.ends_with("bn.running_mean") || name == "fc.bias" {
        (0.1, 0.0)
    } else if name.ends_with("bn.running_var") {
        (0.5, 1.0)
    } else if name == "fc.weight" {
        let &[_, fan_in] = shape else {
            return Err(bad());
        };
        ((3.0 / fan_in as f64).sqrt(), 0.0)
    } else {
        return Err(bad());
    };
    let n: usize = shape.iter().product();
    // `offset + scale · x`: with offset 0 this is exactly the numpy `x * scale`.
    let values: Vec<f32> = (0..n)
        .map(|i| {
            let v = scale * x(i);
            (if offset == 0.0 { v } else { offset + v }) as f32
        })
        .collect();
    Tensor::from_vec(values, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_and_splitmix64_match_their_reference_values() {
        // FNV-1a test vectors (Fowler/Noll/Vo) and splitmix64's first output for seed 0.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn portable_values_are_in_range_and_shaped_by_kind() {
        let w = portable_weight("a.conv.weight", &[4, 3, 3, 3]).unwrap();
        let bound = (6.0f64 / 27.0).sqrt();
        assert!(w.to_f64_vec().unwrap().iter().all(|v| v.abs() <= bound));
        let var = portable_weight("a.bn.running_var", &[100]).unwrap();
        assert!(var
            .to_f64_vec()
            .unwrap()
            .iter()
            .all(|v| (0.5..1.5).contains(v)));
        let e = portable_weight("a.conv.bias", &[4])
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.conv.bias"), "{e}");
    }

    #[test]
    fn param_shapes_lists_every_basic_conv() {
        let shapes = InceptionV3::param_shapes();
        // 94 BasicConv2d layers, 5 tensors each.
        assert_eq!(shapes.len(), 94 * 5);
        assert_eq!(
            shapes[0],
            ("Conv2d_1a_3x3.conv.weight".to_string(), vec![32, 3, 3, 3])
        );
        let count: usize = shapes
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        // pytorch-fid's FID Inception without fc: 21,751,136 conv weights + 4 x 17,216 BN values.
        assert_eq!(count, 21_751_136 + 68_864);
    }
}
