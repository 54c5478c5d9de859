"""Write a small Hugging Face-layout checkpoint with real safetensors shards (the safetensors
library, no numpy): config.json, tokenizer files, N shards and model.safetensors.index.json.

    .venv/bin/python tests/tools/make_checkpoint.py OUT_DIR [--shards 2] [--floats 65536]
"""
import argparse
import ctypes
import json
import os
import struct

import safetensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--floats", type=int, default=65536)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    weight_map = {}
    for i in range(a.shards):
        name = "model-%05d-of-%05d.safetensors" % (i + 1, a.shards)
        data = struct.pack("<%df" % a.floats, *[float((i * 7 + j) % 97) for j in range(a.floats)])
        buf = ctypes.create_string_buffer(data, len(data))
        tensor = "model.layers.%d.weight" % i
        spec = safetensors.TensorSpec(dtype="float32", shape=[a.floats], data_ptr=ctypes.addressof(buf), data_len=len(data))
        safetensors.serialize_file({tensor: spec}, os.path.join(a.out, name))
        weight_map[tensor] = name
    files = {
        "config.json": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64},
        "model.safetensors.index.json": {"metadata": {}, "weight_map": weight_map},
        "tokenizer.json": {"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}},
        "tokenizer_config.json": {"model_max_length": 2048},
    }
    for name, body in files.items():
        with open(os.path.join(a.out, name), "w") as f:
            json.dump(body, f, sort_keys=True)


if __name__ == "__main__":
    main()
