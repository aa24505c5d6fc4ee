"""Read back what an offline W&B run wrote (its ``run-*.wandb`` log), for tests that check what a user
will see after ``wandb sync`` without mocking ``wandb``.

The file is a 7-byte header (``:W&B``, magic, version) followed by a LevelDB-style log: 32 KiB blocks of
chunks, each with a 7-byte header (crc32, little-endian length, type FULL/FIRST/MIDDLE/LAST); a chunk
never straddles blocks (a block's tail shorter than a header is padding). Each record is a protobuf
``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    offset, pending = _HEADER, b""
    while offset + _HEADER <= len(data):
        left_in_block = _BLOCK - offset % _BLOCK
        if left_in_block < _HEADER:
            offset += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + _HEADER])
        chunk = data[offset + _HEADER : offset + _HEADER + length]
        offset += _HEADER + length
        if kind == 0 and length == 0:  # zero padding at the end
            break
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def run_log(run_folder: Path) -> Path:
    (path,) = run_folder.rglob("offline-run-*/run-*.wandb")
    return path


def config(path: Path) -> dict[str, Any]:
    """The run's config as W&B holds it (every update applied in order)."""
    values: dict[str, Any] = {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        items = record.config.update if kind == "config" else record.run.config.update if kind == "run" else []
        for item in items:
            values[item.key] = json.loads(item.value_json)
    return values


def history_keys(path: Path) -> set[str]:
    keys: set[str] = set()
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
    return keys


def table(run_folder: Path, key: str) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of a ``wandb.Table`` logged under `key` (the table file the offline run kept)."""
    (path,) = run_folder.rglob(f"offline-run-*/files/media/table/{key}_*.table.json")
    data = json.loads(path.read_text())
    return list(data["columns"]), [list(row) for row in data["data"]]


def artifacts(path: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Logged artifacts: name -> (type, metadata)."""
    found = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "artifact":
            metadata = json.loads(record.artifact.metadata) if record.artifact.metadata else {}
            found[record.artifact.name] = (record.artifact.type, metadata)
    return found
