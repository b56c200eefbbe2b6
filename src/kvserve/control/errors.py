"""Errors of the registry's storage, in a module that imports nothing, so that every
storage implementation (local, S3 behind its optional boto3) can raise them."""


class StorageError(RuntimeError):
    """The storage cannot be reached or refused an operation."""
