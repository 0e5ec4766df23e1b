"""The golden set: sample inputs and reference outputs, saved and checked against the signature."""

import numpy as np
import pytest
from support import make_signature

from kfp_serve.components.errors import UserError
from kfp_serve.components.golden import GoldenSet


def test_golden_set_round_trip_and_checks(tmp_path):
    signature = make_signature()
    golden = GoldenSet(
        inputs={"ids": np.zeros((2, 5), np.int64), "mask": np.ones((2, 5), np.float32)},
        outputs={"scores": np.zeros((2, 3), np.float32)},
    )
    golden.check_against(signature)
    golden.save(tmp_path)
    loaded = GoldenSet.load(tmp_path)
    assert loaded.batch_size == 2
    np.testing.assert_array_equal(loaded.inputs["ids"], golden.inputs["ids"])
    assert loaded.slice(1, 2).inputs["mask"].shape == (1, 5)

    wrong = GoldenSet(inputs={"ids": np.zeros((2, 5), np.int32), "mask": golden.inputs["mask"]},
                      outputs=golden.outputs)
    with pytest.raises(UserError, match="golden input 'ids' is int32"):
        wrong.check_against(signature)


def test_corrupt_golden_file(tmp_path):
    (tmp_path / "golden.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="not a readable .npz file"):
        GoldenSet.load(tmp_path)
