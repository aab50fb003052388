"""Settings: defaults, casting, and errors that name the key."""

from __future__ import annotations

import pytest

from sluice.config import ConfigError, load_config

# -- config ---------------------------------------------------------------------


def test_config_defaults_and_casts():
    config = load_config({})
    assert config["SLUICE_DEFAULT_MODEL"] == "demo/echo" and config["SLUICE_HOLD_S"] == 5.0
    assert load_config({"SLUICE_HEARTBEAT_S": "2.5"})["SLUICE_HEARTBEAT_S"] == 2.5


@pytest.mark.parametrize(
    ("key", "value"), [("SLUICE_HOLD_S", "soon"), ("SLUICE_MAX_STREAMS", "-1"), ("SLUICE_MAX_BODY_BYTES", "1.5")]
)
def test_config_error_names_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config({key: value})
