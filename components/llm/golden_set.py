"""The golden set of an LLM checkpoint: greedy continuations computed with transformers in
float32 on the CPU, which a serving endpoint's answers are compared against.

Each entry keeps the prompt's token ids (raw prompts are sent to the server as ids, so parity
measures the model, not a second tokenizer), the greedy token ids and text, and the top-k
log-probabilities of every step: a server that picks another token where the reference's two
best were within a tolerance (a near tie that bf16 or quantized weights may flip) is told apart
from one that is wrong.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kfp_serve.components.errors import UserError

GOLDEN_FILE = "kfp_serve_golden.json"
CARD_FILE = "kfp_serve_llm_card.json"
DEFAULT_PROMPTS = ("The capital of France is", "def fibonacci(n):\n   ",
                   "A list comprehension in Python", "Once upon a time")
DEFAULT_CHAT = ("Say hello in three languages.", "What is a tensor?")


@dataclass(frozen=True)
class GoldenEntry:
    kind: str  # "completion" or "chat"
    prompt: Any  # the text, or the chat messages
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    #: per generated step: [[token id, log-probability], ...] best first
    top_logprobs: list[list[list[float]]] = field(default_factory=list)


@dataclass(frozen=True)
class GoldenSet:
    max_tokens: int
    top_k: int
    reference: str
    entries: list[GoldenEntry]

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / GOLDEN_FILE
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> GoldenSet:
        path = Path(folder) / GOLDEN_FILE
        if not path.is_file():
            raise UserError(f"{folder} has no {GOLDEN_FILE}; package the checkpoint with"
                            " package_llm_checkpoint (it writes the golden set)")
        data = json.loads(path.read_text())
        entries = [GoldenEntry(**entry) for entry in data.pop("entries")]
        return cls(entries=entries, **data)


def make_golden_set(folder: str | Path, prompts: list[str] | tuple[str, ...] = DEFAULT_PROMPTS,
                    chat_prompts: list[str] | tuple[str, ...] = DEFAULT_CHAT,
                    max_tokens: int = 16, top_k: int = 5) -> GoldenSet:
    """Greedy continuations of ``prompts`` and (with a chat template) of ``chat_prompts`` as user
    messages, from the checkpoint in ``folder`` in float32 on the CPU."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    requests: list[tuple[str, Any, list[int]]] = [
        ("completion", text, tokenizer(text)["input_ids"]) for text in prompts]
    if tokenizer.chat_template:
        for text in chat_prompts:
            messages = [{"role": "user", "content": text}]
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                tokenize=True, return_dict=False)
            requests.append(("chat", messages, list(ids)))
    entries = []
    for kind, prompt, ids in requests:
        tokens, steps = _greedy(model, ids, max_tokens, top_k, _stop_ids(model))
        entries.append(GoldenEntry(
            kind=kind, prompt=prompt, prompt_token_ids=list(ids), token_ids=tokens,
            text=tokenizer.decode(tokens, skip_special_tokens=True), top_logprobs=steps))
    return GoldenSet(max_tokens=max_tokens, top_k=top_k, entries=entries,
                     reference=f"transformers {transformers.__version__}, float32, CPU, greedy")


def _stop_ids(model: Any) -> list[int]:
    eos = model.generation_config.eos_token_id
    return list(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def _greedy(model: Any, ids: list[int], max_tokens: int, top_k: int,
            stop: list[int]) -> tuple[list[int], list[list[list[float]]]]:
    """Greedy decoding with none of the checkpoint's sampling defaults (a repetition penalty in
    generation_config.json would change the reference); the top-k log-probabilities of the raw
    logits of each step."""
    import torch
    from transformers import GenerationConfig

    plain = GenerationConfig(do_sample=False, max_new_tokens=max_tokens, eos_token_id=stop or None,
                             pad_token_id=(stop or [0])[0], output_logits=True,
                             return_dict_in_generate=True)
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), generation_config=plain,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    tokens = [int(t) for t in out.sequences[0, len(ids):]]
    steps = []
    for logits in out.logits[:len(tokens)]:
        best = torch.topk(torch.log_softmax(logits[0].float(), dim=-1), top_k)
        steps.append([[int(i), round(float(v), 6)] for v, i in zip(best.values, best.indices)])
    return tokens, steps
