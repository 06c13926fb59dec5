//! Building blocks shared by the models. Each module keeps the names of its parameters in the
//! [`ParamStore`](crate::ParamStore) and reads them in `forward`; constructors add the parameters
//! with the reference initialisation (PyTorch's defaults unless a model says otherwise).

mod attention;
mod conv;
mod embed;
mod layers;

pub use attention::Attention;
pub use conv::Conv2d;
pub use embed::{sinusoidal_embedding, sinusoidal_embedding_f32, Embedding};
pub use layers::{GroupNorm, LayerNorm, Linear, LinearVars};
