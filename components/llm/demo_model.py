"""A tiny Llama checkpoint made on this machine: the LLM pipelines' embedded default.

Random weights from a config and a byte-level BPE tokenizer trained on text that ships with
Python (``pydoc_data.topics``), so nothing is downloaded. The model says nothing sensible, but
it is a real Hugging Face checkpoint: vLLM serves it and transformers computes the same greedy
tokens, which is what parity and load checks need.
"""

from __future__ import annotations

import json
from pathlib import Path

#: a minimal chat template (Jinja, as transformers and vLLM read it from tokenizer_config.json)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ("<s>", "</s>", "<unk>", "<pad>")


def training_text() -> list[str]:
    """Paragraphs of the Python documentation that ships with the interpreter."""
    from pydoc_data import topics

    return [text for text in topics.topics.values() if text.strip()]


def build_demo_llm(destination: str | Path, vocab_size: int = 2048, hidden_size: int = 128,
                   layers: int = 2, heads: int = 2, max_positions: int = 1024,
                   seed: int = 0) -> Path:
    """Write a tiny Llama checkpoint (safetensors, tokenizer, chat template, generation config)
    to ``destination`` and return it. Attention heads are 64 wide: vLLM's CPU kernels refuse 16."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = max_positions
    fast.save_pretrained(destination)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=hidden_size,
        intermediate_size=hidden_size * 2, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=heads, max_position_embeddings=max_positions,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id, tie_word_embeddings=False, torch_dtype="float32",
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(destination, safe_serialization=True)
    generation = destination / "generation_config.json"
    if not generation.is_file():  # transformers writes it only where it differs from defaults
        generation.write_text(json.dumps({"bos_token_id": fast.bos_token_id,
                                          "eos_token_id": fast.eos_token_id}, indent=2) + "\n")
    return destination
