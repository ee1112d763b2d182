"""modelstorage: where a federated-learning combiner keeps its models.

``import storage`` loads no cloud SDK; the object-store backends live in
``adapters`` and are imported only when used.
"""

from storage.config import from_fedn_config, open_storage
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
from storage.modelstorage import ModelStat, ModelStorage, ModelWriter
from storage.tempmodelstorage import TempModelStorage

__all__ = [
    "BucketNotFoundError",
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
    "StorageError",
    "StoragePermissionError",
    "StorageUnavailableError",
    "TempModelStorage",
    "check_model_id",
    "from_fedn_config",
    "open_storage",
]

__version__ = "0.1.0"
