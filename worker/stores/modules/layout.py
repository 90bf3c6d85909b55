"""Where a container and a key of :class:`~worker.stores.modules.store.ModuleStore` live in
the backend: names normalised to NFC and checked against the backend's rules (a name the store
cannot hold is :class:`~worker.errors.InvalidName`, never changed), a bucket per container or,
with ``MODULESTORE.bucket``, the key prefix ``<container>/`` in that one bucket, and the
server's store files at the root of a folder or in the ``configRoot`` container."""

from __future__ import annotations

import worker.stores.modules.names as names
from worker.errors import InvalidName, StoreError
from worker.stores.modules.base import ObjectBackend


class Layout:
    """The naming half of the module store (the store sets these attributes)."""

    backend: ObjectBackend
    provider: str
    bucket: str | None
    config_root: str | None

    def _invalid(self, what: str, name: str, problem: str, container: str | None) -> InvalidName:
        return InvalidName(
            f"{what} name {name!r} cannot be held by the {self.provider} store: {problem}",
            store=self.provider,
            container=container,
        )

    def _check_bucket(self, bucket: str) -> None:
        problem = self.backend.bucket_name_problem(bucket)
        if problem:
            raise self._invalid("bucket", bucket, problem, None)

    @property
    def holds_store_files(self) -> bool:
        """Whether the server's store files (``apps.json``) have a place here: the root of a
        local folder, or the ``MODULESTORE.configRoot`` container of a cloud store."""
        return self.provider == "file" or self.config_root is not None

    def store_files_location(self) -> str:
        """Where the store files go, for people."""
        if self.provider == "file":
            return f"the root of {getattr(self.backend, 'root', 'the folder')}"
        where = f"{self.bucket}/{self.config_root}/" if self.bucket else self.config_root
        return f"the container {where} (MODULESTORE.configRoot)"

    def _container(self, container: str) -> str:
        """The NFC container name, checked; in bucket mode the key prefix is this plus '/'."""
        if container == names.STORE_FILES:
            raise self._invalid("container", container, "reserved for the store files", None)
        name = names.nfc(container)
        if self.bucket is not None:
            problem = names.folder_problem(name)
        else:
            problem = self.backend.bucket_name_problem(name)
        if problem:
            raise self._invalid("container", container, problem, None)
        return name

    def _locate(self, container: str) -> tuple[str, str]:
        """(bucket, key prefix) for a container (or :data:`names.STORE_FILES`)."""
        if container == names.STORE_FILES:
            if self.provider == "file":
                return "", ""  # the folder's root itself (the file backend lists it flat)
            if self.config_root is None:
                raise StoreError(
                    "the store files (apps.json) have no container: set MODULESTORE.configRoot",
                    store=self.provider, container=container,
                )
            if self.bucket is not None:
                return self.bucket, self.config_root + "/"
            return self.config_root, ""
        name = self._container(container)
        if self.bucket is None:
            return name, ""
        return self.bucket, name + "/"

    def _key(self, container: str, prefix: str, key: str) -> str:
        name = names.nfc(key)
        problem = names.key_problem(name) or self.backend.key_problem(prefix + name)
        if not problem and container == names.STORE_FILES and "/" in name:
            problem = "a store file lies at the root of the module directory, not in a folder"
        if problem:
            raise self._invalid("object", key, problem, container)
        return prefix + name
