"""Settings from the environment: defaults that work, one clear error for a bad value."""
import subprocess
import threading
import sys

import pytest

from app.config import Config, ConfigError
from pokegen.service_stack import ROOT


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
    # Unset, the restart follows a long stall timeout rather than refuse it.
    assert Config.from_env({"STALL_TIMEOUT": "1000"}).stall_restart_after == 1000.0
    # A restart sooner than the stall is even reported makes no sense.
    with pytest.raises(ConfigError, match="STALL_RESTART_AFTER must be 0 .* at least"):
        Config.from_env({"STALL_TIMEOUT": "10", "STALL_RESTART_AFTER": "5"})


def test_harakiri_is_derived_from_the_request_timeout():
    for timeout, harakiri in [("300", "360"), ("12.5", "73")]:
        result = subprocess.run([sys.executable, "-m", "app.config", "--harakiri"], cwd=ROOT,
                                text=True, capture_output=True,
                                env={"PATH": "/usr/bin:/bin", "REQUEST_TIMEOUT": timeout})
        assert (result.returncode, result.stdout) == (0, harakiri + "\n"), result.stderr


NUMERIC_SETTINGS = ["GENERATION_CONCURRENCY", "QUEUE_SIZE", "QUEUE_TIMEOUT", "REQUEST_TIMEOUT",
                    "LOADING_RETRY_AFTER", "SPECULATIVE_TOKENS", "PREFILL_CHUNK",
                    "CLIENT_GENERATION_LIMIT", "STALL_TIMEOUT", "STALL_RESTART_AFTER"]
EDGES = ["0", "-1", "-0.0", "nan", "inf", "-inf", "1e400", "", " ", "1e12", "9" * 30, "0x10",
         "1_000", "\u0661"]


@pytest.mark.parametrize("name", NUMERIC_SETTINGS)
def test_every_edge_of_every_setting_is_a_working_value_or_one_clear_error(name):
    from app.engine import Engine
    from app.engine.scheduler import SchedulerSettings

    for value in EDGES:
        try:
            config = Config.from_env({name: value})
        except ConfigError as error:
            assert str(error).startswith(name) and "\n" not in str(error), (value, error)
            continue
        # Accepted: the engine takes it as it is (building one loads nothing).
        Engine("nowhere", max_batch=config.generation_concurrency, max_queue=config.queue_size,
               queue_timeout=config.queue_timeout,
               scheduling=SchedulerSettings(speculative_tokens=config.speculative_tokens,
                                            prefill_chunk=config.prefill_chunk),
               max_per_client=config.client_generation_limit,
               loading_retry_after=config.loading_retry_after)
        # A wait of the accepted length fits the platform's clock (no OverflowError).
        for seconds in (config.queue_timeout, config.request_timeout, config.stall_timeout,
                        config.stall_restart_after, config.loading_retry_after):
            threading.Lock().acquire(timeout=seconds)


@pytest.mark.parametrize("name, value, reason", [
    ("QUEUE_TIMEOUT", "0", "QUEUE_TIMEOUT must be above 0, got '0'"),
    ("REQUEST_TIMEOUT", "1e12", "REQUEST_TIMEOUT must be at most 86400, got '1e12'"),
    ("GENERATION_CONCURRENCY", "1000000", "GENERATION_CONCURRENCY must be at most 256, "
                                          "got '1000000'"),
])
def test_the_app_refuses_a_bad_setting_with_one_line(name, value, reason):
    # What uWSGI runs in the containers (no `python -m app.config` before it).
    result = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, text=True,
                            capture_output=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", name: value,
                                 "CHECKPOINT_DIR": "/nonexistent"})
    assert (result.returncode, result.stderr) == (1, f"error: {reason}\n")
