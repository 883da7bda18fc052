#!/usr/bin/env python3
"""A plain Python byte-level BPE encoder for the shared tokenizer.json files: the baseline that
tokenizer_bench's MB/s is set against (docs/benchmarks.md).

It does the same work as worker/tokenizer: the pre-tokenizer's Split regexes (Isolated, applied
in sequence; \\p{..} classes through the `regex` module when installed, else spelled out as
explicit ranges from `unicodedata` for the stdlib `re`), the GPT-2 byte-to-unicode
map, then rank-ordered BPE merges with a per-word cache (as HF tokenizers and ours do). Special
tokens are left out: the evaluation texts contain none. `--check` compares it with
../shared/tokenizers/reference_encodings.json first, so the baseline is known to do the same job.

Usage: tokenizer_baseline.py TOKENIZER_JSON TEXT_FILE [REPEATS] [--check REFERENCE_JSON NAME]
Prints one JSON line: bytes, tokens, cold and warm (mean of REPEATS) seconds and MB/s (1e6 B).
"""
import json
import re
import sys
import time
import unicodedata

try:
    import regex  # Debian: python3-regex
except ImportError:
    regex = None


def _category_class(prefixes):
    """The code points whose Unicode general category starts with one of prefixes, as the body
    of a `re` character class (ranges, escaped)."""
    out, start, prev = [], None, None
    for cp in range(0x110000):
        hit = unicodedata.category(chr(cp))[0] in prefixes
        if hit and start is None:
            start = cp
        if not hit and start is not None:
            out.append((start, prev))
            start = None
        prev = cp
    if start is not None:
        out.append((start, prev))
    esc = lambda cp: "\\U%08x" % cp
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in out)


def compile_pattern(pattern):
    """Compiles an Oniguruma-style pattern with \\p{L} etc.: `regex` if present, else `re` with
    the classes spelled out (same results on the shared tokenizers' patterns)."""
    if regex is not None:
        return regex.compile(pattern)
    classes = {}

    def cls(prefix):
        if prefix not in classes:
            classes[prefix] = _category_class(prefix)
        return classes[prefix]

    # \p{X} inside a [...] set contributes its ranges; outside, it becomes a set of its own.
    out, i, in_set = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and pattern.startswith("\\p{", i):
            j = pattern.index("}", i)
            body = cls(pattern[i + 3:j])
            out.append(body if in_set else f"[{body}]")
            i = j + 1
            continue
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == "[" and not in_set:
            in_set = True
        elif c == "]" and in_set:
            in_set = False
        out.append(c)
        i += 1
    return re.compile("".join(out))


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map (the ByteLevel pre-tokenizer)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class BpeTokenizer:
    def __init__(self, path):
        spec = json.load(open(path, encoding="utf-8"))
        pre = spec["pre_tokenizer"]
        steps = pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]
        self.patterns = []
        for step in steps:
            if step["type"] == "Split":
                if step["behavior"] != "Isolated" or step.get("invert"):
                    raise ValueError("only Isolated, non-inverted splits are implemented")
                self.patterns.append(compile_pattern(step["pattern"]["Regex"]))
            elif step["type"] == "ByteLevel":
                if step.get("use_regex") or step.get("add_prefix_space"):
                    raise ValueError("ByteLevel with its own regex/prefix space not implemented")
            else:
                raise ValueError(f"pre-tokenizer {step['type']} not implemented")
        model = spec["model"]
        self.vocab = model["vocab"]
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_map = bytes_to_unicode()
        self.cache = {}

    def split(self, text):
        pieces = [text]
        for pattern in self.patterns:
            out = []
            for piece in pieces:
                last = 0
                for m in pattern.finditer(piece):
                    if m.start() == m.end():
                        continue
                    if m.start() > last:
                        out.append(piece[last:m.start()])
                    out.append(m.group())
                    last = m.end()
                if last < len(piece):
                    out.append(piece[last:])
            pieces = out
        return pieces

    def bpe(self, word):
        symbols = list(word)
        ranks = self.ranks
        while len(symbols) > 1:
            best, best_rank = -1, None
            for i in range(len(symbols) - 1):
                r = ranks.get((symbols[i], symbols[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best < 0:
                break
            symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
        return [self.vocab[s] for s in symbols]

    def encode(self, text):
        ids = []
        cache = self.cache
        byte_map = self.byte_map
        for piece in self.split(text):
            got = cache.get(piece)
            if got is None:
                word = "".join(byte_map[b] for b in piece.encode("utf-8"))
                got = cache[piece] = self.bpe(word)
            ids.extend(got)
        return ids


def main():
    args = sys.argv[1:]
    check = None
    if "--check" in args:
        i = args.index("--check")
        check = (args[i + 1], args[i + 2])
        del args[i:i + 3]
    tok_path, text_path = args[0], args[1]
    repeats = int(args[2]) if len(args) > 2 else 3
    tok = BpeTokenizer(tok_path)
    matched = None
    if check:
        cases = json.load(open(check[0], encoding="utf-8"))[check[1]]
        matched = sum(tok.encode(c["text"]) == c["ids"] for c in cases)
        tok.cache.clear()
        check_total = len(cases)
    # Like tokenizer_bench: decode the file as UTF-8 with replacement, time the encode only.
    text = open(text_path, "rb").read().decode("utf-8", errors="replace")
    nbytes = len(text.encode("utf-8"))
    start = time.perf_counter()
    tokens = len(tok.encode(text))
    cold = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        tok.encode(text)
    warm = (time.perf_counter() - start) / repeats if repeats else 0.0
    out = {"engine": "regex" if regex is not None else "re", "text": text_path, "bytes": nbytes, "tokens": tokens, "repeats": repeats,
           "cold_s": round(cold, 4), "cold_mb_per_s": round(nbytes / 1e6 / cold, 3),
           "warm_s": round(warm, 4),
           "warm_mb_per_s": round(nbytes / 1e6 / warm, 3) if warm else 0.0}
    if check:
        out["reference_matched"] = matched
        out["reference_total"] = check_total
    print(json.dumps(out))


if __name__ == "__main__":
    main()
