"""Object-store backends: AWS S3 over boto3 and MinIO over the MinIO SDK.

Each SDK is imported only when its backend is first used.
"""

from __future__ import annotations

__all__ = ["MinioModelStorage", "S3ModelStorage"]


def __getattr__(name: str):
    if name == "S3ModelStorage":
        from adapters.s3modelstorage import S3ModelStorage

        return S3ModelStorage
    if name == "MinioModelStorage":
        from adapters.miniomodelstorage import MinioModelStorage

        return MinioModelStorage
    raise AttributeError(f"module 'adapters' has no attribute {name!r}")
