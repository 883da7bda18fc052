#!/usr/bin/env python3
"""Writes a deeper copy of a shared tiny model: the memory check of docs/benchmarks.md.

Layer l of the copy takes the tensors of source layer l mod n (for DeepSeek-style models the
first_k_dense_replace dense layers are kept first and only the MoE layers repeat), one shard per
layer, as a real multi-hundred-GB checkpoint is laid out. The weights are real but the stacking
is not a trained model: use it for memory and speed, never for quality numbers.

Usage: make_deep_model.py SRC_DIR DST_DIR LAYERS     (stdlib only; prints one JSON line)
"""
import json
import os
import shutil
import struct
import sys


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def write_shard(path, tensors):
    """tensors: list of (name, dtype, shape, bytes). Offsets 8-aligned as safetensors writers do."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    return 8 + len(raw) + offset


def main():
    src, dst, layers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = json.load(open(os.path.join(src, "config.json")))
    index = json.load(open(os.path.join(src, "model.safetensors.index.json")))
    n_src = cfg["num_hidden_layers"]
    dense = cfg.get("first_k_dense_replace", 0) if cfg.get("n_routed_experts") else 0

    def source_layer(layer):
        if layer < dense:
            return layer
        return dense + (layer - dense) % (n_src - dense)

    # name -> (dtype, shape, bytes), read once from the source shards.
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        path = os.path.join(src, shard)
        header, base = read_header(path)
        with open(path, "rb") as f:
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                begin, end = info["data_offsets"]
                f.seek(base + begin)
                tensors[name] = (info["dtype"], info["shape"], f.read(end - begin))

    os.makedirs(dst, exist_ok=True)
    shards = layers + 1
    weight_map, total = {}, 0
    other = [(n, *t) for n, t in sorted(tensors.items()) if not n.startswith("model.layers.")]
    fname = f"model-{1:05d}-of-{shards:05d}.safetensors"
    total += write_shard(os.path.join(dst, fname), other)
    weight_map.update({n: fname for n, *_ in other})
    for layer in range(layers):
        prefix = f"model.layers.{source_layer(layer)}."
        group = [(f"model.layers.{layer}." + n[len(prefix):], *t)
                 for n, t in sorted(tensors.items()) if n.startswith(prefix)]
        fname = f"model-{layer + 2:05d}-of-{shards:05d}.safetensors"
        total += write_shard(os.path.join(dst, fname), group)
        weight_map.update({n: fname for n, *_ in group})
    payload = sum(len(tensors[n][2]) for n in tensors if not n.startswith("model.layers.")) + \
        sum(len(tensors[n][2]) for layer in range(layers) for n in tensors
            if n.startswith(f"model.layers.{source_layer(layer)}."))
    json.dump({"metadata": {"total_size": payload}, "weight_map": weight_map},
              open(os.path.join(dst, "model.safetensors.index.json"), "w"), indent=1)
    cfg["num_hidden_layers"] = layers
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=1)
    shutil.copy(os.path.join(src, "tokenizer.json"), dst)
    print(json.dumps({"bench": "make_deep_model", "src": src, "dst": dst, "layers": layers,
                      "shards": shards, "shard_bytes": total}))


if __name__ == "__main__":
    main()
