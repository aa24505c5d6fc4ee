"""sentence-transformers export: a pruned member (uneven heads, removed sublayers) and a layer-drop member load
with ``SentenceTransformer`` in a process where ziplm cannot be imported, and embed like the member."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from tests.conftest import TINY_BERT
from ziplm.core.embedding import Pooling
from ziplm.core.structure import Structure
from ziplm.deploy.sentence_transformers_export import VERIFY_TEXTS, export_sentence_transformers, member_embeddings
from ziplm.models import adapter_for, build_model, load_pruned, save_pruned
from ziplm.models.pooling import write_pooling

pytest.importorskip("sentence_transformers")

LOADER = """
import sys, json
sys.modules["ziplm"] = None  # the folder must load without ziplm
from sentence_transformers import SentenceTransformer
st = SentenceTransformer(sys.argv[1], device="cpu", trust_remote_code=True, local_files_only=True)
print(json.dumps(st.encode(json.loads(sys.argv[2])).tolist()))
"""


def _member(tmp_path: Path, heads: list, neurons: list, normalize: bool) -> tuple[torch.nn.Module, Path]:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "pruned", "model", "a", "sentence", "embedding", "of"]
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    model = build_model(TINY_BERT, "base").eval()
    dims = adapter_for(model).dims(model)
    structure = Structure.from_kept(dims, heads, neurons)
    adapter_for(model).apply_structure(model, structure)
    folder = save_pruned(model, structure, tmp_path / "m", tokenizer=tokenizer)
    write_pooling(folder, Pooling("mean", normalize), dims.hidden_size, {"model": "tiny"})
    return load_pruned(folder), folder


def _load_elsewhere(path: Path) -> torch.Tensor:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", LOADER, str(path), json.dumps(list(VERIFY_TEXTS))],
        capture_output=True,
        text=True,
        env=env,
        cwd=path,
        check=True,
    )
    return torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))


def test_pruned_member_loads_without_ziplm(tmp_path: Path) -> None:
    dims = adapter_for(build_model(TINY_BERT, "base")).dims(build_model(TINY_BERT, "base"))
    n = dims.num_layers
    heads = [[0, 3], [], [0, 1, 2]][:n] + [list(range(dims.num_heads))] * max(0, n - 3)
    neurons = [list(range(10)), list(range(40)), []][:n] + [list(range(dims.intermediate_size))] * max(0, n - 3)
    model, folder = _member(tmp_path, heads, neurons, normalize=True)
    record = export_sentence_transformers(model, folder, tmp_path / "st", atol=1e-4)
    assert record["sentence_transformers_kind"] == "remote-code"
    got = _load_elsewhere(tmp_path / "st")
    want = member_embeddings(model, folder, list(VERIFY_TEXTS), Pooling("mean", True))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(VERIFY_TEXTS)), atol=1e-5)


def test_refuses_a_member_without_pooling(tmp_path: Path) -> None:
    model = build_model(TINY_BERT, "base").eval()
    dims = adapter_for(model).dims(model)
    structure = Structure.from_kept(
        dims, [list(range(dims.num_heads))] * dims.num_layers, [list(range(dims.intermediate_size))] * dims.num_layers
    )
    adapter_for(model).apply_structure(model, structure)
    folder = save_pruned(model, structure, tmp_path / "m")
    with pytest.raises(ValueError, match="needs an embedding member"):
        export_sentence_transformers(load_pruned(folder), folder, tmp_path / "st", atol=1e-4)


def test_layer_drop_member_is_a_stock_bert(tmp_path: Path) -> None:
    probe = build_model(TINY_BERT, "base")
    dims = adapter_for(probe).dims(probe)
    heads = [list(range(dims.num_heads)) if i % 2 == 0 else [] for i in range(dims.num_layers)]
    neurons = [list(range(dims.intermediate_size)) if i % 2 == 0 else [] for i in range(dims.num_layers)]
    model, folder = _member(tmp_path, heads, neurons, normalize=False)
    record = export_sentence_transformers(model, folder, tmp_path / "st", atol=1e-4)
    assert record["sentence_transformers_kind"] == "stock-bert"
    assert not (tmp_path / "st" / "modeling_ziplm_bert.py").exists()
    got = _load_elsewhere(tmp_path / "st")
    want = member_embeddings(model, folder, list(VERIFY_TEXTS), Pooling("mean", False))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_cli_exports_and_records_the_diff(tmp_path: Path) -> None:
    probe = build_model(TINY_BERT, "base")
    dims = adapter_for(probe).dims(probe)
    heads = [[0, 1]] + [list(range(dims.num_heads))] * (dims.num_layers - 1)
    neurons = [list(range(dims.intermediate_size))] * dims.num_layers
    _, folder = _member(tmp_path, heads, neurons, normalize=True)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ziplm", "export", f"checkpoint={folder}", "export.formats=[sentence-transformers]"]
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    record = json.loads((folder / "export" / "export.json").read_text())
    assert 0 <= record["sentence_transformers_max_abs_diff"] <= 1e-4
    assert (folder / "export" / "sentence-transformers" / "modeling_ziplm_bert.py").is_file()
