"""One model per store: the keys synchro-api's stores (and pkgcloud's providers) read.

``SESSIONSTORE`` and ``MODULESTORE`` are handed whole to the server's store (and on to pkgcloud
or the Redis client), so they may hold keys the worker does not use: the loader passes those
through and only the keys below are typed and checked.  The settings hold them typed:
``Settings.SESSIONSTORE`` is a :data:`SessionStoreConfig` and ``Settings.MODULESTORE`` a
:data:`ModuleStoreConfig`, each a union discriminated by the service name (a module store in
the cloud by its ``provider``), so ``isinstance`` or ``match`` tells which store it is.
Cross-field rules (credentials that come in pairs, a password given twice) raise
:class:`SettingProblem` naming each field.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    Discriminator,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from worker.config.fields import (
    Count,
    NonEmptyStr,
    PathStr,
    Port,
    PositiveSeconds,
    SettingProblem,
    Strict,
    check_url,
    url_password,
)

HTTP = ("http", "https")

# --- session stores -------------------------------------------------------------------------


class MemorySessionStoreConfig(Strict):
    """``MemorySessionStore`` takes no configuration."""

    service: ClassVar[str] = "MemorySessionStore"


class FileSessionStoreConfig(Strict):
    service: ClassVar[str] = "FileSessionStore"
    sessionStateFile: PathStr = "sessions.json"


class RedisSessionStoreConfig(Strict):
    service: ClassVar[str] = "RedisSessionStore"
    host: NonEmptyStr = "localhost"
    port: Port = 6379
    password: SecretStr | None = None
    #: Seconds between PINGs that keep the connection alive (the server's heartbeat); unset: none.
    pingInterval: PositiveSeconds | None = None
    url: str | None = None
    db: Count = 0
    tls: bool = False
    #: None, as the Synchro server: a session is the key ``<id>`` itself.
    keyPrefix: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        check_url(v, ("redis", "rediss", "unix"), need_host=not v.startswith("unix:"))
        if v.startswith(("redis://", "rediss://")):
            db = v.split("://", 1)[1].partition("/")[2].partition("?")[0].strip("/")
            if db and not db.isdigit():
                raise ValueError("the database (the path after the host) must be a number")
        return v

    @model_validator(mode="after")
    def _one_password(self) -> RedisSessionStoreConfig:
        if self.password is not None and url_password(self.url):
            raise SettingProblem(
                "holds a password and {password} is set too; give the password once", "url",
                "password",
            )
        return self


SESSION_STORE_CONFIGS: dict[str, type[Strict]] = {
    "MemorySessionStore": MemorySessionStoreConfig,
    "FileSessionStore": FileSessionStoreConfig,
    "RedisSessionStore": RedisSessionStoreConfig,
}

#: Keys the server's stores (or their clients) read that the worker does not use.
SESSION_STORE_SERVER_KEYS = ("sentinels", "name", "consul", "consulRetries", "consulDelayMs")


# --- module stores --------------------------------------------------------------------------


class FileModuleStoreConfig(Strict):
    service: ClassVar[str] = "FileModuleStore"
    directory: PathStr = "synchro-apps"


class CloudConfig(Strict):
    service: ClassVar[str] = "PkgCloudModuleStore"
    provider: str
    #: Put every container as a key prefix inside this one bucket instead of a bucket each.
    bucket: NonEmptyStr | None = None
    #: The container holding the server's store files (apps.json, ...), as the server reads it.
    configRoot: NonEmptyStr | None = None


def _http_url(v: str) -> str:
    return check_url(v, HTTP)


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class AmazonConfig(CloudConfig):
    provider: Literal["amazon"] = "amazon"
    keyId: NonEmptyStr | None = None
    key: SecretStr | None = None
    region: NonEmptyStr = "us-east-1"
    endpoint: HttpUrl | None = None

    @model_validator(mode="after")
    def _pair(self) -> AmazonConfig:
        if self.keyId and self.key is None:
            raise SettingProblem("missing: {keyId} is set, so its secret key is needed too",
                                 "key", "keyId")
        if self.key is not None and not self.keyId:
            raise SettingProblem("missing: {key} is set, so its key id is needed too",
                                 "keyId", "key")
        return self


class GoogleConfig(CloudConfig):
    provider: Literal["google"] = "google"
    projectId: NonEmptyStr | None = None
    keyFilename: PathStr | None = None
    endpoint: HttpUrl | None = None

    @field_validator("keyFilename")
    @classmethod
    def _readable(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not os.path.exists(v):
            raise ValueError(f"key file {v!r} does not exist")
        if not os.path.isfile(v):
            raise ValueError(f"key file {v!r} is not a file")
        if not os.access(v, os.R_OK):
            raise ValueError(f"key file {v!r} is not readable")
        return v


class AzureConfig(CloudConfig):
    provider: Literal["azure"] = "azure"
    storageAccount: NonEmptyStr | None = None
    storageAccessKey: SecretStr | None = None
    connectionString: SecretStr | None = None
    endpoint: HttpUrl | None = None

    @field_validator("storageAccessKey")
    @classmethod
    def _base64(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            try:
                base64.b64decode(v.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("is not a base64 account key (as the Azure portal shows it)"
                                 ) from None
        return v

    @model_validator(mode="after")
    def _credentials(self) -> AzureConfig:
        if self.connectionString is not None:
            return self
        if self.storageAccount and self.storageAccessKey is None:
            raise SettingProblem("missing: {storageAccount} needs its storageAccessKey "
                                 "(or give connectionString)", "storageAccessKey",
                                 "storageAccount")
        if self.storageAccessKey is not None and not self.storageAccount:
            raise SettingProblem("missing: {storageAccessKey} needs the storageAccount "
                                 "it belongs to", "storageAccount", "storageAccessKey")
        if not self.storageAccount:
            raise SettingProblem("missing: azure needs storageAccount and storageAccessKey, "
                                 "or connectionString", "storageAccount")
        return self


class OpenStackConfig(CloudConfig):
    provider: Literal["openstack"] = "openstack"
    keystoneAuthVersion: Literal["v3"] = "v3"
    authUrl: HttpUrl
    region: NonEmptyStr | None = None
    #: The project (tenant) whose object store is used.
    tenantId: NonEmptyStr
    username: NonEmptyStr
    password: SecretStr
    domainId: NonEmptyStr | None = None
    domainName: NonEmptyStr | None = None


class RackspaceConfig(CloudConfig):
    provider: Literal["rackspace"] = "rackspace"
    username: NonEmptyStr
    apiKey: SecretStr
    region: NonEmptyStr = "DFW"
    authUrl: HttpUrl = "https://identity.api.rackspacecloud.com/v2.0/"


PROVIDER_CONFIGS: dict[str, type[CloudConfig]] = {
    "amazon": AmazonConfig,
    "google": GoogleConfig,
    "azure": AzureConfig,
    "openstack": OpenStackConfig,
    "rackspace": RackspaceConfig,
}

#: What each provider needs, for the message when one is missing.
PROVIDER_NEEDS: dict[str, str] = {
    "amazon": "keyId and key, or the AWS credential chain",
    "google": "keyFilename, or application default credentials",
    "azure": "storageAccount and storageAccessKey, or connectionString",
    "openstack": "authUrl, username, password and tenantId",
    "rackspace": "username and apiKey",
}

MODULE_STORE_SERVICES = ("FileModuleStore", "PkgCloudModuleStore")

#: Keys the server's module stores (or pkgcloud) read that the worker does not use.
MODULE_STORE_SERVER_KEYS = ("nowatch",)

def _service_of(value: Any) -> str | None:
    """The tag of a session store's configuration: its service name."""
    if isinstance(value, Strict):
        return getattr(value, "service", None)
    return None  # a plain dict: the loader validates sections, knowing the service


def _module_tag(value: Any) -> str | None:
    """The tag of a module store's configuration: ``FileModuleStore``, else the provider."""
    if isinstance(value, CloudConfig):
        return value.provider
    if isinstance(value, FileModuleStoreConfig):
        return FileModuleStoreConfig.service
    if isinstance(value, dict):
        provider = value.get("provider")
        return provider if isinstance(provider, str) else FileModuleStoreConfig.service
    return None


#: ``Settings.MODULESTORE``: ``FileModuleStore``'s folder, or a ``PkgCloudModuleStore`` by
#: provider.
ModuleStoreConfig = Annotated[
    Annotated[FileModuleStoreConfig, Tag("FileModuleStore")]
    | Annotated[AmazonConfig, Tag("amazon")]
    | Annotated[GoogleConfig, Tag("google")]
    | Annotated[AzureConfig, Tag("azure")]
    | Annotated[OpenStackConfig, Tag("openstack")]
    | Annotated[RackspaceConfig, Tag("rackspace")],
    Discriminator(_module_tag),
]
#: ``Settings.SESSIONSTORE``, by ``SESSIONSTORE_SERVICE``.
SessionStoreConfig = Annotated[
    Annotated[MemorySessionStoreConfig, Tag("MemorySessionStore")]
    | Annotated[FileSessionStoreConfig, Tag("FileSessionStore")]
    | Annotated[RedisSessionStoreConfig, Tag("RedisSessionStore")],
    Discriminator(_service_of),
]
#: A module store in the cloud (``PkgCloudModuleStore``), by provider.
CloudStoreConfig = AmazonConfig | GoogleConfig | AzureConfig | OpenStackConfig | RackspaceConfig
