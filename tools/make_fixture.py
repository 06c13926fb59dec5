#!/usr/bin/env python3
"""Make a parity fixture from diffusers' UNet2DModel or AutoencoderKL for any config, in the layout
of ../shared/fixtures (see its README): float32 random weights `param/*`, inputs `input/*`, float64
reference outputs `out/*`, random cotangents `cot/*`, float64 gradients `grad/*` of
sum_k sum(out_k * cot_k), model type and config in the metadata. `difftune parity FILE` then checks
difftune's model against it.

    pip install torch diffusers
    python3 tools/make_fixture.py unet '{"block_out_channels": [16, 32, 32], "layers_per_block": 2, ...}' unet.safetensors
    python3 tools/make_fixture.py vae '{"block_out_channels": [16, 32], "latent_channels": 3, ...}' vae.safetensors
"""

import json
import sys

import torch
from safetensors.torch import save_file


def randomize(model, gen):
    """Random weights instead of the reference init, whose zeros would make parity trivial."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1.0 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=gen))


def make(kind, config, seed=0):
    import diffusers

    gen = torch.Generator().manual_seed(seed)
    cls = {"unet": diffusers.UNet2DModel, "vae": diffusers.AutoencoderKL}[kind]
    model32 = cls(**config).eval()
    randomize(model32, gen)
    model = cls(**config).double().eval()
    model.load_state_dict({k: v.double() for k, v in model32.state_dict().items()})
    cfg = model.config
    size, batch = cfg.sample_size, 2
    tensors = {f"param/{k}": v.contiguous() for k, v in model32.state_dict().items()}

    x = torch.randn(batch, cfg.in_channels, size, size, generator=gen)
    inputs = {"x": x.double().requires_grad_()}
    tensors["input/x"] = x
    if kind == "unet":
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
        tensors[f"grad/{name}"] = p.grad
    for name, v in inputs.items():
        tensors[f"grad/input/{name}"] = v.grad
    meta = {
        "model": f"{cls.__name__} (diffusers {diffusers.__version__})",
        "config": json.dumps(config),
        "loss": "sum over k of sum(out/k * cot/k)",
        "generated_by": f"tools/make_fixture.py, float64 reference from float32 weights, torch {torch.__version__}",
    }
    return {k: v.contiguous() for k, v in tensors.items()}, meta


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("unet", "vae"):
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
