"""Write a small REAL model that vLLM loads and serves, with no hub: a random-weight Llama
(hidden 64, 2 layers, head size 32, float32) written with `transformers`, a byte-level BPE
tokenizer trained here with `tokenizers`, a chat template, and optionally a LoRA adapter for it
(PEFT layout: adapter_config.json + adapter_model.safetensors, rank 8 on q_proj and v_proj).

Deterministic: the same versions (serving/images/vllm-cpu.lock) write the same bytes, so the
checkpoint's manifest digest is stable. Run it with the Python of the vLLM venv, which has torch,
transformers and tokenizers:

    $(serving/images/build.sh vllm-env)/bin/python tests/tools/make_model.py OUT_DIR [--lora LORA_DIR]

The weights are random: the model answers with nonsense tokens, which is all a serving test needs
(real text through the real engine, real tokenizer, real chat template). About 230 KB.
"""
import argparse
import json
import sys
from pathlib import Path

CORPUS = ["The site serves a small model on a CPU.", "Hello, how are you today?", "one two three four five six",
          "A checkpoint travels on a USB stick to a site with no internet."] * 50
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")
HIDDEN, HEAD_DIM, HEADS, LAYERS, RANK = 64, 32, 2, 2, 8


def make_model(out):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=384, special_tokens=["<s>", "</s>", "<pad>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                      num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                      head_dim=HEAD_DIM, max_position_embeddings=4096, bos_token_id=fast.bos_token_id,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(out, safe_serialization=True)
    # float32 on the CPU: vLLM reads the dtype from config.json.
    data = json.loads((out / "config.json").read_text())
    data["torch_dtype"] = data["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    for f in out.iterdir():
        f.chmod(0o644)


def make_lora(out, base_name):
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1)
    tensors = {}
    for layer in range(LAYERS):
        for proj in ("q_proj", "v_proj"):
            prefix = "base_model.model.model.layers.%d.self_attn.%s" % (layer, proj)
            tensors[prefix + ".lora_A.weight"] = torch.randn(RANK, HIDDEN, generator=gen) * 0.01
            tensors[prefix + ".lora_B.weight"] = torch.randn(HEADS * HEAD_DIM, RANK, generator=gen) * 0.01
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = dict(peft_type="LORA", task_type="CAUSAL_LM", r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0, bias="none",
               target_modules=["q_proj", "v_proj"], fan_in_fan_out=False, modules_to_save=None,
               base_model_name_or_path=base_name, inference_mode=True)
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    for f in out.iterdir():
        f.chmod(0o644)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("out", type=Path, help="directory for the model")
    ap.add_argument("--lora", type=Path, help="also write a LoRA adapter for it here")
    a = ap.parse_args(argv)
    make_model(a.out)
    if a.lora:
        make_lora(a.lora, a.out.name)
    size = sum(f.stat().st_size for d in (a.out, a.lora) if d for f in d.iterdir())
    print("MODEL_OK %d bytes" % size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
