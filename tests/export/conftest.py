"""Fixtures of the export tests: a multi-input transformer saved in the model contract."""

import pytest
from model_zoo import (
    build_text_encoder,
    text_encoder_inputs,
    text_encoder_signature,
)

from kfp_serve.components.model_artifact import save_torch_model


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """Two named inputs (int64 ids, float mask), dynamic batch and sequence, two outputs."""
    path = tmp_path_factory.mktemp("text") / "model"
    save_torch_model(build_text_encoder(), text_encoder_signature(3, 64),
                     text_encoder_inputs(4, 12), path, torchscript="script")
    return path
