"""Service settings: one frozen pydantic-settings object, read from ``FLOW_OPD_*`` environment variables.

Every default is here and nowhere else. The server binds to loopback unless told otherwise; the write token comes
from ``FLOW_OPD_TOKEN`` or from the file named by ``FLOW_OPD_TOKEN_FILE`` (never from the code, never from a
command-line argument, which ``ps`` would show). Without a token the server is read-only: imports and deletes
answer 403 and say how to configure one.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flowbase.errors import InputError
from results.store import DEFAULT_STORE

log = logging.getLogger(__name__)

MiB = 1024 * 1024


class Settings(BaseSettings):
    """How one server runs: where, which store, which scorers, and its limits."""

    model_config = SettingsConfigDict(env_prefix="FLOW_OPD_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    store: Path = DEFAULT_STORE
    scorers: Annotated[tuple[str, ...], NoDecode] = ()  # registry names; env: comma-separated
    token: SecretStr | None = None  # bearer token for POST/DELETE /v1/runs
    token_file: Path | None = None  # a file holding the token (first line)

    # request limits (each refusal is a 4xx naming the limit)
    max_request_bytes: int = Field(default=64 * MiB, ge=1024)
    max_images: int = Field(default=64, ge=1)  # images per /v1/score request
    max_pixels: int = Field(
        default=4096 * 4096, ge=1
    )  # width * height per image, read from the header
    body_timeout_s: float = Field(
        default=30.0, gt=0
    )  # whole body must arrive within this -> else 408

    # scoring
    batching: bool = True  # gather concurrent requests per scorer into one call
    batch_window_ms: float = Field(
        default=5.0, ge=0
    )  # how long the first request waits for company
    batch_max_images: int = Field(default=64, ge=1)  # images per gathered scorer call
    score_timeout_s: float = Field(default=120.0, gt=0)  # queue + scoring time before a 503

    # reads
    read_cache: bool = True  # serve repeated reads from memory while the store files are unchanged
    lock_timeout_s: float = Field(default=10.0, gt=0)  # wait for a writer's lock, then 503
    # the service keeps its store connection open between requests; it hands it over at once to another
    # process waiting for the file (`harness eval`, a CLI command), and closes it after this many idle seconds
    store_idle_s: float = Field(default=30.0, gt=0)
    page_size: int = Field(default=50, ge=1, le=500)  # default samples per page

    @field_validator("scorers", mode="before")
    @classmethod
    def _split_scorers(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(s.strip() for s in v.split(",") if s.strip())
        return v

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set FLOW_OPD_TOKEN or FLOW_OPD_TOKEN_FILE, not both")
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError(
                "the token must be at least 16 characters (use `openssl rand -hex 32`)"
            )
        if len(set(self.scorers)) != len(self.scorers):
            raise ValueError(f"scorers are listed twice: {', '.join(self.scorers)}")
        return self

    def write_token(self) -> str | None:
        """The bearer token that allows writes, or None (read-only server)."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is None:
            return None
        path = Path(self.token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise InputError(f"cannot read token file {path}: {e.strerror}") from None
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if len(token) < 16:
            raise InputError(f"token file {path} must hold a token of at least 16 characters")
        if os.name == "posix" and path.stat().st_mode & 0o077:
            log.warning("token file %s is readable by other users; chmod 600 it", path)
        return token

    @property
    def loopback(self) -> bool:
        """Whether ``host`` is a loopback address (only this machine can connect)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment plus ``overrides``; one ValueError line, never echoing a value (the token)."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"{'FLOW_OPD_' + str(err['loc'][0]).upper() if err['loc'] else 'settings'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        )
        raise InputError(f"bad service settings: {problems}") from None
