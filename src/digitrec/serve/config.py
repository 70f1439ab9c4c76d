"""The server's settings (pydantic-settings): each option from its flag (None = not given), else the
DIGITREC_<OPTION> environment variable (an empty one counts as not set), else its default; then validated.

`serve` writes the settings it resolved back into the environment (`to_environ`), so that every worker
process of `--workers N` builds the same ones (`app.app_from_env`).  Errors are DigitrecErrors in the CLI's
words: which variable or flag, and what it must be.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from digitrec.errors import DigitrecError
from digitrec.serve.sandbox import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MEMORY_MB,
    DEFAULT_WORKERS,
)

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIGITREC_", env_ignore_empty=True, protected_namespaces=())

    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None
    backend: str | None = None
    workers: int = 1
    max_bytes: int = DEFAULT_MAX_BYTES
    max_concurrency: int = 64
    cors_origin: Annotated[list[str], NoDecode] = []  # DIGITREC_CORS_ORIGIN: origins separated by commas
    log_format: str = "text"
    log_level: str = "info"
    decode_workers: int = DEFAULT_WORKERS
    decode_memory_mb: int = DEFAULT_MEMORY_MB
    decode_timeout: float = DEFAULT_DEADLINE_S
    model_threads: int = 1

    @classmethod
    def resolve(cls, flags: dict | None = None) -> Settings:
        """Each option from its flag if given (not None, not an empty list), else DIGITREC_<NAME>, else the
        default; validated."""
        given = {name: value for name, value in (flags or {}).items() if value is not None and value != []}
        try:
            return cls(**given)
        except ValidationError as e:
            raise DigitrecError(_invalid(e, given)) from None

    @field_validator("cors_origin", mode="before")
    @classmethod
    def _origins(cls, value):
        return [o.strip() for o in value.split(",") if o.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        # (a DigitrecError is no ValueError: pydantic lets it through as it is)
        if min(self.workers, self.max_bytes, self.max_concurrency, self.decode_workers, self.decode_memory_mb,
               self.model_threads) < 1:
            raise DigitrecError("--workers, --max-bytes, --max-concurrency, --decode-workers, "
                                "--decode-memory-mb and --model-threads must be positive")
        if not 0 < self.port < 65536:
            raise DigitrecError("--port must be in 1-65535")
        if self.decode_timeout <= 0:
            raise DigitrecError("--decode-timeout must be positive")
        if self.log_format not in ("text", "json"):
            raise DigitrecError("--log-format must be text or json")
        if self.log_level.lower() not in LOG_LEVELS:
            raise DigitrecError("--log-level must be debug, info, warning, error or critical")
        return self

    def to_environ(self) -> dict[str, str]:
        """DIGITREC_<NAME> for every option, as resolve() reads them back ("" for None: not set)."""
        return {f"DIGITREC_{name.upper()}": (",".join(value) if isinstance(value, list) else
                                            "" if value is None else str(value))
                for name, value in self.model_dump().items()}


def _invalid(error: ValidationError, flags: dict) -> str:
    """The first wrong value, named as it was given: DIGITREC_PORT='x' is not a valid int."""
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "?"
    kind = {"int": "int", "float": "float"}.get(first["type"].partition("_")[0], "value")
    where = f"--{name.replace('_', '-')}" if name in flags else f"DIGITREC_{name.upper()}"
    return f"{where}={first.get('input')!r} is not a valid {kind}"
