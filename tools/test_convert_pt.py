#!/usr/bin/env python3
"""Tests of convert_pt.py: which state dict it picks out of a checkpoint (plain dicts, no torch
needed), and, where torch is installed, a DiT training checkpoint converted end to end.

    python3 tools/test_convert_pt.py        # run by `cargo test -p difftune-tests --test tools`
"""

import importlib.util
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_pt import ConvertError, choose_state_dict  # noqa: E402


class Tensor:
    """Stands for torch.Tensor in the tests that need no torch."""


def is_tensor(v):
    return isinstance(v, Tensor)


class ChooseStateDict(unittest.TestCase):
    def test_a_plain_state_dict_is_taken_as_it_is(self):
        sd = {"a.weight": Tensor(), "a.bias": Tensor(), "_version": 1}
        self.assertEqual(choose_state_dict(sd, None, is_tensor), (sd, None))

    def test_a_training_checkpoint_gives_its_ema_and_says_so(self):
        ema, model = {"w": Tensor()}, {"w": Tensor()}
        ckpt = {"model": model, "ema": ema, "opt": {"state": {}}, "args": object()}
        chosen, note = choose_state_dict(ckpt, None, is_tensor)
        self.assertIs(chosen, ema)
        self.assertIn("'ema'", note)
        # --key picks any of them, without a note.
        self.assertEqual(choose_state_dict(ckpt, "model", is_tensor), (model, None))

    def test_no_tensors_anywhere_is_refused_with_the_keys(self):
        for obj, key, needles in [
            ({"model": {"w": Tensor()}, "opt": {}}, None, ["'model'", "'opt'", "--key"]),
            ({"ema": {"step": 3}}, None, ["under 'ema'", "'step'"]),
            ({"model": {"w": Tensor()}}, "opt", ["no key 'opt'", "'model'"]),
            ({"opt": {"state": {}}}, "opt", ["under 'opt'", "'state'"]),
            ({"ema": [1, 2]}, None, ["found a list"]),
            ([Tensor()], None, ["a list"]),
            ({}, None, ["keys: []"]),
        ]:
            with self.assertRaises(ConvertError, msg=f"{obj} {key}") as e:
                choose_state_dict(obj, key, is_tensor)
            for needle in needles:
                self.assertIn(needle, str(e.exception))


@unittest.skipUnless(importlib.util.find_spec("torch"), "torch is not installed")
class ConvertWithTorch(unittest.TestCase):
    def test_a_dit_training_checkpoint_converts_its_ema(self):
        import argparse

        import torch

        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "convert_pt.py")
        with tempfile.TemporaryDirectory() as tmp:
            pt, out = os.path.join(tmp, "0000100.pt"), os.path.join(tmp, "out.safetensors")
            ema = {"x_embedder.proj.weight": torch.arange(6.0).reshape(2, 3), "pos_embed": torch.zeros(1, 4)}
            model = {k: v + 1 for k, v in ema.items()}
            opt = {"state": {}, "param_groups": [{"lr": 1e-4}]}
            torch.save({"model": model, "ema": ema, "opt": opt, "args": argparse.Namespace(model="DiT-S/2")}, pt)
            run = subprocess.run([sys.executable, script, pt, out], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertIn("'ema'", run.stderr)
            with open(out, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
                data = f.read()
            header.pop("__metadata__")
            self.assertEqual(sorted(header), sorted(ema))
            start, end = header["x_embedder.proj.weight"]["data_offsets"]
            self.assertEqual(list(struct.unpack("<6f", data[start:end])), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
            # The optimizer state holds no tensors: refused, naming its keys, and nothing written.
            os.remove(out)
            run = subprocess.run([sys.executable, script, pt, out, "--key", "opt"], capture_output=True, text=True)
            self.assertNotEqual(run.returncode, 0)
            self.assertIn("param_groups", run.stderr)
            self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    unittest.main()
