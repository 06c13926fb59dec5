//! [`Var`]: a tensor plus its place in the graph, and [`Var::backward`], which walks the graph in
//! reverse creation order (the tape) and frees each node as soon as its gradients are passed on.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tensor::{Error, Result, Tensor};

use crate::ops::Op;

/// The gradient function of one recorded op: given the gradient of the output and which inputs
/// need a gradient, the gradient of each input (`None` where not needed), shaped as that input.
pub type BackwardFn = Box<dyn FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send>;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` without recording any op: the results are constants and keep no graph alive.
///
/// ```
/// use autograd::{no_grad, Var};
/// use tensor::{DType, Device, Tensor};
/// let w = Var::param(Tensor::ones(&[2], DType::F32, Device::Cpu).unwrap());
/// let y = no_grad(|| w.exp()).unwrap();
/// assert!(!y.requires_grad());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let previous = GRAD_ENABLED.with(|g| g.replace(false));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(previous);
    f()
}

/// Whether ops are being recorded on this thread.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// A recorded op: what made a Var, the graph places of its inputs, and its gradient function.
/// It holds no input values: a tensor outlives the forward only where a gradient function saved
/// it, as in PyTorch.
struct Node {
    op: Op,
    inputs: Vec<Arc<Place>>,
    backward: BackwardFn,
}

enum Origin {
    /// A leaf: a parameter, an input or a constant.
    Leaf,
    /// Made by an op that has not been differentiated yet.
    Op(Node),
    /// Made by an op whose node a backward pass has consumed and freed.
    Freed(Op),
}

/// A Var's place in the graph, apart from its value.
struct Place {
    id: usize,
    requires_grad: bool,
    shape: Vec<usize>,
    origin: Mutex<Origin>,
}

/// A tensor on the tape. Cloning is cheap and shares the node. A Var that requires a gradient is
/// either a leaf (a parameter) or the output of a recorded op; ops on Vars that need no gradient
/// record nothing, so frozen parameters and inputs cost no graph memory.
///
/// ```
/// use autograd::Var;
/// use tensor::Tensor;
/// let x = Var::param(Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).unwrap());
/// let loss = x.square().unwrap().sum_all().unwrap(); // sum(x²)
/// let grads = loss.backward().unwrap();
/// assert_eq!(grads.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![2.0, 4.0, 6.0]);
/// ```
#[derive(Clone)]
pub struct Var {
    value: Tensor,
    place: Arc<Place>,
}

impl Var {
    fn new(value: Tensor, requires_grad: bool, origin: Origin) -> Var {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let shape = value.shape().to_vec();
        let origin = Mutex::new(origin);
        Var {
            value,
            place: Arc::new(Place {
                id,
                requires_grad,
                shape,
                origin,
            }),
        }
    }

    /// A leaf that needs no gradient (an input, a frozen weight).
    pub fn constant(value: Tensor) -> Var {
        Var::new(value, false, Origin::Leaf)
    }

    /// A leaf whose gradient backward() computes (a trainable parameter).
    pub fn param(value: Tensor) -> Var {
        Var::new(value, true, Origin::Leaf)
    }

    /// A leaf with the given `requires_grad`.
    pub fn leaf(value: Tensor, requires_grad: bool) -> Var {
        Var::new(value, requires_grad, Origin::Leaf)
    }

    /// Records the output `value` of `op` on `inputs`. When no input requires a gradient (or
    /// inside [`no_grad`]) nothing is recorded and `backward` is dropped with what it captured.
    pub fn from_op(
        op: Op,
        value: Tensor,
        inputs: &[&Var],
        backward: impl FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + 'static,
    ) -> Var {
        if !is_grad_enabled() || !inputs.iter().any(|v| v.requires_grad()) {
            return Var::constant(value);
        }
        let inputs = inputs.iter().map(|v| v.place.clone()).collect();
        Var::new(
            value,
            true,
            Origin::Op(Node {
                op,
                inputs,
                backward: Box::new(backward),
            }),
        )
    }

    /// The value.
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// The value's shape.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// A number unique to this Var, increasing in creation order.
    pub fn id(&self) -> usize {
        self.place.id
    }

    /// Whether a gradient flows to this Var.
    pub fn requires_grad(&self) -> bool {
        self.place.requires_grad
    }

    /// The same value as a constant, cut from the graph.
    pub fn detach(&self) -> Var {
        Var::constant(self.value.clone())
    }

    /// The op that made this Var, if any (also after backward freed its node).
    pub fn op(&self) -> Option<Op> {
        match &*self.place.origin.lock().expect("graph lock") {
            Origin::Leaf => None,
            Origin::Op(node) => Some(node.op),
            Origin::Freed(op) => Some(*op),
        }
    }

    /// The gradients of this scalar with respect to every leaf that requires one. The graph is
    /// freed as it is walked: a second backward through the same graph is an error.
    pub fn backward(&self) -> Result<Grads> {
        let mut grads = Grads::default();
        self.backward_into(&mut grads)?;
        Ok(grads)
    }

    /// As [`Var::backward`], adding into `grads` (gradient accumulation over micro-batches).
    pub fn backward_into(&self, grads: &mut Grads) -> Result<()> {
        ensure_scalar(self)?;
        if !self.requires_grad() {
            return Err(Error::msg(
                "backward: the loss does not depend on any Var that requires a gradient",
            ));
        }
        // The tape: every node reachable from the loss, in reverse creation order (ids grow with
        // creation, so an op always comes after its inputs).
        let mut tape: Vec<Arc<Place>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![self.place.clone()];
        while let Some(p) = stack.pop() {
            if !seen.insert(p.id) {
                continue;
            }
            match &*p.origin.lock().expect("graph lock") {
                Origin::Leaf => continue,
                Origin::Freed(op) => {
                    return Err(Error::msg(format!(
                        "backward: the graph through `{op:?}` was freed by an earlier backward; run the forward again"
                    )))
                }
                Origin::Op(node) => {
                    stack.extend(node.inputs.iter().filter(|i| i.requires_grad).cloned())
                }
            }
            tape.push(p);
        }
        tape.sort_by_key(|p| std::cmp::Reverse(p.id));

        let mut pending: HashMap<usize, Tensor> = HashMap::new();
        pending.insert(self.id(), self.value().ones_like()?);
        for p in tape {
            // Take the node out: its gradient function and what it saved are freed after use.
            let node = {
                let mut origin = p.origin.lock().expect("graph lock");
                let Origin::Op(node) = std::mem::replace(&mut *origin, Origin::Leaf) else {
                    unreachable!("only op nodes are on the tape")
                };
                *origin = Origin::Freed(node.op);
                node
            };
            let Some(grad) = pending.remove(&p.id) else {
                continue;
            };
            let needs: Vec<bool> = node.inputs.iter().map(|i| i.requires_grad).collect();
            let input_grads = (node.backward)(&grad, &needs)?;
            for (input, g) in node.inputs.iter().zip(input_grads) {
                let Some(g) = g.filter(|_| input.requires_grad) else {
                    continue;
                };
                if g.shape() != input.shape {
                    return Err(Error::shape(
                        "backward",
                        format!(
                            "{:?} returned a gradient of shape {:?} for an input of shape {:?}",
                            node.op,
                            g.shape(),
                            input.shape
                        ),
                    ));
                }
                accumulate(&mut pending, input.id, g)?;
            }
        }
        // What is left belongs to leaves.
        for (id, g) in pending {
            accumulate(&mut grads.0, id, g.contiguous()?)?;
        }
        Ok(())
    }
}

fn ensure_scalar(v: &Var) -> Result<()> {
    if v.value().elem_count() != 1 {
        return Err(Error::shape(
            "backward",
            format!("the loss must have one element, got shape {:?}", v.shape()),
        ));
    }
    Ok(())
}

fn accumulate(map: &mut HashMap<usize, Tensor>, id: usize, g: Tensor) -> Result<()> {
    let g = match map.remove(&id) {
        Some(prev) => prev.add(&g)?,
        None => g,
    };
    map.insert(id, g);
    Ok(())
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Var#{}({:?}, op {:?}, requires_grad {})",
            self.id(),
            self.value(),
            self.op(),
            self.requires_grad()
        )
    }
}

/// Gradients keyed by Var.
#[derive(Default)]
pub struct Grads(HashMap<usize, Tensor>);

impl Grads {
    /// The gradient of `var`, if it received one.
    pub fn get(&self, var: &Var) -> Option<&Tensor> {
        self.0.get(&var.id())
    }

    /// Takes the gradient of `var` out.
    pub fn remove(&mut self, var: &Var) -> Option<Tensor> {
        self.0.remove(&var.id())
    }

    /// Adds `grad` to the gradient of `var` (sets it when there is none).
    pub fn add(&mut self, var: &Var, grad: Tensor) -> Result<()> {
        accumulate(&mut self.0, var.id(), grad.contiguous()?)
    }

    /// Number of Vars with a gradient.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no Var has a gradient.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
