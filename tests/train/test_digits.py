"""Training the digits CNN: its accuracy gate."""

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.train.digits import train_digits


def test_accuracy_gate_fails_training(tmp_path):
    with pytest.raises(UserError, match=r"test accuracy 0\.\d+ is below min_accuracy=0.999"):
        train_digits(tmp_path / "m", epochs=1, min_accuracy=0.999)
    assert not (tmp_path / "m").exists()
