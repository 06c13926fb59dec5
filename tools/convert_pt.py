#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (.pt / .pth state dict) to safetensors, keeping the names.

    python3 tools/convert_pt.py DiT-XL-2-256.pt DiT-XL-2-256.safetensors
    python3 tools/convert_pt.py 0400000.pt ema.safetensors --key ema   # a DiT training checkpoint
    python3 tools/convert_pt.py pt_inception-2015-12-05-6726825d.pth pt_inception-2015-12-05.safetensors
                                          # pytorch-fid's FID Inception-v3 (models::inception)

The released DiT checkpoints are plain state dicts; DiT's training checkpoints hold several under
"model", "ema" and "opt" (choose one with --key). Tensors are written contiguous, in their own dtype,
in the safetensors layout (8-byte little-endian header length, JSON header, raw little-endian data),
so only torch is needed. The output is written to a temporary file and renamed into place.
"""

import argparse
import json
import os
import struct
import sys

DTYPES = {
    "torch.float32": "F32", "torch.float64": "F64", "torch.float16": "F16", "torch.bfloat16": "BF16",
    "torch.uint8": "U8", "torch.int64": "I64", "torch.int32": "I32", "torch.bool": "BOOL",
}


def state_dict(obj, key):
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            sys.exit(f"error: the checkpoint has no key {key!r} (keys: {sorted(obj) if isinstance(obj, dict) else type(obj)})")
        obj = obj[key]
    if not isinstance(obj, dict):
        sys.exit(f"error: expected a state dict (name -> tensor), found {type(obj).__name__}")
    return obj


def main():
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="PyTorch checkpoint (.pt, .pth)")
    parser.add_argument("output", help="safetensors file to write")
    parser.add_argument("--key", help="take the state dict under this key (e.g. ema, model)")
    args = parser.parse_args()

    try:
        obj = torch.load(args.input, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        sys.exit(f"error: {args.input}: {e}")
    tensors = {k: v for k, v in state_dict(obj, args.key).items() if isinstance(v, torch.Tensor)}
    skipped = len(state_dict(obj, args.key)) - len(tensors)

    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        if str(t.dtype) not in DTYPES:
            sys.exit(f"error: tensor {name!r} has dtype {t.dtype}, which safetensors cannot hold here")
        # Flattened first: a 0-dim tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes.
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[str(t.dtype)], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt", "converted_from": os.path.basename(args.input)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data to 8 bytes

    tmp = args.output + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for c in chunks:
            f.write(c)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, args.output)
    print(f"{args.output}: {len(tensors)} tensors, {offset / 2**20:.1f} MiB" + (f" ({skipped} non-tensor entries skipped)" if skipped else ""))


if __name__ == "__main__":
    main()
