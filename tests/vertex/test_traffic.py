"""Traffic arithmetic: what a deploy, a promote and a rollback make of the live split."""

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.vertex.traffic import (
    apportion,
    deployed_name,
    promoted,
    read_deployed_name,
    rolled_back,
    with_new,
)


def test_traffic_split_is_computed_from_the_live_split():
    assert with_new({}, "0", 20) == {"0": 100}  # nothing else serves
    assert with_new({"a": 100}, "0", 20) == {"a": 80, "0": 20}
    assert with_new({"a": 50, "b": 50}, "0", 33) == {"a": 34, "b": 33, "0": 33}
    assert with_new({"a": 70, "b": 30}, "0", 100) == {"0": 100}  # a full rollout
    assert with_new({"a": 100}, "0", 0) == {"a": 100}  # deployed dark
    for current in ({"a": 1, "b": 2, "c": 97}, {"a": 33, "b": 33, "c": 34}):
        for percent in range(0, 98, 7):
            assert sum(with_new(current, "0", percent).values()) == 100


def test_a_model_that_serves_is_never_rounded_to_nothing():
    """A 1 % model beside a 99 % one keeps 1 % when a canary takes 50: rounded to 0 it would
    stay deployed, billed and idle."""
    assert with_new({"a": 1, "b": 99}, "0", 50) == {"a": 1, "b": 49, "0": 50}
    assert apportion({"a": 1.0, "b": 1000.0}, 10) == {"a": 1, "b": 9}
    with pytest.raises(UserError, match="traffic_percentage 99 leaves 1 % for the 3 models that"
                                        " serve now, each of which needs at least 1 %"):
        with_new({"a": 50, "b": 30, "c": 20}, "0", 99)


def test_promote_takes_only_the_shares_of_the_versions_it_replaced():
    current = {"old": 60, "canary": 20, "other-model": 20}
    assert promoted(current, "canary", {"old"}) == {"canary": 80, "other-model": 20}
    assert promoted({"canary": 100}, "canary", set()) == {"canary": 100}
    assert promoted({"other": 100, "canary": 0}, "canary", set()) == {"other": 100}


def test_rollback_gives_the_canary_share_back_to_what_served_before_in_its_proportions():
    previous = {"a": 75, "b": 25}
    # the canary took 20; another pipeline's canary came later and took 10 from everyone
    current = {"a": 54, "b": 18, "canary": 18, "later": 10}
    assert rolled_back(current, "canary", previous, {"a", "b", "canary", "later"}) == \
        {"a": 68, "b": 22, "later": 10}
    assert rolled_back({"canary": 100}, "canary", {}, {"canary"}) is None  # nothing to give back
    assert rolled_back({"a": 90, "canary": 10}, "canary", {"gone": 100}, {"a", "canary"}) is None
    assert rolled_back({"a": 100}, "canary", previous, {"a", "canary"}) == {"a": 100}  # had none


def test_the_split_a_deploy_found_travels_in_its_deployed_models_name():
    previous = {"4000000000000007919": 70, "4000000000000015838": 30}
    name = deployed_name("digits", "0123456789ab", previous)
    assert name.startswith("digits [kfp-serve 0123456789ab before n:") and len(name) <= 128
    assert read_deployed_name(name) == ("0123456789ab", previous)
    crowded = {str(4000000000000000000 + k): 1 for k in range(20)}
    assert read_deployed_name(deployed_name("digits", "0123456789ab", crowded)) == ("0123456789ab", None)
    assert read_deployed_name("digits") is None  # a deployed model the suite did not make
