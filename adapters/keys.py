"""Where an object store keeps what, under its prefix; nothing outside these is ever listed, written or deleted.

- ``{prefix}models/{id}``          a model's bytes
- ``{prefix}metadata/{id}.json``   its sidecar (metadata mode ``sidecar``)
- ``{prefix}uploads/{id}``         a direct upload a client made with a presigned URL, not yet committed
- ``{prefix}uploads/{id}.json``    what that upload was presigned for (size, SHA-256, parts)
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.errors import ConfigurationError
from storage.ids import is_model_id


@dataclass(frozen=True)
class KeyLayout:
    prefix: str = ""

    @classmethod
    def normalized(cls, prefix: str) -> KeyLayout:
        prefix = prefix.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise ConfigurationError(f"prefix {prefix!r} has an empty, '.' or '..' segment")
        return cls(prefix + "/" if prefix else "")

    @property
    def models(self) -> str:
        return self.prefix + "models/"

    @property
    def metadata(self) -> str:
        return self.prefix + "metadata/"

    @property
    def uploads(self) -> str:
        return self.prefix + "uploads/"

    def model_key(self, model_id: str) -> str:
        return f"{self.models}{model_id}"

    def metadata_key(self, model_id: str) -> str:
        return f"{self.metadata}{model_id}.json"

    def staged_key(self, model_id: str) -> str:
        return f"{self.uploads}{model_id}"

    def plan_key(self, model_id: str) -> str:
        return f"{self.uploads}{model_id}.json"

    def id_of_model_key(self, key: str) -> str | None:
        name = key[len(self.models) :] if key.startswith(self.models) else ""
        return name if is_model_id(name) else None

    def is_metadata_key(self, key: str) -> bool:
        name = key[len(self.metadata) :] if key.startswith(self.metadata) else ""
        return name.endswith(".json") and is_model_id(name[: -len(".json")])

    def is_upload_key(self, key: str) -> bool:
        """A staged upload or its plan."""
        name = key[len(self.uploads) :] if key.startswith(self.uploads) else ""
        return is_model_id(name.removesuffix(".json"))
