"""Settings: defaults, casting, and errors that name the key."""

from __future__ import annotations

import pytest

from app import create_app
from sluice.config import ConfigError, load_config

# -- config ---------------------------------------------------------------------


def test_config_defaults_and_casts():
    config = load_config({})
    # Unset, the default model depends on the local provider: create_app decides (below).
    assert config["SLUICE_DEFAULT_MODEL"] is None and config["SLUICE_HOLD_S"] == 5.0
    assert config["SLUICE_LOCAL_MODEL"] == "" and config["SLUICE_LOCAL_CTX"] == 2048
    assert load_config({"SLUICE_HEARTBEAT_S": "2.5"})["SLUICE_HEARTBEAT_S"] == 2.5


def test_the_default_model_is_the_local_one_unless_it_is_off(tmp_path):
    def default_model(**environ: str) -> str:
        return create_app(load_config(environ)).config["SLUICE_DEFAULT_MODEL"]

    # Creating the app starts nothing: the model server starts with gunicorn, or on first use.
    assert default_model() == "local/smollm2-135m"
    assert default_model(SLUICE_LOCAL_MODEL="off") == "demo/echo"
    assert default_model(SLUICE_LOCAL_MODEL="OFF", SLUICE_DEFAULT_MODEL="ollama/llama3") == "ollama/llama3"
    other = tmp_path / "Qwen3-4B-Q4_K_M.gguf"
    other.write_bytes(b"GGUF")
    assert default_model(SLUICE_LOCAL_MODEL=str(other)) == "local/Qwen3-4B-Q4_K_M"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SLUICE_HOLD_S", "soon"),
        ("SLUICE_MAX_STREAMS", "-1"),
        ("SLUICE_MAX_BODY_BYTES", "1.5"),
        ("SLUICE_LOCAL_MODEL", "/nowhere/model.gguf"),
        ("SLUICE_LOCAL_PARALLEL", "0"),
        ("SLUICE_LOCAL_CTX", "large"),
    ],
)
def test_config_error_names_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config({key: value})
