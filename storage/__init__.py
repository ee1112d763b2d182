"""modelstorage: where a federated-learning combiner keeps its models.

``import storage`` loads no cloud SDK; the object-store backends live in
``adapters`` and are imported only when used.
"""

from storage.cache import CachedModelStorage
from storage.errors import (
    BucketNotFoundError,
    ConfigurationError,
    IntegrityError,
    InvalidModelIdError,
    MetadataError,
    ModelExistsError,
    ModelNotFoundError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)
from storage.ids import check_model_id
from storage.memorymodelstorage import MemoryModelStorage
from storage.model import ModelStat
from storage.modelstorage import ModelStorage
from storage.registry import from_fedn_config, open_storage, register_backend
from storage.retention import Retention
from storage.retry import RetryPolicy
from storage.tempmodelstorage import TempModelStorage
from storage.writer import CHUNK_SIZE, ModelWriter

__all__ = [
    "CHUNK_SIZE",
    "BucketNotFoundError",
    "CachedModelStorage",
    "ConfigurationError",
    "IntegrityError",
    "InvalidModelIdError",
    "MetadataError",
    "MemoryModelStorage",
    "ModelExistsError",
    "ModelNotFoundError",
    "ModelStat",
    "ModelStorage",
    "ModelWriter",
    "Retention",
    "RetryPolicy",
    "StorageError",
    "StoragePermissionError",
    "StorageUnavailableError",
    "TempModelStorage",
    "check_model_id",
    "from_fedn_config",
    "open_storage",
    "register_backend",
]

__version__ = "0.1.0"
