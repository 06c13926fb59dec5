//! Neural-network blocks and the DiT, U-Net and AutoencoderKL models, under the reference
//! checkpoint names. Empty until the models issue lands.
