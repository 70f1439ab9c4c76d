"""`digitrec serve`'s settings: flags (None = not given) > DIGITREC_* environment > defaults, validated, with
messages that name the flag or the variable; and back to the environment for the worker processes."""

import re

import pytest

pytest.importorskip("pydantic_settings")

from digitrec.errors import DigitrecError  # noqa: E402
from digitrec.serve import settings  # noqa: E402
from digitrec.serve.config import DEFAULT_MAX_BYTES, Settings  # noqa: E402

FLAGS = ("host", "port", "model", "backend", "workers", "max_bytes", "max_concurrency", "cors_origin", "log_format",
         "log_level", "decode_workers", "decode_memory_mb", "decode_timeout", "model_threads")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in FLAGS:
        monkeypatch.delenv(f"DIGITREC_{name.upper()}", raising=False)
    return monkeypatch


def test_the_package_keeps_its_api_once_the_server_is_imported():
    import digitrec.serve
    from digitrec.serve import app  # noqa: F401  (imports every module of serve/)

    assert digitrec.serve.settings is settings and callable(digitrec.serve.serve)
    assert isinstance(digitrec.serve.settings({"port": 1}), Settings)


def test_defaults_when_nothing_is_given():
    s = settings({name: None for name in FLAGS} | {"cors_origin": []})  # what the CLI passes with no flags
    assert (s.host, s.port, s.model, s.backend, s.workers) == ("127.0.0.1", 8000, None, None, 1)
    assert (s.max_bytes, s.max_concurrency, s.cors_origin) == (DEFAULT_MAX_BYTES, 64, [])
    assert (s.log_format, s.log_level, s.model_threads) == ("text", "info", 1)
    assert (s.decode_memory_mb, s.decode_timeout) == (224, 1.5) and 1 <= s.decode_workers <= 2


def test_flags_win_over_the_environment_which_wins_over_defaults(clean_environment):
    clean_environment.setenv("DIGITREC_PORT", "9000")
    clean_environment.setenv("DIGITREC_MAX_BYTES", "1000")
    clean_environment.setenv("DIGITREC_DECODE_TIMEOUT", "2.5")
    clean_environment.setenv("DIGITREC_CORS_ORIGIN", "http://a.example, http://b.example,")
    clean_environment.setenv("DIGITREC_MODEL", "")  # empty: not set
    s = Settings.resolve({"max_bytes": 2_000_000, "port": None, "cors_origin": []})
    assert (s.port, s.max_bytes, s.decode_timeout, s.model) == (9000, 2_000_000, 2.5, None)
    assert s.cors_origin == ["http://a.example", "http://b.example"]
    assert Settings.resolve({"cors_origin": ["http://c.example"]}).cors_origin == ["http://c.example"]


@pytest.mark.parametrize("flags, message", [
    ({"workers": 0}, "--workers, --max-bytes, --max-concurrency, --decode-workers, --decode-memory-mb and "
                     "--model-threads must be positive"),
    ({"model_threads": 0}, "must be positive"),
    ({"port": 0}, "--port must be in 1-65535"),
    ({"port": 65536}, "--port must be in 1-65535"),
    ({"decode_timeout": 0.0}, "--decode-timeout must be positive"),
    ({"log_format": "xml"}, "--log-format must be text or json"),
    ({"log_level": "loud"}, "--log-level must be debug, info, warning, error or critical"),
])
def test_invalid_values_are_refused_with_the_flag_named(flags, message):
    with pytest.raises(DigitrecError, match=re.escape(message)):
        Settings.resolve(flags)


def test_a_value_in_the_environment_that_is_not_a_number_names_the_variable(clean_environment):
    clean_environment.setenv("DIGITREC_PORT", "eighty")
    with pytest.raises(DigitrecError) as e:
        Settings.resolve()
    assert str(e.value) == "DIGITREC_PORT='eighty' is not a valid int"
    clean_environment.delenv("DIGITREC_PORT")
    clean_environment.setenv("DIGITREC_DECODE_TIMEOUT", "soon")
    with pytest.raises(DigitrecError, match="^DIGITREC_DECODE_TIMEOUT='soon' is not a valid float$"):
        Settings.resolve()
    assert Settings.resolve({"decode_timeout": 1.0}).decode_timeout == 1.0  # the flag wins: the variable unread


def test_the_environment_written_for_the_workers_gives_the_same_settings(clean_environment):
    s = Settings.resolve({"port": 9100, "model": "m.safetensors", "cors_origin": ["http://a", "http://b"],
                          "log_level": "warning", "decode_timeout": 0.5})
    environ = s.to_environ()
    assert environ["DIGITREC_CORS_ORIGIN"] == "http://a,http://b" and environ["DIGITREC_BACKEND"] == ""
    assert environ["DIGITREC_PORT"] == "9100" and len(environ) == len(FLAGS)
    for name, value in environ.items():
        clean_environment.setenv(name, value)
    assert Settings.resolve() == s
