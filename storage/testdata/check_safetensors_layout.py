#!/usr/bin/env python3
"""Checks a safetensors file against the format spec with the standard library only.

Usage: check_safetensors_layout.py FILE NAME:DTYPE:SHAPE:VALUES...
Each NAME:DTYPE:SHAPE:VALUES (shape and values comma-separated, shape empty for a scalar) is an
expected tensor, in the order it was added to the writer. Exits non-zero with a message on the
first mismatch. Used by safetensors_test.cc; shares no code with the C++ reader.
"""
import json
import struct
import sys

FORMATS = {"F32": ("<f", 4), "F64": ("<d", 8), "I64": ("<q", 8), "I32": ("<i", 4),
           "I16": ("<h", 2), "I8": ("<b", 1), "U8": ("<B", 1), "BOOL": ("<B", 1),
           "BF16": (None, 2), "F16": ("<e", 2), "F8_E4M3": ("<B", 1)}


def fail(msg):
    print("check_safetensors_layout: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    path, specs = sys.argv[1], sys.argv[2:]
    blob = open(path, "rb").read()
    if len(blob) < 8:
        fail("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if (8 + n) % 8:
        fail("data section starts at %d, not a multiple of 8" % (8 + n))
    header = blob[8:8 + n].decode("utf-8")
    obj, end = json.JSONDecoder(object_pairs_hook=lambda pairs: pairs).raw_decode(header)
    if header[end:].strip(" ") or header[end:] != " " * (n - end):
        fail("header padding is not spaces: %r" % header[end:])
    if end > 0 and header[0] != "{":
        fail("header does not start with '{'")
    keys = [k for k, _ in obj]
    entries = dict(obj)
    if "__metadata__" in entries and keys[0] != "__metadata__":
        fail("__metadata__ is not the first key: %r" % keys)
    tensor_keys = [k for k in keys if k != "__metadata__"]
    want_names = [s.split(":")[0] for s in specs]
    if tensor_keys != want_names:
        fail("tensor order %r, expected insertion order %r" % (tensor_keys, want_names))
    data = blob[8 + n:]
    offset = 0
    for spec in specs:
        name, dtype, shape_s, values_s = spec.split(":")
        shape = [int(x) for x in shape_s.split(",")] if shape_s else []
        info = dict(entries[name])
        if info["dtype"] != dtype or info["shape"] != shape:
            fail("%s: got %s %r, expected %s %r" % (name, info["dtype"], info["shape"], dtype,
                                                    shape))
        begin, stop = info["data_offsets"]
        if begin != offset:
            fail("%s: begins at %d, expected %d (contiguous)" % (name, begin, offset))
        fmt, size = FORMATS[dtype]
        numel = 1
        for d in shape:
            numel *= d
        if stop - begin != numel * size:
            fail("%s: %d bytes for %d elements of %s" % (name, stop - begin, numel, dtype))
        raw = data[begin:stop]
        if fmt is None:  # bf16: the upper half of a float32
            vals = [struct.unpack("<f", struct.pack("<I", h << 16))[0]
                    for (h,) in struct.iter_unpack("<H", raw)]
        else:
            vals = [v for (v,) in struct.iter_unpack(fmt, raw)]
        want = [float(x) for x in values_s.split(",")] if values_s else []
        if [float(v) for v in vals] != want:
            fail("%s: values %r, expected %r" % (name, vals, want))
        offset = stop
    if offset != len(data):
        fail("data section is %d bytes, tensors cover %d" % (len(data), offset))


if __name__ == "__main__":
    main()
