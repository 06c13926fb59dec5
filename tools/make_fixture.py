#!/usr/bin/env python3
"""Make a parity fixture from facebookresearch/DiT, diffusers' UNet2DModel or AutoencoderKL for any config, in the layout
of ../shared/fixtures (see its README): float32 random weights `param/*`, inputs `input/*`, float64
reference outputs `out/*`, random cotangents `cot/*`, float64 gradients `grad/*` of
sum_k sum(out_k * cot_k), model type and config in the metadata. `difftune parity FILE` then checks
difftune's model against it.

    pip install torch diffusers
    python3 tools/make_fixture.py unet '{"block_out_channels": [16, 32, 32], "layers_per_block": 2, ...}' unet.safetensors
    python3 tools/make_fixture.py vae '{"block_out_channels": [16, 32], "latent_channels": 3, ...}' vae.safetensors
    DIT_REF=/path/to/DiT python3 tools/make_fixture.py dit '{"input_size": 8, "patch_size": 4, ...}' dit.safetensors

For `dit`, DIT_REF names a checkout of facebookresearch/DiT (its models.py, which needs timm); the
model runs in float64 with the timestep features cast to it after the reference computes them in
float32.
"""

import json
import sys

import torch
from safetensors.torch import save_file


def randomize(model, gen):
    """Random weights instead of the reference init, whose zeros would make parity trivial; fixed
    parameters (DiT's sin-cos pos_embed) keep their values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            scale = 1.0 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=gen))


def dit_reference():
    """facebookresearch/DiT from the checkout DIT_REF names: its `models` module, with the float32
    timestep features cast to the model's dtype (its forward would feed float32 features to
    float64 Linear layers, which PyTorch refuses)."""
    import os

    ref = os.environ.get("DIT_REF")
    if not ref or not os.path.exists(os.path.join(ref, "models.py")):
        sys.exit("error: set DIT_REF to a checkout of facebookresearch/DiT (a folder with models.py)")
    sys.path.insert(0, ref)
    import models

    def embed_timesteps(self, t):
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))

    models.TimestepEmbedder.forward = embed_timesteps
    return models


def model_class(kind):
    if kind == "dit":
        return dit_reference().DiT, "DiT (facebookresearch/DiT models.py)"
    import diffusers

    cls = {"unet": diffusers.UNet2DModel, "vae": diffusers.AutoencoderKL}[kind]
    return cls, f"{cls.__name__} (diffusers {diffusers.__version__})"


def make(kind, config, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cls, model_name = model_class(kind)
    model32 = cls(**config).eval()
    randomize(model32, gen)
    model = cls(**config).double().eval()
    model.load_state_dict({k: v.double() for k, v in model32.state_dict().items()})
    cfg = model.config if kind != "dit" else None
    batch = 2
    tensors = {f"param/{k}": v.contiguous() for k, v in model32.state_dict().items()}

    size = config.get("input_size", 32) if kind == "dit" else cfg.sample_size
    channels = config.get("in_channels", 4) if kind == "dit" else cfg.in_channels
    x = torch.randn(batch, channels, size, size, generator=gen)
    inputs = {"x": x.double().requires_grad_()}
    tensors["input/x"] = x
    if kind == "dit":
        t = torch.randint(0, 1000, (batch,), generator=gen)
        null_class = config.get("class_dropout_prob", 0.1) > 0  # the table's extra last row
        y = torch.randint(0, config.get("num_classes", 1000) + null_class, (batch,), generator=gen)
        tensors["input/t"], tensors["input/y"] = t, y
        outs = {"forward": model(inputs["x"], t, y)}
    elif kind == "unet":
        t = torch.randint(0, 1000, (batch,), generator=gen)
        tensors["input/t"] = t
        y = None
        if cfg.num_class_embeds:
            y = torch.randint(0, cfg.num_class_embeds, (batch,), generator=gen)
            tensors["input/y"] = y
        outs = {"forward": model(inputs["x"], t, class_labels=y).sample}
    else:
        down = 2 ** (len(cfg.block_out_channels) - 1)
        z = torch.randn(batch, cfg.latent_channels, size // down, size // down, generator=gen)
        tensors["input/z"] = z
        inputs["z"] = z.double().requires_grad_()
        post = model.encode(inputs["x"]).latent_dist
        outs = {"encode_mean": post.mean, "encode_logvar": post.logvar, "decode": model.decode(inputs["z"]).sample}

    loss = 0
    for name, out in outs.items():
        cot = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        tensors[f"out/{name}"] = out.detach()
        tensors[f"cot/{name}"] = cot
        loss = loss + (out * cot).sum()
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            tensors[f"grad/{name}"] = p.grad
    for name, v in inputs.items():
        tensors[f"grad/input/{name}"] = v.grad
    meta = {
        "model": model_name,
        "config": json.dumps(config),
        "loss": "sum over k of sum(out/k * cot/k)",
        "generated_by": f"tools/make_fixture.py, float64 reference from float32 weights, torch {torch.__version__}",
    }
    return {k: v.contiguous() for k, v in tensors.items()}, meta


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("dit", "unet", "vae"):
        sys.exit(__doc__)
    try:
        config = json.loads(sys.argv[2])
    except json.JSONDecodeError as e:
        sys.exit(f"error: the config is not JSON: {e}")
    tensors, meta = make(sys.argv[1], config)
    save_file(tensors, sys.argv[3], metadata=meta)
    print(f"{sys.argv[3]}: {meta['model']}, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
