//! Direct convolution in f32 with explicit SIMD (AVX-512 or AVX2, chosen at run time): all three
//! passes are one register-blocked product over gathered inputs, with no column matrix.
//!
//! Every pass computes, for a list of rows `j` and output channels `c`,
//!
//! ```text
//! out[j][c] = Σ_k src[row[j] + term[k]] · panel[k][c]
//! ```
//!
//! where `src` is a zero-padded copy of one image's planes (`pitch` floats per row) and the two
//! offset lists separate what a pixel contributes from what a kernel tap contributes:
//!
//! | pass | rows `j` | terms `k` | panel | `src` |
//! |---|---|---|---|---|
//! | forward | output pixels `oy·sh·pitch + ox·sw` | `(ci, ky, kx)`: `ci·plane + ky·dh·pitch + kx·dw` | weights `[k][co]` | input |
//! | input gradient | input pixels of one stride residue | `(co, ky, kx)` of that residue | weights `[k][ci]` | output gradient |
//! | weight gradient | `(ci, ky, kx)` | output pixels | output gradient `[pixel][co]` | input |
//!
//! The kernel keeps a block of `P` rows × `CV` vectors of channels in registers and, per term,
//! loads `CV` panel vectors and broadcasts `P` source floats: `P·CV` FMAs for `CV + P` loads, and
//! no lanes wasted on image borders or small images, since the vectors run along channels.
//! A strided convolution's input gradient splits the input pixels by their residue modulo the
//! stride: the pixels of one residue are reached by the same kernel taps.

use super::parallel_sum;
use crate::cpu::isa::{copy_floats, isa, with_vector, Isa, Vector, VectorKernel};
use crate::cpu::zeroed_rows_with;
use crate::ops::conv::Geometry;

/// Panels have their channel count rounded up to this (the widest vector), so that a block may
/// always load whole vectors.
const PANEL_ALIGN: usize = 16;

/// Zero padding around each plane of a source.
#[derive(Clone, Copy, Debug)]
struct Pad {
    top: usize,
    bottom: usize,
    left: usize,
    right: usize,
}

/// The `channels` planes of `h × w` that a pass reads, zero-padded by `pad`.
#[derive(Clone, Copy, Debug)]
struct Source {
    channels: usize,
    h: usize,
    w: usize,
    pad: Pad,
}

impl Source {
    fn pitch(&self) -> usize {
        self.w + self.pad.left + self.pad.right
    }

    fn plane(&self) -> usize {
        (self.h + self.pad.top + self.pad.bottom) * self.pitch()
    }

    /// Copies the planes of one or more images `src [images, channels, h, w]` into `dst`,
    /// padded, one image after the other. `dst` is empty or holds an earlier fill of this source
    /// (a task's scratch): its padding is zero already, and only the interiors are written.
    fn fill(&self, level: Isa, src: &[f32], dst: &mut Vec<f32>) {
        dst.resize(src.len() / (self.h * self.w) * self.plane(), 0.0);
        let fill = Fill {
            source: self,
            src,
            dst,
        };
        run(level, fill);
    }
}

/// [`Source::fill`] with the vectors of the CPU: an image row is often a few floats (7 at 7x7),
/// where a `memcpy` call per row took a tenth of a pass.
struct Fill<'a> {
    source: &'a Source,
    src: &'a [f32],
    dst: &'a mut [f32],
}

impl VectorKernel for Fill<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let Source { h, w, pad, .. } = *self.source;
        let (pitch, plane) = (self.source.pitch(), self.source.plane());
        for (c, from) in self.src.chunks_exact(h * w).enumerate() {
            let to = &mut self.dst[c * plane + pad.top * pitch..][..h * pitch];
            for (from, to) in from.chunks_exact(w).zip(to.chunks_exact_mut(pitch)) {
                let to = &mut to[pad.left..][..w];
                // SAFETY: both slices hold `w` floats; `with_vector` checked the CPU.
                unsafe { copy_floats::<V>(from.as_ptr(), to.as_mut_ptr(), w) }
            }
        }
    }
}

/// Output pixels that are reached by the same terms, with those terms and their weights.
struct Class {
    /// Each pixel's offset in a padded plane (its rows `j` in the product).
    pixels: Vec<isize>,
    /// Each pixel's index in its output plane.
    out: Vec<usize>,
    /// Each term's offset in the padded source (channel plane plus tap).
    terms: Vec<isize>,
    /// The weights, a row per term, [`Plan::panel_cols`] wide (zero beyond the real channels).
    panel: Vec<f32>,
}

/// One pass over one image: the source, the classes of output pixels, the channel count.
struct Plan {
    source: Source,
    classes: Vec<Class>,
    /// Channels computed per pixel (the vector dimension).
    channels: usize,
}

/// The width of a panel computing `channels` channels.
fn panel_cols(channels: usize) -> usize {
    channels.next_multiple_of(PANEL_ALIGN)
}

impl Plan {
    fn panel_cols(&self) -> usize {
        panel_cols(self.channels)
    }

    /// The product of `class` over the padded image `src`, written to `dest`.
    fn product<'a>(&'a self, src: &'a [f32], class: &'a Class, dest: Dest<'a>) -> Product<'a> {
        Product {
            src,
            rows: &class.pixels,
            terms: &class.terms,
            panel: &class.panel,
            panel_cols: self.panel_cols(),
            channels: self.channels,
            dest,
        }
    }

    /// A new `[images, out_len]` output from the images of `input`, in parallel over images:
    /// each image is padded, then `write(padded image, class, the image's output)` runs for
    /// every class (the output starts at zero: pixels no tap reaches keep it).
    fn per_image(
        &self,
        level: Isa,
        input: &[f32],
        out_len: usize,
        write: impl Fn(&[f32], &Class, &mut [f32]) + Sync,
    ) -> Vec<f32> {
        let in_len = self.source.channels * self.source.h * self.source.w;
        let images = input.len() / in_len;
        zeroed_rows_with(images * out_len, out_len, Vec::new, |src, i, out| {
            self.source
                .fill(level, &input[i * in_len..(i + 1) * in_len], src);
            for class in &self.classes {
                write(src, class, out);
            }
        })
    }

    /// The forward pass: rows are output pixels, terms `(ci, ky, kx)`, panel the weights `w`.
    /// The weight gradient uses the same offsets with the roles of rows and terms exchanged, and
    /// no weights (an empty panel).
    fn forward(g: &Geometry, w: Option<&[f32]>) -> Plan {
        let (s, d, p) = (g.p.stride, g.p.dilation, g.p.padding);
        let source = Source {
            channels: g.cin,
            h: g.h,
            w: g.w,
            pad: Pad {
                top: p.0,
                bottom: p.0,
                left: p.1,
                right: p.1,
            },
        };
        let (pitch, plane) = (source.pitch() as isize, source.plane() as isize);
        // In output order, `out[j] = j`: the forward and weight-gradient passes rely on it.
        let (mut pixels, mut out) = (Vec::new(), Vec::new());
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                pixels.push((oy * s.0) as isize * pitch + (ox * s.1) as isize);
                out.push(oy * g.wo + ox);
            }
        }
        let mut terms = Vec::new();
        for c in 0..g.cin {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    terms.push(
                        c as isize * plane + (ky * d.0) as isize * pitch + (kx * d.1) as isize,
                    );
                }
            }
        }
        let (cols, k) = (panel_cols(g.cout), g.k());
        let mut panel = Vec::new();
        if let Some(w) = w {
            panel.resize(k * cols, 0.0);
            for co in 0..g.cout {
                for t in 0..k {
                    panel[t * cols + co] = w[co * k + t];
                }
            }
        }
        Plan {
            source,
            classes: vec![Class {
                pixels,
                out,
                terms,
                panel,
            }],
            channels: g.cout,
        }
    }

    /// The input gradient: `dx[ci, iy, ix] = Σ w[co, ci, ky, kx] · dy[co, oy, ox]` over the taps
    /// with `iy = oy·sh + ky·dh − ph` (likewise x). For a residue `r = (iy + ph) mod sh` the taps
    /// are those with `ky·dh ≡ r`, and `oy = u − v` with `u = (iy + ph − r)/sh` from the pixel and
    /// `v = (ky·dh − r)/sh` from the tap: a class per residue pair, over `dy` padded so that every
    /// `u − v` out of range reads a zero.
    fn backward_input(g: &Geometry, w: &[f32]) -> Plan {
        let (s, d, p) = (g.p.stride, g.p.dilation, g.p.padding);
        // Along one axis: the largest v (the padding before), the padding after, and for each
        // residue its pixels' (u, index) and taps' (v, tap index).
        struct Axis {
            before: usize,
            after: usize,
            pixels: Vec<Vec<(usize, usize)>>,
            taps: Vec<Vec<(usize, usize)>>,
        }
        let axis = |len: usize, out: usize, k: usize, s: usize, d: usize, p: usize| {
            let mut pixels = vec![Vec::new(); s];
            let mut taps = vec![Vec::new(); s];
            for i in 0..len {
                let r = (i + p) % s;
                pixels[r].push(((i + p - r) / s, i));
            }
            for t in 0..k {
                let r = (t * d) % s;
                taps[r].push(((t * d - r) / s, t));
            }
            let before = (k - 1) * d / s;
            let u_max = (len - 1 + p) / s;
            Axis {
                before,
                after: (u_max + 1).saturating_sub(out),
                pixels,
                taps,
            }
        };
        let ay = axis(g.h, g.ho, g.kh, s.0, d.0, p.0);
        let ax = axis(g.w, g.wo, g.kw, s.1, d.1, p.1);
        let source = Source {
            channels: g.cout,
            h: g.ho,
            w: g.wo,
            pad: Pad {
                top: ay.before,
                bottom: ay.after,
                left: ax.before,
                right: ax.after,
            },
        };
        let (pitch, plane) = (source.pitch() as isize, source.plane() as isize);
        let cols = panel_cols(g.cin);
        let k = g.k();
        let mut classes = Vec::new();
        for ry in 0..s.0 {
            for rx in 0..s.1 {
                let (py, px, ty, tx) = (&ay.pixels[ry], &ax.pixels[rx], &ay.taps[ry], &ax.taps[rx]);
                if py.is_empty() || px.is_empty() || ty.is_empty() || tx.is_empty() {
                    continue; // no pixels, or pixels no tap reaches: their gradient stays zero
                }
                let (mut pixels, mut out) = (Vec::new(), Vec::new());
                for &(uy, iy) in py {
                    for &(ux, ix) in px {
                        pixels.push((uy + ay.before) as isize * pitch + (ux + ax.before) as isize);
                        out.push(iy * g.w + ix);
                    }
                }
                let (mut terms, mut panel) = (Vec::new(), Vec::new());
                for co in 0..g.cout {
                    for &(vy, ky) in ty {
                        for &(vx, kx) in tx {
                            terms.push(co as isize * plane - vy as isize * pitch - vx as isize);
                            let tap = ky * g.kw + kx;
                            panel.extend((0..cols).map(|ci| {
                                if ci < g.cin {
                                    w[co * k + ci * g.kh * g.kw + tap]
                                } else {
                                    0.0
                                }
                            }));
                        }
                    }
                }
                classes.push(Class {
                    pixels,
                    out,
                    terms,
                    panel,
                });
            }
        }
        Plan {
            source,
            classes,
            channels: g.cin,
        }
    }
}

/// The three passes of a convolution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Pass {
    Forward,
    InputGradient,
    WeightGradient,
}

/// Whether the direct kernels take this pass of a convolution (else im2col and GEMM do): one
/// group, a CPU with AVX2 at least, a batch that fills the threads (they split it by images),
/// a kernel larger than 1x1 at stride 1 (a pointwise convolution is a plain GEMM on the image,
/// which the GEMM does faster), and 8 channels or more along the vectors (Cout, or Cin for the
/// input gradient). The forward and weight-gradient passes also need 8 input channels: with
/// fewer, a pixel has a handful of terms, and im2col's GEMM along the pixels runs faster (2x at
/// 1 -> 16 channels); the input gradient with few output channels stays direct, as im2col's
/// scatter of its column matrix is slower still (4x at 16 -> 1).
pub(super) fn applies(g: &Geometry, pass: Pass) -> bool {
    let channels = match pass {
        Pass::InputGradient => g.cin >= 8,
        Pass::Forward | Pass::WeightGradient => g.cin >= 8 && g.cout >= 8,
    };
    g.p.groups == 1
        && isa() != Isa::Baseline
        && g.n >= rayon::current_num_threads()
        && channels
        && !g.pointwise()
}

/// One `product` call, with the vectors of the CPU: the entry into [`with_vector`].
struct Product<'a> {
    src: &'a [f32],
    rows: &'a [isize],
    terms: &'a [isize],
    panel: &'a [f32],
    panel_cols: usize,
    channels: usize,
    dest: Dest<'a>,
}

impl VectorKernel for Product<'_> {
    type Output = ();

    /// Rows per block for blocks two vectors and one vector of channels wide: as many as the
    /// registers hold (32 of AVX-512, 16 of AVX2) beside the panel vectors and a broadcast,
    /// without spilling the rows' offsets.
    #[inline(always)]
    fn run<V: Vector>(self) {
        if V::LANES >= 16 {
            product::<V, 10, 16>(self)
        } else {
            product::<V, 6, 12>(self)
        }
    }
}

/// `Σ_k src[rows[j] + terms[k]] · panel[k][c]` for every row `j` and channel `c < channels`, in
/// blocks of `P2` rows × two vectors (or `P1` rows × one vector for the last channels), each
/// written to the product's [`Dest`].
#[inline(always)]
fn product<V: Vector, const P2: usize, const P1: usize>(p: Product<'_>) {
    let Product {
        src,
        rows,
        terms,
        panel,
        panel_cols,
        channels,
        mut dest,
    } = p;
    if rows.is_empty() || channels == 0 {
        return;
    }
    // Every gathered offset inside `src`, every panel row inside `panel`: checked once here, so
    // the kernel below may read without checks.
    let span = |o: &[isize]| (o.iter().min().copied(), o.iter().max().copied());
    let ((Some(r0), Some(r1)), (t0, t1)) = (span(rows), span(terms)) else {
        return;
    };
    if let (Some(t0), Some(t1)) = (t0, t1) {
        assert!(
            r0 + t0 >= 0 && ((r1 + t1) as usize) < src.len(),
            "conv2d: gather out of bounds"
        );
    }
    assert!(
        panel_cols >= channels.next_multiple_of(V::LANES)
            && panel.len() >= terms.len() * panel_cols,
        "conv2d: panel shape"
    );
    // Whole groups of `LANES` rows, which the transposes in `Dest::write` read.
    let mut tile = vec![0.0f32; P2.max(P1).next_multiple_of(V::LANES) * 2 * V::LANES];
    let mut transposed = vec![0.0f32; V::LANES * V::LANES];
    let mut c0 = 0;
    while c0 < channels {
        let two = channels - c0 > V::LANES;
        let width = if two { 2 * V::LANES } else { V::LANES };
        let n = width.min(channels - c0);
        let block = if two { P2 } else { P1 };
        for j0 in (0..rows.len()).step_by(block) {
            let m = block.min(rows.len() - j0);
            // SAFETY: offsets and panel checked above; the tile holds block × width floats.
            unsafe {
                let panel = panel.as_ptr().add(c0);
                let (src, tile_ptr) = (src.as_ptr(), tile.as_mut_ptr());
                if two {
                    let r = block_of::<P2>(&rows[j0..j0 + m]);
                    kernel::<V, P2, 2>(src, &r, terms, panel, panel_cols, tile_ptr);
                } else {
                    let r = block_of::<P1>(&rows[j0..j0 + m]);
                    kernel::<V, P1, 1>(src, &r, terms, panel, panel_cols, tile_ptr);
                }
            }
            dest.write::<V>(&tile, width, (j0, m), (c0, n), &mut transposed);
        }
        c0 += width;
    }
}

/// Where a product's blocks go: row `j`, channel `c` to `out[c · plane + at(j)]`, with `at(j)`
/// = `j`, or `index[j]` (increasing) when given; stored, or added when `add`.
struct Dest<'a> {
    out: &'a mut [f32],
    plane: usize,
    index: Option<&'a [usize]>,
    add: bool,
}

impl Dest<'_> {
    /// Writes rows `j0..j0 + m`, channels `c0..c0 + n` of a block, `tile[j · width + c]` (whole
    /// groups of `LANES` rows readable). Where the rows land side by side, each group of
    /// `LANES` rows is transposed (through `transposed`, `LANES²` floats) and stored a channel
    /// at a time, in vectors: element by element, the writes took about 12% of a 7x7
    /// convolution's time. Rows apart (the classes of a strided input gradient) go one by one.
    #[inline(always)]
    fn write<V: Vector>(
        &mut self,
        tile: &[f32],
        width: usize,
        (j0, m): (usize, usize),
        (c0, n): (usize, usize),
        transposed: &mut [f32],
    ) {
        let at = |j: usize| self.index.map_or(j, |index| index[j]);
        let start = at(j0);
        if at(j0 + m - 1) != start + m - 1 {
            for c in 0..n {
                for j in 0..m {
                    let (o, v) = ((c0 + c) * self.plane + at(j0 + j), tile[j * width + c]);
                    self.out[o] = if self.add { self.out[o] + v } else { v };
                }
            }
            return;
        }
        let lanes = V::LANES;
        assert!(
            start + m <= self.plane
                && (c0 + n) * self.plane <= self.out.len()
                && tile.len()
                    >= (m.next_multiple_of(lanes) - 1) * width + n.next_multiple_of(lanes)
                && n <= width
                && transposed.len() >= lanes * lanes,
            "conv2d: a block outside its output"
        );
        for r0 in (0..m).step_by(lanes) {
            let rows = lanes.min(m - r0);
            for v0 in (0..n).step_by(lanes) {
                // SAFETY: the tile holds the group's `lanes` rows of `lanes` channels from v0
                // (`n <= width`, rows whole), and every store is below `(c0 + n) · plane`
                // (checked above); the CPU has `V`'s features (the caller's `with_vector`).
                unsafe {
                    V::transpose(
                        tile.as_ptr().add(r0 * width + v0),
                        width,
                        transposed.as_mut_ptr(),
                    );
                    for c in v0..n.min(v0 + lanes) {
                        let to = self
                            .out
                            .as_mut_ptr()
                            .add((c0 + c) * self.plane + start + r0);
                        let mut x = V::load(transposed.as_ptr().add((c - v0) * lanes));
                        if rows == lanes {
                            if self.add {
                                x = x.add(V::load(to));
                            }
                            x.store(to);
                        } else {
                            if self.add {
                                x = x.add(V::load_first(to, rows));
                            }
                            x.store_first(to, rows);
                        }
                    }
                }
            }
        }
    }
}

/// `P` row offsets from `rows` (at most `P`), the missing ones repeating the first.
#[inline(always)]
fn block_of<const P: usize>(rows: &[isize]) -> [isize; P] {
    std::array::from_fn(|j| rows.get(j).copied().unwrap_or(rows[0]))
}

/// The register block: `tile[j][c] = Σ_k src[rows[j] + terms[k]] · panel[k·stride + c]` for
/// `P` rows and `CV` vectors of channels.
///
/// # Safety
/// Every `rows[j] + terms[k]` indexes `src`, every panel row has `CV` vectors, `tile` holds
/// `P · CV · LANES` floats, and the CPU has `V`'s features.
#[inline(always)]
unsafe fn kernel<V: Vector, const P: usize, const CV: usize>(
    src: *const f32,
    rows: &[isize; P],
    terms: &[isize],
    panel: *const f32,
    stride: usize,
    tile: *mut f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut acc = [[V::zero(); CV]; P];
        let mut w = panel;
        // A pointer per row, so the loop adds each term to it: with the source and the row
        // offsets apart, the rows' registers did not fit and the compiler spilled six of them.
        // Wrapping: a row alone may point outside `src` (an input gradient's terms are
        // negative); only the sums are read, and those are inside.
        let p: [*const f32; P] = std::array::from_fn(|j| src.wrapping_offset(rows[j]));
        for &t in terms {
            let wv: [V; CV] = std::array::from_fn(|c| V::load(w.add(c * V::LANES)));
            for j in 0..P {
                let x = V::splat(p[j].wrapping_offset(t));
                for c in 0..CV {
                    acc[j][c] = acc[j][c].mul_add(x, wv[c]);
                }
            }
            w = w.add(stride);
        }
        for (j, row) in acc.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                v.store(tile.add((j * CV + c) * V::LANES));
            }
        }
    }
}

/// The forward pass: `[N, Cout, Ho, Wo]` from `x [N, Cin, H, W]`, weights and optional bias.
pub(super) fn forward(
    level: Isa,
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let plan = Plan::forward(g, Some(w));
    let l = g.l();
    plan.per_image(level, x, g.out_image_len(), |src, class, out| {
        // The forward pass's pixels are in output order: row j is pixel j.
        let dest = Dest {
            out: &mut *out,
            plane: l,
            index: None,
            add: false,
        };
        run(level, plan.product(src, class, dest));
        if let Some(bias) = bias {
            for (plane, &b) in out.chunks_exact_mut(l).zip(bias) {
                plane.iter_mut().for_each(|o| *o += b);
            }
        }
    })
}

/// The input gradient: `[N, Cin, H, W]` from `dy [N, Cout, Ho, Wo]` and the weights.
pub(super) fn backward_input(level: Isa, g: &Geometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let plan = Plan::backward_input(g, w);
    let hw = g.h * g.w;
    plan.per_image(level, dy, g.image_len(), |src, class, dx| {
        let dest = Dest {
            out: dx,
            plane: hw,
            index: Some(&class.out),
            add: false,
        };
        run(level, plan.product(src, class, dest))
    })
}

/// The weight gradient `[Cout, Cin, kh, kw]` from `dy [N, Cout, Ho, Wo]` and `x`: rows are the
/// forward pass's terms, terms its pixels, and the panel `dy` with pixels as rows. A small image
/// has few pixels to sum per row block, so the pixels of a few images are summed in one product
/// (their padded planes one after the other), and the chunks of images are summed by
/// [`parallel_sum`].
pub(super) fn backward_weight(level: Isa, g: &Geometry, dy: &[f32], x: &[f32]) -> Vec<f32> {
    /// Pixels summed per product at least, where the batch allows.
    const MIN_TERMS: usize = 256;
    let plan = Plan::forward(g, None);
    let class = &plan.classes[0];
    let (k, l, xl, yl) = (g.k(), g.l(), g.image_len(), g.out_image_len());
    let cols = plan.panel_cols();
    let per_thread = (g.n / rayon::current_num_threads()).max(1);
    let images = MIN_TERMS.div_ceil(l.max(1)).clamp(1, per_thread);
    // The pixels of `images` images, each image's offsets past the previous one's planes.
    let padded = (plan.source.channels * plan.source.plane()) as isize;
    let pixels: Vec<isize> = (0..images as isize)
        .flat_map(|b| class.pixels.iter().map(move |&p| b * padded + p))
        .collect();
    let chunk = |c: usize, dw: &mut [f32], (src, dyt): &mut (Vec<f32>, Vec<f32>)| {
        let batch = c * images..((c + 1) * images).min(g.n);
        plan.source
            .fill(level, &x[batch.start * xl..batch.end * xl], src);
        // dy with pixels as rows (the forward pass's pixels are in output order); the columns
        // past Cout are zero from the scratch's first fill, and stay so.
        dyt.resize(batch.len() * l * cols, 0.0);
        let pixel_rows = PixelRows {
            dy: &dy[batch.start * yl..batch.end * yl],
            channels: g.cout,
            pixels: l,
            cols,
            out: dyt,
        };
        run(level, pixel_rows);
        run(
            level,
            Product {
                src,
                rows: &class.terms,
                terms: &pixels[..batch.len() * l],
                panel: dyt,
                panel_cols: cols,
                channels: g.cout,
                dest: Dest {
                    out: dw,
                    plane: k,
                    index: None,
                    add: true,
                },
            },
        );
    };
    parallel_sum(g.n.div_ceil(images), g.cout * k, Default::default, chunk)
}

/// [`backward_weight`]'s panel: the images of `dy [images, channels, pixels]` with pixels as
/// rows, `cols` floats apart (the columns past `channels` are left as they are). Whole blocks of
/// `LANES` channels × `LANES` pixels go through [`Vector::transpose`], the edges one by one: an
/// element-by-element copy took 2% of a U-Net training step.
struct PixelRows<'a> {
    dy: &'a [f32],
    channels: usize,
    pixels: usize,
    cols: usize,
    out: &'a mut [f32],
}

impl VectorKernel for PixelRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let PixelRows {
            dy,
            channels,
            pixels,
            cols,
            out,
        } = self;
        let lanes = V::LANES;
        let mut block = [0.0f32; 256];
        assert!(lanes * lanes <= block.len() && channels <= cols);
        let image_len = channels * pixels;
        for (image, out) in dy
            .chunks_exact(image_len)
            .zip(out.chunks_exact_mut(pixels * cols))
        {
            for c0 in (0..channels).step_by(lanes) {
                for p0 in (0..pixels).step_by(lanes) {
                    if c0 + lanes > channels || p0 + lanes > pixels {
                        for c in c0..channels.min(c0 + lanes) {
                            for p in p0..pixels.min(p0 + lanes) {
                                out[p * cols + c] = image[c * pixels + p];
                            }
                        }
                        continue;
                    }
                    let rows = &mut out[p0 * cols + c0..(p0 + lanes - 1) * cols + c0 + lanes];
                    // SAFETY: the block's `lanes` rows of `lanes` floats lie inside `image`
                    // (checked just above), `block` holds `lanes²` floats and each store stays
                    // inside `rows`; the CPU has `V`'s features (`with_vector`).
                    unsafe {
                        V::transpose(
                            image.as_ptr().add(c0 * pixels + p0),
                            pixels,
                            block.as_mut_ptr(),
                        );
                        for p in 0..lanes {
                            V::load(block.as_ptr().add(p * lanes))
                                .store(rows.as_mut_ptr().add(p * cols));
                        }
                    }
                }
            }
        }
    }
}

/// Runs `kernel` (a product, a fill, a panel) with the vectors of `level` ([`applies`] checked
/// that the CPU has some).
fn run<K: VectorKernel>(level: Isa, kernel: K) -> K::Output {
    with_vector(level, kernel).expect("conv2d: the direct kernels need AVX2 (checked by applies)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::conv::im2col;
    use crate::cpu::isa::vector_levels;
    use crate::Conv2dParams;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn close(what: &str, got: &[f32], want: &[f64], terms: usize) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        // Each result sums `terms` products of values in [-1, 1): f32 rounding stays far below.
        let tol = 1e-6 * terms as f64 + 1e-6;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= tol,
                "{what}: element {i}: {g} vs {w}"
            );
        }
    }

    /// Each pass of the direct kernels at every vector level of this CPU against im2col in f64,
    /// over strides, dilations, paddings, kernel shapes and channel counts that leave partial
    /// blocks of rows and of channels.
    #[test]
    fn direct_matches_im2col() {
        // (n, cin, cout, h, w, kh, kw, stride, padding, dilation)
        let cases = [
            (2, 3, 5, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1)),
            (2, 16, 16, 9, 9, 3, 3, (2, 2), (1, 1), (1, 1)),
            (3, 17, 33, 8, 5, 3, 3, (1, 1), (1, 1), (1, 1)),
            (2, 8, 40, 6, 6, 1, 1, (1, 1), (0, 0), (1, 1)),
            (2, 5, 4, 10, 7, 3, 2, (2, 1), (2, 0), (1, 1)),
            (2, 4, 3, 9, 9, 3, 3, (1, 2), (2, 2), (2, 2)),
            (2, 6, 7, 8, 8, 1, 1, (2, 2), (0, 0), (1, 1)),
            (2, 1, 16, 5, 5, 3, 3, (1, 1), (1, 1), (1, 1)),
            (2, 16, 1, 5, 5, 3, 3, (3, 3), (1, 1), (1, 1)),
            (2, 4, 4, 6, 6, 4, 4, (2, 2), (1, 1), (1, 1)),
            (11, 9, 10, 3, 4, 3, 3, (1, 1), (1, 1), (1, 1)),
        ];
        for (case, &(n, cin, cout, h, w, kh, kw, stride, padding, dilation)) in
            cases.iter().enumerate()
        {
            let p = Conv2dParams {
                stride,
                padding,
                dilation,
                groups: 1,
            };
            let g = Geometry::new(&[n, cin, h, w], &[cout, cin, kh, kw], &p).expect("geometry");
            let x = values(g.n * g.image_len(), 1);
            let wt = values(cout * g.k(), 2);
            let bias = values(cout, 3);
            let dy = values(g.n * g.out_image_len(), 4);
            let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
            let (x64, w64, b64, dy64) = (wide(&x), wide(&wt), wide(&bias), wide(&dy));
            let want_y = im2col::forward(&g, &x64, &w64, Some(&b64));
            let want_dx = im2col::backward_input(&g, &dy64, &w64);
            let want_dw = im2col::backward_weight(&g, &dy64, &x64);
            for level in vector_levels() {
                let what = |pass| format!("case {case} {level:?} {pass}");
                let y = forward(level, &g, &x, &wt, Some(&bias));
                close(&what("forward"), &y, &want_y, g.k());
                let dx = backward_input(level, &g, &dy, &wt);
                close(&what("input gradient"), &dx, &want_dx, cout * kh * kw);
                let dw = backward_weight(level, &g, &dy, &x);
                close(&what("weight gradient"), &dw, &want_dw, n * g.l());
            }
        }
    }
}
