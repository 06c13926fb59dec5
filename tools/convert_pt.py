#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (.pt / .pth state dict) to safetensors, keeping the names.

    python3 tools/convert_pt.py DiT-XL-2-256.pt DiT-XL-2-256.safetensors
    python3 tools/convert_pt.py 0400000.pt ema.safetensors --key ema   # a DiT training checkpoint
    python3 tools/convert_pt.py pt_inception-2015-12-05-6726825d.pth pt_inception-2015-12-05.safetensors
                                          # pytorch-fid's FID Inception-v3 (models::inception)

The released DiT checkpoints are plain state dicts; DiT's training checkpoints hold several under
"model", "ema" and "opt" (choose one with --key; without it the moving average "ema" is taken and
stderr says so). A checkpoint in which no state dict of tensors is found is refused with its keys
listed, never written as an empty file. Tensors are written contiguous, in their own dtype,
in the safetensors layout (8-byte little-endian header length, JSON header, raw little-endian data),
so only torch is needed. The output is written to a temporary file and renamed into place.
"""

import argparse
import json
import os
import pickle
import struct
import sys

DTYPES = {
    "torch.float32": "F32", "torch.float64": "F64", "torch.float16": "F16", "torch.bfloat16": "BF16",
    "torch.uint8": "U8", "torch.int64": "I64", "torch.int32": "I32", "torch.bool": "BOOL",
}


class ConvertError(Exception):
    """A checkpoint that holds no state dict where one was looked for; the message says why."""


def describe_keys(obj):
    """The keys of a dict (or the type of anything else), for an error message."""
    return f"keys: {sorted(map(str, obj))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"


def choose_state_dict(obj, key, is_tensor):
    """The state dict (name -> tensor) to convert out of a loaded checkpoint `obj`, and a note for
    stderr (None when there is nothing to say).

    With `key`, the dict under that key. Without, `obj` itself when it holds tensors (a released
    checkpoint); else its "ema" entry (DiT's training checkpoints: "model", "ema", "opt", "args"),
    which is said in the note. Anything that leaves no tensor is a ConvertError listing the keys.
    `is_tensor` tells tensors from other values, so that this runs without torch.
    """
    note = None
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise ConvertError(f"the checkpoint has no key {key!r} ({describe_keys(obj)})")
        chosen, where = obj[key], f"under {key!r}"
    elif isinstance(obj, dict) and any(is_tensor(v) for v in obj.values()):
        chosen, where = obj, "at the top level"
    elif isinstance(obj, dict) and "ema" in obj:
        chosen, where = obj["ema"], "under 'ema'"
        note = "no tensors at the top level: converting the moving average under 'ema' (--key model for the raw weights)"
    else:
        raise ConvertError(f"no tensors at the top level ({describe_keys(obj)}); choose the state dict with --key")
    if not isinstance(chosen, dict):
        raise ConvertError(f"expected a state dict (name -> tensor) {where}, found a {type(chosen).__name__}")
    if not any(is_tensor(v) for v in chosen.values()):
        raise ConvertError(f"no tensors {where} ({describe_keys(chosen)}); choose the state dict with --key")
    return chosen, note


def load_checkpoint(path):
    """torch.load with weights only; DiT's training checkpoints also pickle their argparse.Namespace
    of arguments, a plain attribute holder that is allowed here."""
    import torch

    allow = getattr(torch.serialization, "safe_globals", None)
    try:
        if allow is None:
            return torch.load(path, map_location="cpu", weights_only=True)
        with allow([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise ConvertError(str(e)) from e


def main():
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="PyTorch checkpoint (.pt, .pth)")
    parser.add_argument("output", help="safetensors file to write")
    parser.add_argument("--key", help="take the state dict under this key (e.g. ema, model)")
    args = parser.parse_args()

    try:
        chosen, note = choose_state_dict(load_checkpoint(args.input), args.key, lambda v: isinstance(v, torch.Tensor))
    except ConvertError as e:
        sys.exit(f"error: {args.input}: {e}")
    if note:
        print(f"{args.input}: {note}", file=sys.stderr)
    tensors = {k: v for k, v in chosen.items() if isinstance(v, torch.Tensor)}
    skipped = len(chosen) - len(tensors)

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
