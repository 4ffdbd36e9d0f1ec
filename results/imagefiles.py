"""The store's image files: PNG bytes named by their sha256 under ``images/<aa>/``, written atomically."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from results.integrity import StoreError


def write_image_file(images_dir: Path, png: bytes) -> tuple[str, str]:
    """Write PNG bytes as ``<aa>/<sha256>.png`` under ``images_dir`` (atomic, idempotent); (sha256, path)."""
    sha = hashlib.sha256(png).hexdigest()
    rel = f"{sha[:2]}/{sha}.png"
    path = images_dir / rel
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # a name per process and thread: two threads may write the same image (identical outputs) at once
        tmp = path.with_name(f".{sha}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(png)
        os.replace(tmp, path)
    return sha, rel


def read_image_file(images_dir: Path, rel: str, sha256: str) -> bytes:
    """The bytes of a stored image, checked against its sha256."""
    path = images_dir / rel
    if not path.exists():
        raise StoreError(f"image {path} is missing from the store's images folder")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise StoreError(
            f"image {path} does not match its sha256 {sha256[:12]}...: it was modified"
        )
    return data
