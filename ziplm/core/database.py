"""The levels database: for every layer × sublayer × level, the kept ids, updated kept columns and error.

One database serves every speedup target of a family. It is written layer by layer (each layer file
atomically, then the manifest), so an interrupted build resumes at the first missing layer, and it
carries a fingerprint of everything it depends on so a stale database is never reused silently.

Layout of a database folder:
    manifest.json           fingerprint, level grids, per-layer errors, completed layers
    layer_000.safetensors   "<sublayer>.<keep>.ids" (int64) and "<sublayer>.<keep>.weight" (d_out, kept cols)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "ziplm-levels-database"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# What a manifest written before the fingerprint carried a solver version reads as (never a current version).
UNVERSIONED = "levels-v1"
SUBLAYER_NAMES = ("attention", "ffn")


@dataclass(frozen=True)
class DatabaseFingerprint:
    """Everything a database depends on; any difference means it must be rebuilt."""

    model: str  # digest of the dense weights
    calibration: str  # digest of the calibration token ids and masks
    damp: float
    head_levels: tuple[int, ...]  # kept heads per level
    ffn_levels: tuple[int, ...]  # kept neurons per level
    ffn_group_size: int
    dims: dict[str, int] = field(default_factory=dict)
    method: str = "obs"  # structure selection: obs (ZipLM), or a baseline (magnitude, random)
    # Version of the code that computes the levels (the builder's DATABASE_FORMAT): bumped when a change to
    # the solvers, errors or grids changes what a build stores, so older levels are never reused silently.
    version: str = UNVERSIONED
    seed: int | None = None  # the structure-selection seed, for methods that draw at random (else None)

    def differences(self, other: DatabaseFingerprint) -> list[str]:
        """Names and values of the fields that differ (for an error message)."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{k}: stored {theirs[k]!r} vs run {mine[k]!r}" for k in mine if mine[k] != theirs[k]]


@dataclass(frozen=True)
class LevelEntry:
    """One sublayer at one level: kept unit ids (heads or neurons) and the updated kept columns."""

    keep: int
    ids: torch.Tensor  # (keep,) int64, sorted original ids
    weight: torch.Tensor  # (d_out, keep * unit_width)
    error: float  # relative output error on the calibration set (1.0 = module removed)


def _fingerprint_from_json(data: dict[str, Any]) -> DatabaseFingerprint:
    return DatabaseFingerprint(
        model=data["model"],
        calibration=data["calibration"],
        damp=float(data["damp"]),
        head_levels=tuple(data["head_levels"]),
        ffn_levels=tuple(data["ffn_levels"]),
        ffn_group_size=int(data["ffn_group_size"]),
        dims=dict(data.get("dims", {})),
        method=str(data.get("method", "obs")),
        version=str(data.get("version", UNVERSIONED)),
        seed=None if data.get("seed") is None else int(data["seed"]),
    )


class LevelDatabase:
    """A levels database folder: open or create with `open`, add layers, read levels lazily."""

    def __init__(self, folder: Path, fingerprint: DatabaseFingerprint, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self._manifest = manifest
        self.build_seconds: dict[str, float] = {}  # filled by a builder: phase -> seconds (this process)

    @classmethod
    def open(cls, folder: str | os.PathLike[str], fingerprint: DatabaseFingerprint) -> LevelDatabase:
        """Open the database in `folder` for `fingerprint`, creating it if absent.

        Raises:
            ValueError: the folder holds a database built for something else (says what differs), or
                its manifest is corrupt.
        """
        path = Path(folder)
        manifest_path = path / MANIFEST
        if manifest_path.exists():
            stored = cls.read_manifest(path)
            theirs = _fingerprint_from_json(stored["fingerprint"])
            if theirs != fingerprint:
                diff = "; ".join(fingerprint.differences(theirs))
                why = f"for different inputs ({diff})"
                if theirs.version != fingerprint.version:
                    why = (
                        f"by another version of the level solver ({theirs.version!r}; this code writes "
                        f"{fingerprint.version!r}), so its levels may not be what this code computes ({diff})"
                    )
                raise ValueError(
                    f"the levels database in {path} was built {why}; "
                    "delete the folder or choose another output directory to rebuild it"
                )
            return cls(path, fingerprint, stored)
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fingerprint": asdict(fingerprint),
            "layers": {},
        }
        db = cls(path, fingerprint, manifest)
        db._write_manifest()
        return db

    @staticmethod
    def read_manifest(folder: Path) -> dict[str, Any]:
        try:
            manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{folder / MANIFEST} is unreadable or corrupt ({err}); delete it to rebuild") from err
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{folder} is not a {FORMAT} v{FORMAT_VERSION} folder")
        return manifest

    def _write_manifest(self) -> None:
        tmp = self.folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self._manifest, indent=1) + "\n")
        tmp.replace(self.folder / MANIFEST)

    def _layer_file(self, layer: int) -> Path:
        return self.folder / f"layer_{layer:03d}.safetensors"

    def completed_layers(self) -> set[int]:
        """Layers whose entries are fully written (their file exists and the manifest lists them)."""
        return {int(k) for k in self._manifest["layers"] if self._layer_file(int(k)).is_file()}

    def add_layer(self, layer: int, entries: dict[str, list[LevelEntry]]) -> None:
        """Write all levels of both sublayers of `layer` (atomically), then record it in the manifest."""
        tensors: dict[str, torch.Tensor] = {}
        errors: dict[str, dict[str, float]] = {}
        for sublayer, levels in entries.items():
            if sublayer not in SUBLAYER_NAMES:
                raise ValueError(f"unknown sublayer {sublayer!r}; expected one of {SUBLAYER_NAMES}")
            for entry in levels:
                tensors[f"{sublayer}.{entry.keep}.ids"] = entry.ids.to(torch.int64).contiguous()
                tensors[f"{sublayer}.{entry.keep}.weight"] = entry.weight.float().contiguous()
            errors[sublayer] = {str(e.keep): float(e.error) for e in levels}
        tmp = self.folder / f".layer_{layer:03d}.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(self._layer_file(layer))
        self._manifest["layers"][str(layer)] = {"errors": errors}
        self._write_manifest()

    def errors(self, layer: int, sublayer: str) -> dict[int, float]:
        """Relative output error per kept count for one sublayer of a completed layer."""
        record = self._manifest["layers"].get(str(layer))
        if record is None:
            raise KeyError(f"layer {layer} is not in the database (completed: {sorted(self.completed_layers())})")
        return {int(k): v for k, v in record["errors"][sublayer].items()}

    def entry(self, layer: int, sublayer: str, keep: int) -> LevelEntry:
        """Read one level of one sublayer from disk (lazily: only that tensor pair is loaded)."""
        errors = self.errors(layer, sublayer)
        if keep not in errors:
            raise KeyError(f"layer {layer} {sublayer} has no level keeping {keep}; levels: {sorted(errors)}")
        with safe_open(str(self._layer_file(layer)), framework="pt") as fh:
            ids = fh.get_tensor(f"{sublayer}.{keep}.ids")
            weight = fh.get_tensor(f"{sublayer}.{keep}.weight")
        return LevelEntry(keep=keep, ids=ids, weight=weight, error=errors[keep])
