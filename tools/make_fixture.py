#!/usr/bin/env python3
"""Make a parity fixture from facebookresearch/DiT, diffusers' UNet2DModel or AutoencoderKL, or transformers'
CLIPVisionModelWithProjection, for any config, in the layout
of ../shared/fixtures (see its README): float32 random weights `param/*`, inputs `input/*`, float64
reference outputs `out/*`, random cotangents `cot/*`, float64 gradients `grad/*` of
sum_k sum(out_k * cot_k), model type and config in the metadata. `difftune parity FILE` then checks
difftune's model against it.

    pip install torch diffusers
    python3 tools/make_fixture.py unet '{"block_out_channels": [16, 32, 32], "layers_per_block": 2, ...}' unet.safetensors
    python3 tools/make_fixture.py vae '{"block_out_channels": [16, 32], "latent_channels": 3, ...}' vae.safetensors
    python3 tools/make_fixture.py clip '{"hidden_size": 16, "image_size": 12, "patch_size": 4, ...}' clip.safetensors
    DIT_REF=/path/to/DiT python3 tools/make_fixture.py dit '{"input_size": 8, "patch_size": 4, ...}' dit.safetensors
    DIT_REF=/path/to/DiT python3 tools/make_fixture.py dit_train '{"input_size": 8, ...}' dit_train.safetensors

For `dit`, DIT_REF names a checkout of facebookresearch/DiT (its models.py, which needs timm); the
model runs in float64 with the timestep features cast to it after the reference computes them in
float32.

For `clip` (pip install transformers) the config is a CLIPVisionConfig; the outputs are
`last_hidden_state`, `pooler_output` and `image_embeds` of `input/pixel_values` (the vision tower's forward, as
CLIPVisionModelWithProjection runs it).

`dit_train` is a training run instead (see `make_train`; its train.py needs diffusers too): the
float32 initial weights `param/*`; per step k the given inputs `input/step_k/{x0, noise}` (float32),
`input/step_k/{t, y, drop}` (int64; drop 1: the label becomes the null class); the float64 outputs
`out/step_k/loss` (the batch mean that is differentiated) and the per-sample terms
`out/step_k/{loss_per_sample, mse, vb}`; after the last step the weights `final/*` and the moving
average `ema/*`, float64. The hyper-parameters are in the `train` metadata (JSON).
"""

import json
import math
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


def make_clip(config, seed=0):
    """`clip`: CLIPVisionModelWithProjection from a CLIPVisionConfig, random float32 weights, run in
    float64 with PyTorch's sdpa attention (the eager path computes its softmax in float32). Its three outputs come from one pass through the vision tower, the
    projection applied to the pooled output, as the model's own forward does (checked against it)."""
    import transformers
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    gen = torch.Generator().manual_seed(seed)
    cfg = CLIPVisionConfig(**config, attn_implementation="sdpa")
    model32 = CLIPVisionModelWithProjection(cfg).eval()
    randomize(model32, gen)
    model = CLIPVisionModelWithProjection(cfg).double().eval()
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in model32.state_dict().items()})
    # Parameters only: the position_ids buffer is not a weight.
    tensors = {f"param/{k}": v.detach().contiguous() for k, v in model32.named_parameters()}
    batch = 2
    x = torch.randn(batch, cfg.num_channels, cfg.image_size, cfg.image_size, generator=gen)
    tensors["input/pixel_values"] = x
    pixels = x.double().requires_grad_()
    vision = model.vision_model(pixel_values=pixels)
    outs = {
        "last_hidden_state": vision.last_hidden_state,
        "pooler_output": vision.pooler_output,
        "image_embeds": model.visual_projection(vision.pooler_output),
    }
    with torch.no_grad():
        whole = model(pixel_values=x.double())
        assert torch.equal(whole.image_embeds, outs["image_embeds"])
        assert torch.equal(whole.last_hidden_state, outs["last_hidden_state"])
    loss = 0
    for name, out in outs.items():
        cot = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        tensors[f"out/{name}"] = out.detach()
        tensors[f"cot/{name}"] = cot
        loss = loss + (out * cot).sum()
    loss.backward()
    for name, p in model.named_parameters():
        tensors[f"grad/{name}"] = p.grad
    tensors["grad/input/pixel_values"] = pixels.grad
    meta = {
        "model": f"CLIPVisionModelWithProjection (transformers {transformers.__version__})",
        "config": json.dumps(config),
        "loss": "sum over k of sum(out/k * cot/k)",
        "generated_by": f"tools/make_fixture.py clip, float64 reference from float32 weights, torch {torch.__version__}",
    }
    return {k: v.contiguous() for k, v in tensors.items()}, meta


# The hyper-parameters of `dit_train`, recorded in its metadata. DiT trains with weight decay 0 and
# an EMA decay of 0.9999; here the decay is exercised, and the average moves measurably in 10 steps.
TRAIN = {
    "steps": 10,
    "batch": 4,
    "respacing": "",
    "lr": 1e-4,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "weight_decay": 0.01,
    "ema_decay": 0.9,
    "label_drop": 0.3,
}


def exact_float32_steps(models, gaussian_diffusion):
    """Makes the reference's two float32 steps exact, so that its float64 run is a function of its
    inputs up to float64 rounding. The timestep features keep their float32 formula
    (`t.float() * freqs`, then cos and sin) with each operation correctly rounded, as difftune's
    `timestep_embedding_f32` computes them: PyTorch's vectorised float32 exp, cos and sin are
    within an ulp, but differ from the correctly rounded value for 2 of the 128 frequencies and
    about 5% of the features. `_extract_into_tensor` reads the float64 schedule as it is instead of
    rounding it to float32 (`.float()`), as difftune's `Diffusion::extract` reads it in the
    model's dtype."""

    def timestep_embedding(t, dim, max_period=10000):
        half = dim // 2
        exponent = -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half
        freqs = torch.exp(exponent.double()).float()
        args = (t[:, None].float() * freqs[None]).double()
        embedding = torch.cat([torch.cos(args).float(), torch.sin(args).float()], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def extract_into_tensor(arr, timesteps, broadcast_shape):
        res = torch.from_numpy(arr).to(device=timesteps.device)[timesteps]
        while len(res.shape) < len(broadcast_shape):
            res = res[..., None]
        return res + torch.zeros(broadcast_shape, dtype=res.dtype, device=timesteps.device)

    models.TimestepEmbedder.timestep_embedding = staticmethod(timestep_embedding)
    gaussian_diffusion._extract_into_tensor = extract_into_tensor


def make_train(config, seed=0):
    """`dit_train`: TRAIN["steps"] steps of DiT's train.py in float64 from random float32 weights:
    `diffusion.training_losses` (the hybrid MSE + VB loss with learned sigma), its mean backward,
    torch.optim.AdamW, then train.py's `update_ema`. Each step's inputs are given: x0, t, noise,
    labels y and the label-dropout mask `drop` (1: the label becomes the null class), fed to the
    reference's own `token_drop` as `force_drop_ids`, so nothing is drawn at random."""
    from copy import deepcopy

    models = dit_reference()
    import train as dit_train  # DiT's train.py: update_ema and requires_grad (imports diffusers)
    from diffusion import create_diffusion, gaussian_diffusion

    if config.get("class_dropout_prob", 0.1) <= 0:
        sys.exit("error: dit_train needs class_dropout_prob > 0 (the null class the labels drop to)")
    exact_float32_steps(models, gaussian_diffusion)
    gen = torch.Generator().manual_seed(seed)
    model32 = models.DiT(**config)
    randomize(model32, gen)
    model = models.DiT(**config).double()
    model.load_state_dict({k: v.double() for k, v in model32.state_dict().items()})
    tensors = {f"param/{k}": v.contiguous() for k, v in model32.state_dict().items()}
    ema = deepcopy(model)
    dit_train.requires_grad(ema, False)
    model.train()
    diffusion = create_diffusion(timestep_respacing=TRAIN["respacing"])
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=TRAIN["lr"],
        betas=tuple(TRAIN["betas"]),
        eps=TRAIN["eps"],
        weight_decay=TRAIN["weight_decay"],
    )
    n, size, channels = TRAIN["batch"], config.get("input_size", 32), config.get("in_channels", 4)
    embedder = model.y_embedder
    for k in range(TRAIN["steps"]):
        # Some pixels at ±1, so that the decoder likelihood's edge bins are used.
        x0 = (0.8 * torch.randn(n, channels, size, size, generator=gen)).clamp(-1, 1)
        noise = torch.randn(n, channels, size, size, generator=gen)
        t = torch.randint(0, diffusion.num_timesteps, (n,), generator=gen)
        if k % 4 == 0:
            t[0] = 0  # the decoder likelihood instead of the KL term
        y = torch.randint(0, config.get("num_classes", 1000), (n,), generator=gen)
        drop = (torch.rand(n, generator=gen) < TRAIN["label_drop"]).long()
        # The reference's token_drop with force_drop_ids: train mode calls it without them.
        embedder.token_drop = lambda labels, _, m=drop: type(embedder).token_drop(embedder, labels, m)
        terms = diffusion.training_losses(model, x0.double(), t, dict(y=y), noise=noise.double())
        loss = terms["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        dit_train.update_ema(ema, model, decay=TRAIN["ema_decay"])
        given = dict(x0=x0, t=t, noise=noise, y=y, drop=drop)
        tensors.update({f"input/step_{k}/{name}": v for name, v in given.items()})
        outs = dict(loss=loss, loss_per_sample=terms["loss"], mse=terms["mse"], vb=terms["vb"])
        tensors.update({f"out/step_{k}/{name}": v.detach() for name, v in outs.items()})
    tensors.update({f"final/{k}": v for k, v in model.state_dict().items()})
    tensors.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
    meta = {
        "model": "DiT (facebookresearch/DiT models.py, diffusion/, train.py)",
        "config": json.dumps(config),
        "train": json.dumps(TRAIN),
        "loss": "out/step_k/loss: the mean over the batch of diffusion.training_losses(model, x0, t, {y}, noise)"
        "['loss'] (per sample: out/step_k/loss_per_sample = mse + vb)",
        "float32_steps": "made exact: timestep features correctly rounded in float32, schedule read in float64",
        "generated_by": f"tools/make_fixture.py dit_train, float64 from float32 weights, torch {torch.__version__}",
    }
    return {k: v.contiguous() for k, v in tensors.items()}, meta


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("dit", "dit_train", "unet", "vae", "clip"):
        sys.exit(__doc__)
    try:
        config = json.loads(sys.argv[2])
    except json.JSONDecodeError as e:
        sys.exit(f"error: the config is not JSON: {e}")
    if sys.argv[1] == "dit_train":
        tensors, meta = make_train(config)
    elif sys.argv[1] == "clip":
        tensors, meta = make_clip(config)
    else:
        tensors, meta = make(sys.argv[1], config)
    save_file(tensors, sys.argv[3], metadata=meta)
    print(f"{sys.argv[3]}: {meta['model']}, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
