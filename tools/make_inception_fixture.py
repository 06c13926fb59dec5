#!/usr/bin/env python3
"""Make tests/fixtures/inception_fid.safetensors: pytorch-fid's FID Inception-v3 on portable random
weights, for `tests/tests/inception_parity.rs`.

    pip install pytorch-fid            # torch and torchvision too; not needed by the Rust tests
    python3 tools/make_inception_fixture.py tests/fixtures/inception_fid.safetensors

The network is pytorch-fid's own (`pytorch_fid.inception.InceptionV3([3], resize_input=True,
normalize_input=True, use_fid_inception=True)`), built by pytorch-fid's `fid_inception_v3()`. That
function downloads the FID weights; here its download is replaced by the portable generator below,
so nothing is downloaded and ~95 MB of weights need not be committed: the Rust side
(`models::inception::portable_weight`) regenerates exactly the same float32 values.

The generator, per tensor of the state dict (name -> shape):

    seed  = FNV-1a 64 of the UTF-8 name (offset 0xcbf29ce484222325, prime 0x100000001b3)
    z_i   = splitmix64 finaliser of seed + (i + 1) * 0x9E3779B97F4A7C15   (i = 0, 1, ... in
            row-major order; all arithmetic mod 2^64; finaliser: z ^= z >> 30; z *= 0xBF58476D1CE4E5B9;
            z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31)
    x_i   = 2 * ((z_i >> 11) * 2^-53) - 1           uniform in [-1, 1), exact in float64
    value = by name suffix, in float64, then rounded to float32:
            *.conv.weight      x * sqrt(6 / fan_in)  (fan_in = in_channels * kh * kw)
            *.bn.weight        1 + 0.1 x
            *.bn.bias          0.1 x
            *.bn.running_mean  0.1 x
            *.bn.running_var   1 + 0.5 x
            fc.weight          x * sqrt(3 / 2048)    (unused by the features)
            fc.bias            0.1 x
            *.num_batches_tracked   0 (int64)

The fixture holds (all small, well under 1 MB):

    input/gray28   u8 [1, 1, 28, 28]     a grayscale image (the network sees it repeated to RGB)
    input/rgb64x48 u8 [2, 3, 64, 48]     two RGB images, a batch, not square
    input/gray310  u8 [1, 1, 310, 300]   larger than 299: the resize shrinks it
    features/<input>       f64 [N, 2048]  pool3 features of pytorch-fid in float64 from the input
                                          u8 / 255 (computed in float32), the reference
    features_f32/<input>   f32 [N, 2048]  the same in float32 (how far float32 PyTorch is from it)
    debug/<input>/block{0,1,2}_mean  f64 [N, C]  spatial means of pytorch-fid's blocks 0 (64 ch,
                                          after the first max-pool), 1 (192 ch) and 2 (768 ch, Mixed_6e)
    generator/<name>       f32            generated values of a few parameters (whole tensors or
                                          their first 64 values), to check the Rust generator alone
"""

import argparse
import math
import os
import sys

import numpy as np

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & MASK
    return h


def uniform(name, n):
    """The n values x_i in [-1, 1) of tensor `name` (float64)."""
    seed = np.uint64(fnv1a64(name))
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = seed + i * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return 2.0 * u - 1.0


def portable_weight(name, shape):
    """The generated float32 value of parameter `name` (see the module docs)."""
    n = int(np.prod(shape)) if len(shape) else 1
    if name.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    x = uniform(name, n)
    if name.endswith("conv.weight"):
        v = x * math.sqrt(6.0 / (shape[1] * shape[2] * shape[3]))
    elif name.endswith("bn.weight"):
        v = 1.0 + 0.1 * x
    elif name.endswith("bn.bias") or name.endswith("bn.running_mean") or name == "fc.bias":
        v = 0.1 * x
    elif name.endswith("bn.running_var"):
        v = 1.0 + 0.5 * x
    elif name == "fc.weight":
        v = x * math.sqrt(3.0 / shape[1])
    else:
        sys.exit(f"error: no generator rule for parameter {name!r} {list(shape)}")
    return v.astype(np.float32).reshape(shape)


def fid_inception_on_portable_weights():
    """pytorch-fid's InceptionV3 for FID, with `fid_inception_v3`'s download replaced by the
    portable weights of the network it has just built."""
    import torch
    import pytorch_fid.inception as inc

    built = {}
    make_torchvision_inception = inc._inception_v3

    def capture(*args, **kwargs):
        built["net"] = make_torchvision_inception(*args, **kwargs)
        return built["net"]

    def portable_state_dict(url, progress=True):
        # Called by fid_inception_v3 after it has patched in the FID blocks.
        shapes = {k: tuple(v.shape) for k, v in built["net"].state_dict().items()}
        return {k: torch.from_numpy(portable_weight(k, s)) for k, s in shapes.items()}

    inc._inception_v3, inc.load_state_dict_from_url = capture, portable_state_dict
    try:
        model = inc.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True)
    finally:
        inc._inception_v3 = make_torchvision_inception
    return model.eval(), built["net"].state_dict()


def images(rng):
    """u8 test images: smooth gradients plus noise, so that resizing has something to blend."""
    def image(n, c, h, w):
        yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
        base = np.stack([np.stack([(k + 1) * 80 * yy * xx + 60 * np.sin(7 * xx + k + b) for k in range(c)])
                         for b in range(n)])
        return np.clip(base + 90 + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)

    return {"gray28": image(1, 1, 28, 28), "rgb64x48": image(2, 3, 64, 48), "gray310": image(1, 1, 310, 300)}


def main():
    import torch
    import pytorch_fid
    from safetensors.numpy import save_file

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="safetensors file to write")
    args = parser.parse_args()

    torch.manual_seed(0)
    model32, state = fid_inception_on_portable_weights()
    model64 = fid_inception_on_portable_weights()[0].double()
    tensors = {}
    for key, u8 in images(np.random.default_rng(0)).items():
        tensors[f"input/{key}"] = u8
        x32 = torch.from_numpy(u8).float() / 255.0  # the input both sides use, in float32
        if x32.shape[1] == 1:
            x32 = x32.repeat(1, 3, 1, 1)
        with torch.no_grad():
            x = x32.double()
            feats = model64(x)[0].flatten(1)
            tensors[f"features/{key}"] = feats.numpy()
            tensors[f"features_f32/{key}"] = model32(x32)[0].flatten(1).numpy()
            # pytorch-fid's own intermediate blocks, run by hand in the same way as its forward.
            h = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            h = 2 * h - 1
            for b in range(3):
                h = model64.blocks[b](h)
                tensors[f"debug/{key}/block{b}_mean"] = h.mean(dim=(2, 3)).numpy()
        f = tensors[f"features/{key}"]
        rel32 = np.linalg.norm(tensors[f"features_f32/{key}"] - f) / np.linalg.norm(f)
        print(f"{key}: {list(u8.shape)} features mean {f.mean():.4f} std {f.std():.4f} min {f.min():.4f}; "
              f"float32 PyTorch rel L2 {rel32:.2e}")

    samples = {
        "Conv2d_1a_3x3.conv.weight": None,
        "Mixed_5b.branch5x5_2.conv.weight": 64,
        "Mixed_6b.branch7x7_2.conv.weight": 64,
        "Mixed_7c.branch_pool.bn.running_var": None,
        "Mixed_7c.branch_pool.bn.weight": None,
        "Mixed_7b.branch3x3dbl_1.bn.bias": None,
        "Conv2d_4a_3x3.bn.running_mean": None,
    }
    for name, count in samples.items():
        v = state[name].numpy().reshape(-1)
        tensors[f"generator/{name}"] = np.ascontiguousarray(v if count is None else v[:count])

    meta = {
        "model": "pytorch_fid.inception.InceptionV3([3], resize_input=True, normalize_input=True, "
                 "use_fid_inception=True) on portable random weights",
        "generator": "per tensor: seed = FNV-1a 64 of the name; x_i = 2 * ((splitmix64(seed + (i+1) * "
                     "0x9E3779B97F4A7C15) >> 11) * 2^-53) - 1; conv.weight x*sqrt(6/fan_in), bn.weight 1+0.1x, "
                     "bn.bias 0.1x, bn.running_mean 0.1x, bn.running_var 1+0.5x; f64 then f32",
        "input": "u8 / 255 in float32; 1-channel inputs repeated to 3 channels",
        "pytorch_fid": pytorch_fid.__version__,
        "torch": torch.__version__,
        "command": "python3 tools/make_inception_fixture.py " + os.path.basename(args.output),
    }
    tmp = args.output + ".tmp"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata=meta)
    os.replace(tmp, args.output)
    print(f"{args.output}: {len(tensors)} tensors, {os.path.getsize(args.output) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
