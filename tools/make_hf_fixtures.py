"""Tiny random-weight Hugging Face checkpoints of each model family we load,
with what `transformers` computes on them: the parity oracle for
tests/test_hf_models.cpp.

    tools/oracle_venv.sh
    .cache/oracle-venv/bin/python tools/make_hf_fixtures.py

For each family it writes tests/fixtures/hf/<family>/:
    config.json, model.safetensors   as save_pretrained writes them (some in
                                     bf16 or fp16, to test reading those)
    expected.safetensors             input_ids [2, T]; logits [2, T, V] in fp32
                                     from the saved weights; greedy [1, 32]: the
                                     32 tokens generate() picks after row 0
    expected.json                    what the checks need to know (dtype, ...)

`--check DIR FAMILY` instead loads a folder our code wrote and prints the
largest logit difference against the fixture's (the round-trip check).
Everything is seeded: rerunning writes the same files.
"""

import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "hf")

VOCAB = 384
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=128)


def families():
    T = transformers
    return {
        # GPT-2 with its own output head (tie_word_embeddings false).
        "gpt2_untied": (T.GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                     tie_word_embeddings=False, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0),
                        T.GPT2LMHeadModel, torch.float32),
        # Llama 3.x: grouped-query attention, rope_theta 500000, "llama3" RoPE scaling, untied head.
        "llama3": (T.LlamaConfig(**COMMON, num_key_value_heads=2, rope_theta=500000.0, rms_norm_eps=1e-5,
                                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
                                 tie_word_embeddings=False, bos_token_id=1, eos_token_id=[2, 3]),
                   T.LlamaForCausalLM, torch.bfloat16),
        # Llama 2 / TinyLlama: plain RoPE (theta 10000), as many key/value heads as heads.
        "llama2": (T.LlamaConfig(**COMMON, num_key_value_heads=4, rope_theta=10000.0, rms_norm_eps=1e-6,
                                 tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
                   T.LlamaForCausalLM, torch.float32),
        # Mistral: a sliding window larger than the context (exact).
        "mistral": (T.MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=4096, rope_theta=1000000.0,
                                    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
                    T.MistralForCausalLM, torch.float16),
        # Qwen2 / 2.5: q/k/v biases, tied embeddings.
        "qwen2": (T.Qwen2Config(**COMMON, num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                tie_word_embeddings=True, use_sliding_window=False, bos_token_id=1, eos_token_id=2),
                  T.Qwen2ForCausalLM, torch.bfloat16),
        # Qwen3: q/k RMSNorm, head_dim apart from hidden_size / heads.
        "qwen3": (T.Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=32, rope_theta=1000000.0,
                                rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
                  T.Qwen3ForCausalLM, torch.float32),
        # SmolLM2: Llama with tied embeddings and grouped-query attention.
        "smollm2": (T.LlamaConfig(**COMMON, num_key_value_heads=2, rope_theta=100000.0, rms_norm_eps=1e-5,
                                  tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
                    T.LlamaForCausalLM, torch.float32),
    }


def inputs():
    g = torch.Generator().manual_seed(7)
    return torch.randint(4, VOCAB, (2, 20), generator=g)


def build(name, config, cls, dtype):
    torch.manual_seed(1234)
    config.torch_dtype = "float32"
    model = cls(config).eval()
    # Larger than the 0.02 default so that every tensor moves the logits.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in pname or ".ln_" in pname):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))  # norm gains near 1
            else:
                p.normal_(0.0, 0.08)
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    model.to(dtype).save_pretrained(folder, safe_serialization=True)
    # The oracle runs in fp32 on what was saved.
    ref = cls.from_pretrained(folder, torch_dtype=torch.float32).eval()
    ids = inputs()
    with torch.no_grad():
        logits = ref(ids).logits.float().contiguous()
        greedy = ref.generate(ids[:1], max_new_tokens=32, min_new_tokens=32, do_sample=False,
                              pad_token_id=0, eos_token_id=None)[:, ids.shape[1]:].contiguous()
    save_file({"input_ids": ids.contiguous(), "logits": logits, "greedy": greedy},
              os.path.join(folder, "expected.safetensors"))
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump({"family": name, "model_type": config.model_type, "dtype_on_disk": str(dtype).split(".")[-1],
                   "transformers": transformers.__version__, "torch": torch.__version__}, f, indent=1)
    print(f"{name}: {sum(p.numel() for p in ref.parameters())} parameters, {dtype} on disk")


def compare(folder, reference):
    """transformers' logits for a folder against stored ones ({input_ids, logits})."""
    from safetensors.torch import load_file
    expected = load_file(reference)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(expected["input_ids"]).logits
    diff = (logits - expected["logits"]).abs().max().item()
    print(f"{folder} ({type(model).__name__}): max |transformers - {os.path.basename(reference)}| = {diff:.3g}")
    return diff


def check(folder, family):
    """A folder our code wrote from a fixture, against the fixture's logits."""
    return compare(folder, os.path.join(OUT, family, "expected.safetensors"))


def check_ours(folder):
    """A folder our pipeline wrote, against our own logits (ours.safetensors,
    written by tests/test_llama_e2e.cpp), and its tokenizer and chat template
    against our prompt ids (ours_prompt.json)."""
    diff = compare(folder, os.path.join(folder, "ours.safetensors"))
    prompt_path = os.path.join(folder, "ours_prompt.json")
    if os.path.exists(prompt_path):
        from transformers import AutoTokenizer
        ours = json.load(open(prompt_path))
        tok = AutoTokenizer.from_pretrained(folder)
        theirs = tok.apply_chat_template(ours["conversation"], add_generation_prompt=True, tokenize=True)
        same = theirs == ours["ids"]
        print(f"chat prompt ids: {'identical' if same else 'DIFFERENT'} ({len(theirs)} tokens)")
        if not same:
            return float("inf")
    return diff


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", nargs=2, metavar=("DIR", "FAMILY"))
    parser.add_argument("--check-ours", metavar="DIR")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    if args.check:
        sys.exit(0 if check(*args.check) <= 1e-4 else 1)
    if args.check_ours:
        sys.exit(0 if check_ours(args.check_ours) <= 1e-4 else 1)
    for name, (config, cls, dtype) in families().items():
        if args.only and name != args.only:
            continue
        build(name, config, cls, dtype)


if __name__ == "__main__":
    main()
