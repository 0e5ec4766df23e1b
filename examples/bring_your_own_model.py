"""Save a Hugging Face encoder in the suite's model contract, ready for deploy_existing_model.

Run:  python examples/bring_your_own_model.py my-encoder
Then: kfp-serve run deploy_existing_model --param model_uri=$PWD/my-encoder \
          --param publish_destination=$PWD/serving --param model_name=encoder

The model is built from a config so the example runs offline; with your checkpoint, load it
with ``AutoModel.from_pretrained(path)`` and make the example batch with your tokenizer:
``dict(tokenizer(texts, padding=True, return_tensors="pt"))``.
"""

import sys

import torch
from transformers import BertConfig, BertModel

from kfp_serve.components.model_artifact import save_torch_model
from kfp_serve.components.signature import ModelSignature, TensorSpec

torch.manual_seed(0)
config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, max_position_embeddings=64)
model = BertModel(config).eval()  # returns a ModelOutput; outputs are matched by name

# An example batch: every dynamic dim at least 2, and a padded row, so the mask path traced is
# the general one (a tokenizer with padding=True gives the same three tensors).
input_ids = torch.randint(1, config.vocab_size, (4, 12))
attention_mask = torch.ones(4, 12, dtype=torch.int64)
attention_mask[0, 9:] = 0
example = {"input_ids": input_ids, "attention_mask": attention_mask,
           "token_type_ids": torch.zeros(4, 12, dtype=torch.int64)}

signature = ModelSignature(
    inputs=tuple(TensorSpec(name, "int64", ("batch", "seq"))
                 for name in ("input_ids", "attention_mask", "token_type_ids")),
    outputs=(TensorSpec("last_hidden_state", "float32", ("batch", "seq", config.hidden_size)),
             TensorSpec("pooler_output", "float32", ("batch", config.hidden_size))),
)
folder = sys.argv[1] if len(sys.argv) > 1 else "my-encoder"
save_torch_model(model, signature, example, folder)
print(f"saved {folder}: model.pt2, model.ts, signature.json, golden.npz")
