//! Normalisations, each forward beside its backward: softmax and log-softmax along a dim, and
//! layer norm and group norm, which share one row plan ([`RowNorm`]). The dims and shapes are
//! checked here; `cpu/norm.rs` and `cuda/norm.rs` run the rows.

use crate::cpu::norm as cpu;
use crate::cuda::norm as cuda;
use crate::{ensure_shape, Result, Tensor};

/// Softmax or its logarithm; both share the row walk and differ only in the per-row math.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SoftmaxKind {
    Plain,
    Log,
}

impl SoftmaxKind {
    /// The forward op's name, for errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SoftmaxKind::Plain => "softmax",
            SoftmaxKind::Log => "log_softmax",
        }
    }

    /// The backward op's name, for errors.
    pub(crate) fn backward_name(self) -> &'static str {
        match self {
            SoftmaxKind::Plain => "softmax_backward",
            SoftmaxKind::Log => "log_softmax_backward",
        }
    }
}

/// `x` viewed with `dim` moved last (so rows along `dim` are contiguous after a copy at most),
/// and the permutation that moves it back.
fn dim_last(op: &'static str, x: &Tensor, dim: usize) -> Result<(Tensor, Vec<usize>)> {
    let n = x.rank();
    ensure_shape!(
        dim < n,
        op,
        "dim {dim} out of range for shape {:?}",
        x.shape()
    );
    let perm: Vec<usize> = (0..n).filter(|&d| d != dim).chain([dim]).collect();
    let undo = (0..n)
        .map(|d| match d.cmp(&dim) {
            std::cmp::Ordering::Less => d,
            std::cmp::Ordering::Equal => n - 1,
            std::cmp::Ordering::Greater => d - 1,
        })
        .collect();
    Ok((x.permute(&perm)?, undo))
}

impl Tensor {
    fn softmax_kind(&self, kind: SoftmaxKind, dim: usize) -> Result<Tensor> {
        let (x, undo) = dim_last(kind.name(), self, dim)?;
        if self.is_cuda() {
            return cuda::softmax(self, dim, kind == SoftmaxKind::Log);
        }
        cpu::softmax(kind, &x, &undo, self.shape()[dim])
    }

    fn softmax_kind_backward(
        &self,
        kind: SoftmaxKind,
        grad: &Tensor,
        dim: usize,
    ) -> Result<Tensor> {
        let op = kind.backward_name();
        ensure_shape!(
            self.shape() == grad.shape(),
            op,
            "output {:?} and gradient {:?} differ",
            self.shape(),
            grad.shape()
        );
        let (y, undo) = dim_last(op, self, dim)?;
        let (g, _) = dim_last(op, grad, dim)?;
        if self.is_cuda() || grad.is_cuda() {
            return cuda::softmax_backward(self, grad, dim, kind == SoftmaxKind::Log);
        }
        cpu::softmax_backward(kind, &y, &g, &undo, self.shape()[dim])
    }

    /// Softmax along `dim`, computed stably (the row max is subtracted first).
    pub fn softmax(&self, dim: usize) -> Result<Tensor> {
        self.softmax_kind(SoftmaxKind::Plain, dim)
    }

    /// Log-softmax along `dim`: `x − max − ln Σ exp(x − max)`.
    pub fn log_softmax(&self, dim: usize) -> Result<Tensor> {
        self.softmax_kind(SoftmaxKind::Log, dim)
    }

    /// The gradient through softmax, where `self` is its output `y`: `y·(grad − Σ_dim grad·y)`.
    pub fn softmax_backward(&self, grad: &Tensor, dim: usize) -> Result<Tensor> {
        self.softmax_kind_backward(SoftmaxKind::Plain, grad, dim)
    }

    /// The gradient through log-softmax, where `self` is its output `y`:
    /// `grad − exp(y)·Σ_dim grad`.
    pub fn log_softmax_backward(&self, grad: &Tensor, dim: usize) -> Result<Tensor> {
        self.softmax_kind_backward(SoftmaxKind::Log, grad, dim)
    }
}

/// The one kernel behind layer norm and group norm: `rows` rows of `len` contiguous elements,
/// each normalised to zero mean and unit (biased) variance, then scaled and shifted by the affine
/// parameter `((row % groups) · len + j) / inner` for its element `j`. Layer norm uses
/// `groups = inner = 1` (the parameter is the position in the row); group norm uses its group
/// count and the spatial size (the parameter is the element's channel).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowNorm {
    pub(crate) rows: usize,
    pub(crate) len: usize,
    pub(crate) groups: usize,
    pub(crate) inner: usize,
}

/// Checks an optional affine parameter: `shape` exactly, and the input's dtype and device.
fn check_param(
    op: &'static str,
    what: &str,
    param: Option<&Tensor>,
    shape: &[usize],
    x: &Tensor,
) -> Result<()> {
    let Some(p) = param else { return Ok(()) };
    ensure_shape!(
        p.shape() == shape,
        op,
        "{what} has shape {:?}, expected {shape:?} for input {:?}",
        p.shape(),
        x.shape()
    );
    x.same_kind(op, p)
}

impl Tensor {
    /// Runs the row-normalisation forward; `stat_shape` is the shape of the mean and rstd.
    fn row_norm(
        &self,
        op: &'static str,
        plan: RowNorm,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        stat_shape: &[usize],
    ) -> Result<(Tensor, Tensor, Tensor)> {
        if self.is_cuda() {
            return cuda::row_norm(op, self, plan, (weight, bias), eps, stat_shape);
        }
        cpu::row_norm(op, self, plan, (weight, bias), eps, stat_shape)
    }

    /// Runs the row-normalisation backward; `param_shape` is the shape of dweight and dbias.
    fn row_norm_backward(
        &self,
        op: &'static str,
        plan: RowNorm,
        grad: &Tensor,
        (mean, rstd): (&Tensor, &Tensor),
        weight: Option<&Tensor>,
        param_shape: &[usize],
    ) -> Result<(Tensor, Tensor, Tensor)> {
        ensure_shape!(
            grad.shape() == self.shape(),
            op,
            "gradient {:?} does not match input {:?}",
            grad.shape(),
            self.shape()
        );
        ensure_shape!(
            mean.elem_count() == plan.rows && rstd.elem_count() == plan.rows,
            op,
            "mean {:?} and rstd {:?} must hold one value per normalised row ({})",
            mean.shape(),
            rstd.shape(),
            plan.rows
        );
        let stats = (mean, rstd);
        if [self, grad, mean, rstd].iter().any(|t| t.is_cuda()) {
            return cuda::row_norm_backward(op, self, plan, grad, stats, weight, param_shape);
        }
        cpu::row_norm_backward(op, self, plan, grad, stats, weight, param_shape)
    }

    /// The plan of a layer norm over the last `k` dims, and the index of the first of them.
    fn layer_norm_plan(&self, op: &'static str, k: usize) -> Result<(RowNorm, usize)> {
        let shape = self.shape();
        ensure_shape!(
            k >= 1 && k <= shape.len(),
            op,
            "cannot normalise over the last {k} dims of shape {shape:?}"
        );
        let lead = shape.len() - k;
        let len: usize = shape[lead..].iter().product();
        ensure_shape!(
            len > 0,
            op,
            "the normalised dims {:?} of shape {shape:?} are empty",
            &shape[lead..]
        );
        let rows = shape[..lead].iter().product();
        let plan = RowNorm {
            rows,
            len,
            groups: 1,
            inner: 1,
        };
        Ok((plan, lead))
    }

    /// Layer norm over the last `normalized_dims` dims, with optional `weight` and `bias` of
    /// the shape of those dims. Returns `(y, mean, rstd)`: mean and 1/√(var + eps) of each
    /// normalised row, shaped as the leading dims, for [`Tensor::layer_norm_backward`].
    pub fn layer_norm(
        &self,
        normalized_dims: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "layer_norm";
        let (plan, lead) = self.layer_norm_plan(op, normalized_dims)?;
        let (lead_shape, param_shape) = self.shape().split_at(lead);
        check_param(op, "weight", weight, param_shape, self)?;
        check_param(op, "bias", bias, param_shape, self)?;
        self.row_norm(op, plan, weight, bias, eps, lead_shape)
    }

    /// The backward of [`Tensor::layer_norm`] (`self` is its input): `(dx, dweight, dbias)`,
    /// the last two shaped as the normalised dims (computed even when there is no weight or bias).
    pub fn layer_norm_backward(
        &self,
        grad: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        weight: Option<&Tensor>,
        normalized_dims: usize,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "layer_norm_backward";
        let (plan, lead) = self.layer_norm_plan(op, normalized_dims)?;
        let param_shape = &self.shape()[lead..];
        check_param(op, "weight", weight, param_shape, self)?;
        self.row_norm_backward(op, plan, grad, (mean, rstd), weight, param_shape)
    }

    /// The plan of a group norm of `[N, C, *spatial]` in `groups` groups.
    fn group_norm_plan(&self, op: &'static str, groups: usize) -> Result<RowNorm> {
        let shape = self.shape();
        ensure_shape!(
            shape.len() >= 2,
            op,
            "expected [N, C, *spatial], got shape {shape:?}"
        );
        let (n, c) = (shape[0], shape[1]);
        ensure_shape!(
            groups > 0 && c % groups == 0,
            op,
            "{groups} groups do not divide the {c} channels of shape {shape:?}"
        );
        let inner: usize = shape[2..].iter().product();
        ensure_shape!(
            c > 0 && inner > 0,
            op,
            "cannot normalise empty groups of shape {shape:?}"
        );
        Ok(RowNorm {
            rows: n * groups,
            len: c / groups * inner,
            groups,
            inner,
        })
    }

    /// Group norm of `self` (`[N, C, *spatial]`): channels split into `groups` groups, each
    /// normalised over its channels and positions, then an optional per-channel `weight` and
    /// `bias` (`[C]`). Returns `(y, mean, rstd)` with mean and rstd of shape `[N, groups]`.
    pub fn group_norm(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "group_norm";
        let plan = self.group_norm_plan(op, groups)?;
        let channels = [self.shape()[1]];
        check_param(op, "weight", weight, &channels, self)?;
        check_param(op, "bias", bias, &channels, self)?;
        self.row_norm(op, plan, weight, bias, eps, &[self.shape()[0], groups])
    }

    /// The backward of [`Tensor::group_norm`] (`self` is its input): `(dx, dweight, dbias)`,
    /// the last two of shape `[C]` (computed even when there is no weight or bias).
    pub fn group_norm_backward(
        &self,
        grad: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        weight: Option<&Tensor>,
        groups: usize,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "group_norm_backward";
        let plan = self.group_norm_plan(op, groups)?;
        let channels = [self.shape()[1]];
        check_param(op, "weight", weight, &channels, self)?;
        self.row_norm_backward(op, plan, grad, (mean, rstd), weight, &channels)
    }
}
