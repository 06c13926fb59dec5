#!/usr/bin/env python3
"""PyTorch's CPU training steps per second for the model of a difftune config, doing the work of
one `difftune pretrain` step: a Fashion-MNIST batch from the IDX files, uniform timesteps, q_sample
on DiT's linear schedule, the epsilon MSE loss with label dropout, backward, gradient-norm
clipping, AdamW with warmup and the EMA update.

    DIT_REF=/path/to/facebookresearch/DiT python3 benches/torch_train_step.py CONFIG.json [steps] [threads]

Prints one JSON line: {"steps_per_sec": ...}. The model is the config's: a DiT is the reference
DiT (models.py of DIT_REF), a U-Net (`"kind": "unet"`) diffusers' UNet2DModel with the config
difftune builds (`train::run::network`), each with the config's shape; run beside
benches/compare_train.sh and benches/compare_unet.sh.
"""

import gzip
import json
import os
import sys
import time

import numpy as np
import torch


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def dit(m):
    ref = os.environ.get("DIT_REF")
    if not ref or not os.path.exists(os.path.join(ref, "models.py")):
        sys.exit("error: set DIT_REF to a checkout of facebookresearch/DiT (a folder with models.py)")
    sys.path.insert(0, ref)
    from models import DiT

    model = DiT(input_size=28, patch_size=m.get("patch_size", 4), in_channels=1,
                hidden_size=m.get("hidden_size", 96), depth=m.get("depth", 4),
                num_heads=m.get("num_heads", 4), mlp_ratio=m.get("mlp_ratio", 4.0),
                class_dropout_prob=m.get("class_dropout_prob", 0.1), num_classes=10,
                learn_sigma=m.get("learn_sigma", False))
    return lambda x, t, y: model(x, t, y), model


def unet(m):
    try:
        from diffusers import UNet2DModel
    except ImportError:
        sys.exit("error: a U-Net config needs diffusers (pip install diffusers)")
    attention = m.get("attention", [False, True, True])
    kind = lambda attn, with_attn, without: with_attn if attn else without
    conditional = m.get("conditional", True)
    rows = 10 + (1 if m.get("class_dropout_prob", 0.1) > 0 else 0)
    model = UNet2DModel(
        sample_size=28, in_channels=1, out_channels=2 if m.get("learn_sigma", False) else 1,
        down_block_types=[kind(a, "AttnDownBlock2D", "DownBlock2D") for a in attention],
        up_block_types=[kind(a, "AttnUpBlock2D", "UpBlock2D") for a in reversed(attention)],
        block_out_channels=m.get("channels", [32, 64, 64]),
        layers_per_block=m.get("layers_per_block", 1),
        attention_head_dim=m.get("head_dim", 32), norm_num_groups=m.get("norm_groups", 8),
        num_class_embeds=rows if conditional else None)
    forward = lambda x, t, y: model(x, t, class_labels=y if conditional else None).sample
    return forward, model


def main():
    config = json.load(open(sys.argv[1]))
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    torch.manual_seed(0)
    m = config.get("model", {})
    root = "/usr/share/datasets/fashion-mnist"
    images = read_idx(f"{root}/train-images-idx3-ubyte.gz")
    labels = read_idx(f"{root}/train-labels-idx1-ubyte.gz").astype(np.int64)
    forward, model = (unet if m.get("kind") == "unet" else dit)(m)
    model.train()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batch = config.get("batch_size", 64)
    lr, warmup = config.get("lr", 1e-3), config.get("warmup_steps", 100)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.get("weight_decay", 0.0))
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)  # DiT's linear schedule at T = 1000
    ab = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)
    p_drop = m.get("class_dropout_prob", 0.1) if m.get("kind") == "unet" else 0.0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))

    def step(i):
        idx = order[(i * batch) % (len(order) - batch):][:batch]
        x0 = torch.from_numpy(images[idx].astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
        y = torch.from_numpy(labels[idx])
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x0)
        a = ab[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        if p_drop > 0:  # label dropout to the null class, as the trainer does
            y = torch.where(torch.rand(batch) < p_drop, torch.full_like(y, 10), y)
        loss = ((forward(x_t, t, y) - noise) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.get("grad_clip", 1.0))
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (i + 1) / warmup)
        opt.step()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(0.999).add_(v, alpha=0.001)

    for i in range(5):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i + 5)
    rate = steps / (time.perf_counter() - start)
    print(json.dumps({"torch": torch.__version__, "steps": steps, "steps_per_sec": rate}))


if __name__ == "__main__":
    main()
