#!/usr/bin/env python3
"""Independent decoder of exported checkpoints, written from docs/formats.md and DESIGN.md
section 7 alone (no code of ours): parses safetensors, unpacks weight_packed / zero points,
applies bf16 scales, and writes the float32 weights of the given modules, concatenated, to a
raw little-endian .f32 file. Python 3 standard library only.

usage: decode_ct.py CHECKPOINT_DIR OUT.f32 MODULE [MODULE ...]
"""
import json
import os
import re
import struct
import sys


class FormatError(Exception):
    pass


def read_safetensors_header(path):
    """Returns (header dict, data start offset) of a safetensors file."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise FormatError(f"{path}: shorter than 8 bytes")
        (n,) = struct.unpack("<Q", prefix)
        header = json.loads(f.read(n).decode("utf-8"))
    return header, 8 + n


class Checkpoint:
    def __init__(self, directory):
        self.dir = directory
        with open(os.path.join(directory, "config.json"), "rb") as f:
            self.config = json.load(f)
        with open(os.path.join(directory, "model.safetensors.index.json"), "rb") as f:
            self.weight_map = json.load(f)["weight_map"]
        self.headers = {}

    def tensor(self, name):
        """(dtype, shape, raw bytes) of a stored tensor."""
        if name not in self.weight_map:
            raise FormatError(f"{self.dir}: no tensor {name} in the index")
        path = os.path.join(self.dir, self.weight_map[name])
        if path not in self.headers:
            self.headers[path] = read_safetensors_header(path)
        header, data_start = self.headers[path]
        entry = header[name]
        begin, end = entry["data_offsets"]
        with open(path, "rb") as f:
            f.seek(data_start + begin)
            raw = f.read(end - begin)
        if len(raw) != end - begin:
            raise FormatError(f"{path}: {name} is truncated")
        return entry["dtype"], entry["shape"], raw


def ints(raw, fmt_char, size):
    return list(struct.unpack(f"<{len(raw) // size}{fmt_char}", raw))


def bf16_to_float(raw):
    """bf16 is the high half of a float32."""
    halves = struct.unpack(f"<{len(raw) // 2}H", raw)
    return list(struct.unpack(f"<{len(halves)}f", struct.pack(f"<{len(halves)}I",
                                                               *[h << 16 for h in halves])))


def unpack_stream(words, count, bits, word_aligned):
    """Values of one stream (a list of 32-bit words, LSB first)."""
    mask = (1 << bits) - 1
    if word_aligned:
        per = 32 // bits  # compressed-tensors: floor(32 / c) values per word
        return [(words[j // per] >> ((j % per) * bits)) & mask for j in range(count)]
    # Dense: value j at stream bits [j*c, j*c + c); stream bit k = bit k % 32 of word k / 32,
    # i.e. the words read as one little-endian integer.
    stream = 0
    for i, w in enumerate(words):
        stream |= (w & 0xFFFFFFFF) << (32 * i)
    return [(stream >> (j * bits)) & mask for j in range(count)]


def find_group(qc, module):
    """The config group of a module: exact target, then re: (from the start), then Linear."""
    groups = qc["config_groups"]
    for kind in ("exact", "regex", "class"):
        for name in sorted(groups):
            for target in groups[name]["targets"]:
                if kind == "exact" and target == module:
                    return groups[name]
                if kind == "regex" and target.startswith("re:") and re.match(target[3:], module):
                    return groups[name]
                if kind == "class" and target == "Linear":
                    return groups[name]
    raise FormatError(f"module {module} matches no config group")


def decode(ckpt, module):
    qc = ckpt.config["quantization_config"]
    method = qc["quant_method"]
    if method == "compressed-tensors":
        if qc["format"] != "pack-quantized":
            raise FormatError(f"format {qc['format']}")
        word_aligned = True
    elif method == "moe-quant-native":
        if qc["format"] != "dense-packed" or qc["version"] != 1:
            raise FormatError("native format/version")
        word_aligned = False
    else:
        raise FormatError(f"quant_method {method}")
    weights = find_group(qc, module)["weights"]
    bits = weights["num_bits"]
    symmetric = weights["symmetric"]

    dtype, shape, raw = ckpt.tensor(module + ".weight_shape")
    if dtype != "I64" or shape != [2]:
        raise FormatError(f"{module}.weight_shape is {dtype} {shape}")
    out, inp = struct.unpack("<2q", raw)
    group = inp if weights["strategy"] == "channel" else weights["group_size"]
    groups = (inp + group - 1) // group

    dtype, shape, raw = ckpt.tensor(module + ".weight_packed")
    row_words = (inp * bits + 31) // 32 if not word_aligned else (inp + 32 // bits - 1) // (32 // bits)
    if dtype != "I32" or shape != [out, row_words]:
        raise FormatError(f"{module}.weight_packed is {dtype} {shape}")
    words = ints(raw, "I", 4)  # the bits of each int32, as unsigned

    dtype, shape, raw = ckpt.tensor(module + ".weight_scale")
    if dtype != "BF16" or shape != [out, groups]:
        raise FormatError(f"{module}.weight_scale is {dtype} {shape}")
    scale = bf16_to_float(raw)

    if symmetric:
        zero = [1 << (bits - 1)] * (out * groups)
    else:
        dtype, shape, raw = ckpt.tensor(module + ".weight_zero_point")
        col_words = (out * bits + 31) // 32 if not word_aligned else (out + 32 // bits - 1) // (32 // bits)
        if dtype != "I32" or shape != [col_words, groups]:
            raise FormatError(f"{module}.weight_zero_point is {dtype} {shape}")
        zwords = ints(raw, "I", 4)
        zero = [0] * (out * groups)
        for k in range(groups):  # column k is one stream down the rows
            column = unpack_stream([zwords[w * groups + k] for w in range(col_words)], out, bits,
                                   word_aligned)
            for i in range(out):
                zero[i * groups + k] = column[i]

    values = []
    for i in range(out):
        codes = unpack_stream(words[i * row_words:(i + 1) * row_words], inp, bits, word_aligned)
        for j in range(inp):
            g = i * groups + j // group
            # s (8 significant bits) times a small integer is exact in a double, so packing to
            # float32 rounds once, as a float32 product does.
            values.append(scale[g] * (codes[j] - zero[g]))
    return struct.pack(f"<{len(values)}f", *values)


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        ckpt = Checkpoint(argv[1])
        with open(argv[2], "wb") as out:
            for module in argv[3:]:
                out.write(decode(ckpt, module))
    except (FormatError, KeyError, OSError, ValueError) as e:
        print(f"decode_ct.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
