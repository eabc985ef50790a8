"""Encoder registry: tiny presets, the real offline MiniLM, local folders, clear offline errors."""

import json

import pytest
import torch

from core_model.encoders import create_image_encoder, create_text_encoder, list_encoders
from core_model.errors import ModelNotFoundError


def test_registry_lists_the_published_encoders():
    names = {e.name for e in list_encoders()}
    assert {"dinov2-small", "dinov2-base", "rad-dino", "tiny-vit"} <= names
    assert {"biobert", "clinicalbert", "cxr-bert", "pubmedbert", "minilm", "tiny-bert"} <= names


def test_tiny_encoders_are_frozen_and_reproducible(tiny_encoders):
    vit, bert = tiny_encoders
    for enc in (vit, bert):
        enc.train()  # must not unfreeze
        assert not enc.training and not enc.model.training
        assert not any(p.requires_grad for p in enc.parameters())
    again = create_image_encoder("tiny-vit")
    assert again.weights_sha256 == vit.weights_sha256  # seeded config init
    cls, patches = vit(torch.zeros(2, 3, 224, 224))
    assert cls.shape == (2, 192) and patches.shape == (2, 256, 192)


def test_missing_hub_model_gives_one_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_ADAPTOR_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        create_image_encoder("dinov2-small")
    msg = str(err.value)
    assert "not available offline" in msg and str(tmp_path / "models" / "dinov2-small") in msg


def test_local_folder_and_models_dir_are_used(tiny_encoders, tmp_path, monkeypatch):
    vit, _ = tiny_encoders
    folder = tmp_path / "models" / "dinov2-small"
    vit.model.save_pretrained(folder)
    monkeypatch.setenv("CXR_ADAPTOR_MODELS", str(tmp_path / "models"))
    by_preset = create_image_encoder("dinov2-small")  # found in the models folder, offline
    by_path = create_image_encoder(str(folder))
    assert by_preset.weights_sha256 == by_path.weights_sha256 == vit.weights_sha256
    assert by_preset.identity()["licence"] == "Apache-2.0"


@torch.no_grad()
def test_real_minilm_works_offline_and_reads_meaning():
    enc = create_text_encoder("minilm")
    assert enc.dim == 384 and enc.pooling == "mean"
    texts = [
        "Large right pneumothorax.",
        "There is a big pneumothorax on the right side.",
        "The heart size is normal and the lungs are clear.",
    ]
    pooled, tokens = enc(**enc.tokenize(texts))
    pooled = torch.nn.functional.normalize(pooled, dim=1)
    sim = pooled @ pooled.t()
    assert sim[0, 1] > sim[0, 2] + 0.2  # paraphrases closer than unrelated findings
    assert tokens.shape[0] == 3 and tokens.shape[2] == 384


def test_registry_and_factory_have_no_import_cycle():
    """The registry (names -> specs) imports no other module of the package; the preset modules
    import the registry, the factory imports both (as timm's _registry / _factory)."""
    import ast
    from pathlib import Path

    import core_model.encoders as pkg

    def package_imports(name: str) -> set[str]:
        tree = ast.parse((Path(pkg.__file__).parent / f"{name}.py").read_text())
        out = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("core_model.encoders"):
                out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names if node.module == "core_model.encoders")
        return out

    assert package_imports("registry") == set()
    for preset_module in ("image", "text"):
        assert "core_model.encoders.factory" not in package_imports(preset_module)
    assert {"core_model.encoders.image", "core_model.encoders.text", "core_model.encoders.registry"} <= package_imports(
        "factory"
    )
    assert {e.name for e in pkg.list_encoders("image")} >= {"tiny-vit", "dinov2-small"}  # presets registered


def test_each_preset_states_licence_and_weight_access_and_renamed_ids_still_work(capsys):
    from core_model.encoders.factory import create_text_encoder as create
    from core_model.encoders.registry import get_info
    from core_model.errors import UserError
    from training_cli.main import main

    for e in list_encoders():
        assert e.licence and isinstance(e.gated, bool)
    old_id = "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract-fulltext"
    for name in ("PubMedBERT", "BiomedBERT", old_id):
        assert get_info(name, "text").name == "pubmedbert"
    assert get_info("pubmedbert", "text").source.startswith("microsoft/BiomedNLP-BiomedBERT")
    # the old id loads the renamed weights (offline here: the error names the new id and folder)
    with pytest.raises(UserError, match="BiomedBERT-base-uncased-abstract-fulltext.*models/pubmedbert"):
        create(old_id)
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("rad-dino"))
    assert "MSRLA" in line and " no " in line
    assert "PubMedBERT" in out and "Research use only" in out
    assert main(["encoders", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"dinov2-base", "biobert", "pubmedbert", "cxr-bert"}
