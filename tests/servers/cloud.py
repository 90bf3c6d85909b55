"""What every cloud emulator fixture offers: MODULESTORE settings as a user writes them, and a
ModuleStore built from those settings through the same config model and registry as the CLI."""

from __future__ import annotations

from typing import Any, ClassVar


class CloudStoreServer:
    """Mixin for the emulator fixtures: each names its provider and the keys it needs."""

    provider: ClassVar[str]

    def store_keys(self, endpoint: str | None) -> dict[str, Any]:
        """The provider's MODULESTORE keys for this server (or for ``endpoint``, a fault
        proxy in front of it)."""
        raise NotImplementedError

    def settings(self, endpoint: str | None = None, bucket: str | None = None) -> dict[str, Any]:
        """MODULESTORE settings for this server (as a user would write them)."""
        cfg: dict[str, Any] = {"provider": self.provider, **self.store_keys(endpoint)}
        if bucket:
            cfg["bucket"] = bucket
        return cfg

    def module_store(
        self,
        bucket: str | None = None,
        endpoint: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Any:
        """A ModuleStore on this server (or on ``endpoint``, a fault proxy in front of it)."""
        from worker.config import PROVIDER_CONFIGS
        from worker.stores.modules import ModuleStore
        from worker.stores.registry import module_backend_class

        config = PROVIDER_CONFIGS[self.provider](**self.settings(endpoint, bucket))
        extra = {"timeout": timeout} if timeout else {}
        backend = module_backend_class(self.provider).from_config(config, **extra)
        return ModuleStore(backend, bucket=bucket, **options)


def pooled_session(size: int = 32) -> Any:
    """A requests session with a connection pool for ``size`` threads (raw SDK clients)."""
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=size, pool_maxsize=size)
    session.mount("http://", adapter)
    return session
