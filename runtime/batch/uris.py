"""Inputs named by URI (``s3://bucket/key``, ``gs://...``, ``file:///...``), listed and read through pyarrow's file
systems (``icrt batch``)."""
from __future__ import annotations

import functools

from icrt.runtime.base.errors import UserInputError
from icrt.runtime.batch.parts import require_pyarrow

BUCKET_SCHEMES = ("s3", "gs", "gcs")  # their paths are bucket/key: one file system per bucket serves all keys


@functools.lru_cache(maxsize=64)
def _filesystem(base: str):
    require_pyarrow()
    import pyarrow.fs as pafs
    try:
        return pafs.FileSystem.from_uri(base)[0]
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for unknown schemes and bad URIs
        raise UserInputError(f"{base}: cannot open through pyarrow ({type(e).__name__}: {e})") from None


def uri_filesystem(uri: str):
    """(pyarrow FileSystem, path within it) for ``s3://bucket/key``, ``gs://...``, ``file:///...``; the file
    system of a bucket is made once (for S3 that may mean a region look-up)."""
    scheme, rest = uri.split("://", 1)
    if scheme in BUCKET_SCHEMES:
        bucket = rest.split("/", 1)[0]
        return _filesystem(f"{scheme}://{bucket}"), rest
    if scheme == "file":
        return _filesystem("file:///"), "/" + rest.lstrip("/") if not rest.startswith("/") else rest
    require_pyarrow()
    import pyarrow.fs as pafs
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:
        raise UserInputError(f"{uri}: cannot open through pyarrow ({type(e).__name__}: {e})") from None


def list_uri(uri: str, recursive: bool) -> list[str]:
    """A URI naming a file -> [uri]; naming a folder (prefix) -> the image-named files in it, as URIs, sorted."""
    import pyarrow.fs as pafs

    from icrt.runtime.scoring.inputs import is_image_name

    fs, path = uri_filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        return [uri]
    scheme = uri.split("://", 1)[0]
    if scheme not in BUCKET_SCHEMES and scheme != "file":
        raise UserInputError(f"{uri}: only s3://, gs:// and file:// folders can be listed; name the files")
    found = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    names = sorted(f.path for f in found if f.type == pafs.FileType.File and is_image_name(f.path))
    return [f"{scheme}://{n}" for n in names]


def read_uri(uri: str) -> bytes:
    from icrt.runtime.scoring.preprocess import ImageError
    fs, path = uri_filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise ImageError(uri, "no such file") from None
    except Exception as e:
        raise ImageError(uri, f"cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
