"""Value types shared by the settings models: strict numbers, checked URLs, cross-field problems.

Numbers are strict where the server's are: ``true`` is not a port and ``inf`` is not an
interval.  URL checks never put the URL itself into their message (it may hold a password).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from worker.config.show import masked


class Strict(BaseModel):
    """Unknown keys are errors (with the closest valid name), never silently ignored; the repr
    (in a log line or a ``--debug`` traceback) masks secrets, also inside URLs."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def __repr_args__(self) -> Any:
        return masked_repr_args(super().__repr_args__())


def masked_repr_args(args: Any) -> Any:
    """A model's ``__repr_args__`` with every secret value masked."""
    return [(name, masked(value, (name,) if name else ())) for name, value in args]


class SettingProblem(ValueError):
    """A rule across several fields of one model; ``fields[0]`` is the one to name first.

    Raised inside a model validator: the loader turns it into one line that names each field
    with its own source.
    """

    def __init__(self, problem: str, *fields: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fields = fields


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


NoBool = BeforeValidator(_no_bool)
Int = Annotated[int, NoBool]
Port = Annotated[int, NoBool, Field(ge=1, le=65535)]
Count = Annotated[int, NoBool, Field(ge=0)]
#: A finite number of seconds, zero or more.
Seconds = Annotated[float, NoBool, Field(ge=0, allow_inf_nan=False)]
#: A finite number of seconds, more than zero.
PositiveSeconds = Annotated[float, NoBool, Field(gt=0, allow_inf_nan=False)]
#: A share, from 0 to 1.
Share = Annotated[float, NoBool, Field(ge=0, le=1, allow_inf_nan=False)]


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonEmptyStr = Annotated[str, AfterValidator(_non_empty)]


def _path(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a path cannot contain a NUL character")
    return value


#: A file or folder name: not empty, no NUL.
PathStr = Annotated[str, AfterValidator(_non_empty), AfterValidator(_path)]


def check_url(
    value: str, schemes: tuple[str, ...], *, need_host: bool = True, what: str = "URL"
) -> str:
    """``value`` if it is a URL with one of ``schemes``, a host and a valid port; else
    ValueError saying what is wrong without repeating the URL."""
    allowed = ", ".join(f"{s}://" for s in schemes)
    scheme, sep, rest = value.partition("://")
    if not sep or not scheme:
        raise ValueError(f"is not a {what} (expected one starting with {allowed})")
    if scheme.lower() not in schemes:
        raise ValueError(f"scheme {scheme + '://'!r} is not allowed (allowed: {allowed})")
    try:
        parts = urlsplit(value)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise ValueError("has an invalid host or port (the port must be 1-65535)") from None
    if port == 0:
        raise ValueError("has port 0 (the port must be 1-65535)")
    if need_host and not host:
        raise ValueError(f"has no host ({scheme}://HOST[:PORT]...)")
    if any(c.isspace() for c in value):
        raise ValueError("contains white space")
    return value


def url_password(value: str | None) -> str | None:
    """The password in a URL's user part (``redis://:pw@host``), or None."""
    if not value or "://" not in value:
        return None
    netloc = value.split("://", 1)[1].split("/", 1)[0]
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return None
    _, colon, password = userinfo.partition(":")
    return password if colon and password else None
