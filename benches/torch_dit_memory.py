#!/usr/bin/env python3
"""What PyTorch's autograd holds for one DiT-B/2 training step on the CPU, beside
`cargo run --release -p difftune-benches --bin dit_memory`: the bytes of the distinct storages
saved for backward (saved_tensors_hooks), i.e. the tape after the forward, and the step time.

    DIT_REF=/path/to/facebookresearch/DiT python3 benches/torch_dit_memory.py [batch]
"""

import os
import sys
import time

import torch


def main():
    ref = os.environ.get("DIT_REF")
    if not ref or not os.path.exists(os.path.join(ref, "models.py")):
        sys.exit("error: set DIT_REF to a checkout of facebookresearch/DiT (a folder with models.py)")
    sys.path.insert(0, ref)
    from models import DiT

    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = DiT(input_size=32, patch_size=2, in_channels=4, hidden_size=768, depth=12, num_heads=12, num_classes=1000)
    model.train()
    model.y_embedder.dropout_prob = 0.0  # same work as difftune's step (no label dropout)
    x = torch.randn(batch, 4, 32, 32)
    noise = torch.randn_like(x)
    t = torch.arange(batch) * 97 % 1000
    y = torch.arange(batch) * 31 % 1000
    params = sum(p.numel() for p in model.parameters())
    print(f"PyTorch {torch.__version__}, DiT-B/2, input 32x32x4, batch {batch}, f32, {params} parameters")
    for _ in range(3):
        storages = {}

        def pack(t):
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
            return t

        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x, t, y)
            loss = ((out[:, :4] - noise) ** 2).mean()
        param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
        saved = sum(n for ptr, n in storages.items() if ptr not in param_ptrs and ptr != x.untyped_storage().data_ptr())
        loss.backward()
        secs = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        print(f"saved for backward after forward: {saved / 2**20:.1f} MiB, step {secs:.2f} s")


if __name__ == "__main__":
    main()
