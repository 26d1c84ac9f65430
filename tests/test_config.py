"""Settings from the environment: defaults that work, one clear error for a bad value."""
import subprocess
import sys

import pytest

from app.config import Config, ConfigError
from service_stack import ROOT


def test_defaults_match_the_article():
    config = Config.from_env({})
    assert (config.checkpoint_dir, config.run_name, config.generation_concurrency) == \
        ("checkpoint", "run1", 3)


def test_values_are_read_from_the_environment():
    config = Config.from_env({"CHECKPOINT_DIR": "/models", "RUN_NAME": "run7",
                              "GENERATION_CONCURRENCY": "8", "QUEUE_SIZE": "0",
                              "QUEUE_TIMEOUT": "2.5", "REQUEST_TIMEOUT": "60",
                              "WEIGHT_DTYPE": "float32", "SPECULATIVE_TOKENS": "0",
                              "PREFILL_CHUNK": "64"})
    assert (config.checkpoint_dir, config.run_name, config.generation_concurrency,
            config.queue_size, config.queue_timeout, config.request_timeout,
            config.weight_dtype, config.speculative_tokens, config.prefill_chunk) == \
        ("/models", "run7", 8, 0, 2.5, 60.0, "float32", 0, 64)


@pytest.mark.parametrize("name, value", [("GENERATION_CONCURRENCY", "0"), ("QUEUE_SIZE", "x"),
                                         ("QUEUE_TIMEOUT", "nan"), ("REQUEST_TIMEOUT", "-1"),
                                         ("GENERATION_CONCURRENCY", "2.5"),
                                         ("WEIGHT_DTYPE", "float16"),
                                         ("SPECULATIVE_TOKENS", "-1"), ("PREFILL_CHUNK", "0")])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


def test_the_check_command_prints_one_line_for_a_bad_value():
    result = subprocess.run([sys.executable, "-m", "app.config"], cwd=ROOT, text=True,
                            capture_output=True, env={"QUEUE_SIZE": "lots", "PATH": "/usr/bin"})
    assert result.returncode == 1
    assert result.stderr == "error: QUEUE_SIZE must be an integer, got 'lots'\n"


def test_fairness_and_stall_settings():
    defaults = Config.from_env({})
    assert (defaults.client_generation_limit, defaults.stall_timeout,
            defaults.stall_restart_after) == (4, 30.0, 120.0)
    config = Config.from_env({"CLIENT_GENERATION_LIMIT": "2", "STALL_TIMEOUT": "5",
                              "STALL_RESTART_AFTER": "0"})
    assert (config.client_generation_limit, config.stall_timeout,
            config.stall_restart_after) == (2, 5.0, 0.0)
    for name, value in [("CLIENT_GENERATION_LIMIT", "0"), ("STALL_TIMEOUT", "0.5"),
                        ("STALL_RESTART_AFTER", "-1")]:
        with pytest.raises(ConfigError, match=name):
            Config.from_env({name: value})
    # A restart sooner than the stall is even reported makes no sense.
    with pytest.raises(ConfigError, match="STALL_RESTART_AFTER must be 0 .* at least"):
        Config.from_env({"STALL_TIMEOUT": "10", "STALL_RESTART_AFTER": "5"})


def test_harakiri_is_derived_from_the_request_timeout():
    for timeout, harakiri in [("300", "360"), ("12.5", "73")]:
        result = subprocess.run([sys.executable, "-m", "app.config", "--harakiri"], cwd=ROOT,
                                text=True, capture_output=True,
                                env={"PATH": "/usr/bin:/bin", "REQUEST_TIMEOUT": timeout})
        assert (result.returncode, result.stdout) == (0, harakiri + "\n"), result.stderr
