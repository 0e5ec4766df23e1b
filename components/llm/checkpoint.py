"""Check a Hugging Face checkpoint before anything is published, and describe it (the LLM card).

Everything here reads files only: the config, the tokenizer files and the safetensors headers
(``safetensors.safe_open`` reads shapes and dtypes without loading a tensor), so checking a
70B checkpoint takes as long as checking a tiny one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kfp_serve.components.errors import UserError

PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
                "max_sequence_length")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
               "int8": 1, "uint8": 1, "int32": 4, "int64": 8, "float64": 8, "bool": 1}
#: safetensors' dtype names (``get_dtype``) as torch spells them
SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
                      "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I8": "int8",
                      "U8": "uint8", "I32": "int32", "I64": "int64", "BOOL": "bool"}


@dataclass(frozen=True)
class LlmCard:
    """What a deploy and a validation need to know about a checkpoint, without loading it."""

    architecture: str
    model_type: str
    parameters: int
    dtype: str  # the dtype the config asks vLLM to serve in (``auto``)
    weight_dtypes: tuple[str, ...]  # the dtypes the weight files store
    weight_bytes: int
    max_context: int
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    has_chat_template: bool
    eos_token_ids: tuple[int, ...]

    @property
    def kv_cache_bytes_per_token(self) -> int:
        """Key and value per layer, per KV head, in the serving dtype (what vLLM allocates)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES.get(self.dtype, 2)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LlmCard:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["weight_dtypes"] = tuple(fields.get("weight_dtypes", ()))
        fields["eos_token_ids"] = tuple(fields.get("eos_token_ids", ()))
        return cls(**fields)

    def markdown(self) -> str:
        from kfp_serve.components.report import Table

        rows = [
            ("architecture", f"`{self.architecture}` ({self.model_type})"),
            ("parameters", f"{self.parameters:,}"),
            ("serving dtype", self.dtype),
            ("weights", f"{', '.join(self.weight_dtypes)}, {self.weight_bytes / 2**20:,.1f} MiB"),
            ("maximum context", f"{self.max_context:,} tokens"),
            ("KV cache", f"{self.kv_cache_bytes_per_token:,} bytes per token ({self.layers} layers"
                         f" x {self.kv_heads} KV heads x {self.head_dim})"),
            ("chat template", "yes" if self.has_chat_template else "no (completions only)"),
        ]
        return Table(("", "value"), [list(row) for row in rows]).markdown()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is not readable JSON ({err}); fix or replace the file") from err
    if not isinstance(data, dict):
        raise UserError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def known_architectures() -> set[str]:
    """The causal-LM classes transformers ships (no remote code)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def check_checkpoint(folder: str | Path, allow_pickle: bool = False,
                     require_chat_template: bool = True) -> LlmCard:
    """The card of the Hugging Face checkpoint in ``folder``; UserError in one line naming the
    first thing a server would trip on (and what to change)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json: pass a Hugging Face model folder"
                        " (save_pretrained's output)")
    config = _read_json(folder / "config.json")
    if config.get("auto_map"):
        raise UserError(f"{folder}/config.json needs remote code (auto_map"
                        f" {sorted(config['auto_map'])}); serve an architecture transformers"
                        " ships — the suite never runs a checkpoint's own Python")
    architectures = config.get("architectures") or []
    if not architectures:
        raise UserError(f"{folder}/config.json names no architectures; save the model with"
                        " save_pretrained from its *ForCausalLM class")
    architecture = architectures[0]
    if architecture not in known_architectures():
        raise UserError(f"{architecture} is not a causal language model transformers knows"
                        " without remote code; export a *ForCausalLM checkpoint")
    text = config.get("text_config") or config  # multimodal configs nest the language model
    weights = sorted(folder.glob("*.safetensors"))
    pickled = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if pickled and not weights and not allow_pickle:
        raise UserError(f"{folder} holds pickle weights ({', '.join(pickled[:3])}), which run code"
                        " when loaded; convert them to safetensors (save_pretrained(...,"
                        " safe_serialization=True)) or set allow_pickle=True")
    if not weights and not pickled:
        raise UserError(f"{folder} has no weights (*.safetensors); save the model with"
                        " save_pretrained")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{folder} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); save the"
                        " tokenizer with tokenizer.save_pretrained into the same folder")
    tokenizer_config = (_read_json(folder / "tokenizer_config.json")
                        if (folder / "tokenizer_config.json").is_file() else {})
    has_chat = bool(tokenizer_config.get("chat_template")) or any(
        (folder / name).is_file() for name in ("chat_template.jinja", "chat_template.json"))
    if require_chat_template and not has_chat:
        raise UserError(f"{folder} has no chat template (tokenizer_config.json chat_template or"
                        " chat_template.jinja), so /v1/chat/completions would fail; add one, or"
                        " set require_chat_template=False to serve completions only")
    if not (folder / "generation_config.json").is_file():
        raise UserError(f"{folder} has no generation_config.json; vLLM reads its stop tokens and"
                        " sampling defaults from it: save model.generation_config there")
    generation = _read_json(folder / "generation_config.json")
    parameters, weight_bytes, dtypes = (_safetensors_sizes(weights) if weights
                                        else _pickle_sizes(folder, pickled))
    dtype = str(text.get("dtype") or text.get("torch_dtype") or config.get("torch_dtype")
                or (dtypes[0] if dtypes else "float32")).replace("torch.", "")
    context = _max_context(text, tokenizer_config)
    heads = int(text.get("num_attention_heads") or text.get("n_head") or 0)
    if not context or not heads:
        raise UserError(f"{folder}/config.json gives no maximum context ({'/'.join(CONTEXT_KEYS)})"
                        " or attention heads; the suite cannot size the KV cache")
    hidden = int(text.get("hidden_size") or text.get("n_embd") or 0)
    eos = generation.get("eos_token_id", config.get("eos_token_id"))
    return LlmCard(
        architecture=architecture, model_type=str(config.get("model_type", "")),
        parameters=parameters, dtype=dtype, weight_dtypes=tuple(dtypes),
        weight_bytes=weight_bytes, max_context=context,
        layers=int(text.get("num_hidden_layers") or text.get("n_layer") or 0),
        attention_heads=heads, kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or (hidden // heads)),
        vocab_size=int(text.get("vocab_size") or 0), has_chat_template=has_chat,
        eos_token_ids=tuple(eos if isinstance(eos, list) else [eos] if eos is not None else []),
    )


def _max_context(text: dict[str, Any], tokenizer_config: dict[str, Any]) -> int:
    context = next((int(text[key]) for key in CONTEXT_KEYS if text.get(key)), 0)
    tokenizer_limit = tokenizer_config.get("model_max_length")
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < (context or 2**31):
        context = tokenizer_limit  # transformers' "no limit" is a huge number
    return context


def _safetensors_sizes(files: list[Path]) -> tuple[int, int, list[str]]:
    from safetensors import safe_open

    parameters, stored, dtypes = 0, 0, []
    for path in files:
        try:
            with safe_open(str(path), framework="numpy") as handle:
                names = handle.keys()  # a safe_open handle is not iterable
                for name in names:
                    tensor = handle.get_slice(name)
                    count = 1
                    for size in tensor.get_shape():
                        count *= size
                    dtype = SAFETENSORS_DTYPES.get(tensor.get_dtype(), tensor.get_dtype().lower())
                    parameters += count
                    stored += count * DTYPE_BYTES.get(dtype, 2)
                    if dtype not in dtypes:
                        dtypes.append(dtype)
        except Exception as err:  # safetensors raises its own error types
            raise UserError(f"{path} is not a readable safetensors file ({err}); save the"
                            " weights again") from err
    return parameters, stored, dtypes


def _pickle_sizes(folder: Path, names: list[str]) -> tuple[int, int, list[str]]:
    import torch

    parameters, stored, dtypes = 0, 0, []
    for name in names:
        state = torch.load(folder / name, map_location="cpu", weights_only=True, mmap=True)
        for tensor in state.values():
            if hasattr(tensor, "numel"):
                parameters += tensor.numel()
                stored += tensor.numel() * tensor.element_size()
                dtype = str(tensor.dtype).replace("torch.", "")
                if dtype not in dtypes:
                    dtypes.append(dtype)
    return parameters, stored, dtypes
