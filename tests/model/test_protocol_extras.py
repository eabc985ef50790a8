"""The protocol's science extras on real parts: retrieval intervals, k-shot draws, the shipped
zero-shot prompt sets, the CheXpert 5x200 selection and the MS-CXR phrase-box reader (CSV files
and images written here)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core_model.data.records import Record
from core_model.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]


# ---- Recall / Precision@K with bootstrap intervals --------------------------------------------
def test_retrieval_intervals_resample_the_queries_and_bracket_the_value():
    from core_model.metrics.bootstrap import mean_ci
    from core_model.metrics.retrieval import per_query_hits, retrieval_metrics

    rng = np.random.default_rng(0)
    labels = np.array(["normal", "pneumonia", "covid19", "pneumothorax"] * 15, dtype=object)
    centres = {f: rng.normal(size=16) for f in set(labels)}
    img = np.stack([centres[f] + rng.normal(0, 1.0, 16) for f in labels])
    txt = img + rng.normal(0, 2.0, img.shape)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    plain = retrieval_metrics(img, txt, labels=labels)
    m = retrieval_metrics(img, txt, labels=labels, n_boot=200, seed=3)
    for key in ("i2t_R@1", "i2t_R@5", "t2i_R@10", "i2t_P@5_finding", "t2i_P@1_finding"):
        assert m[key] == plain[key]  # the intervals do not change the numbers
        ci = m[f"{key}_ci"]
        assert ci["ci_low"] <= m[key] <= ci["ci_high"] and ci["ci_low"] < ci["ci_high"]
        assert ci["n"] == 60 and ci["n_boot"] == 200
    hits = per_query_hits(img, txt, labels)
    assert hits["i2t_R@5"].mean() == pytest.approx(m["i2t_R@5"])
    assert mean_ci(hits["i2t_P@5_finding"], n_boot=200, seed=3) == m["i2t_P@5_finding_ci"]
    assert "bootstrap" in m and "bootstrap" not in plain


def test_unlabelled_queries_are_not_scored_for_precision():
    from core_model.metrics.retrieval import per_query_hits, retrieval_metrics

    img = np.eye(4)
    labels = np.array(["a", "a", "", "b"], dtype=object)
    hits = per_query_hits(img, img, labels, precision_ks=(1,))
    assert np.isnan(hits["i2t_P@1_finding"][2]) and hits["i2t_P@1_finding"][[0, 1, 3]].tolist() == [1, 1, 1]
    m = retrieval_metrics(img, img, labels=labels, precision_ks=(1,), n_boot=20)
    assert m["i2t_P@1_finding"] == 1.0 and m["i2t_P@1_finding_ci"]["n"] == 3


# ---- k-shot draws --------------------------------------------------------------------------------
def _labelled(n_per: int) -> list[Record]:
    recs = []
    classes = ["normal", "pneumonia", "covid19"]
    for i in range(4 * n_per):
        finding = (classes + ["pneumothorax"])[i % 4]
        recs.append(
            Record(
                id=f"r{i}",
                image_path=f"/x/{i}.png",
                split="train" if i < 3 * n_per else ("val" if i % 2 else "test"),
                labels={c: float(c == finding) for c in classes},
                finding=finding,
            )
        )
    return recs


def test_few_shot_keeps_k_per_class_seeded_and_leaves_val_and_test_whole():
    from core_model.training.downstream_data import few_shot_train

    recs = _labelled(20)
    classes = ["normal", "pneumonia", "covid19"]
    a = few_shot_train(recs, classes, "multilabel", 4, seed=0)
    b = few_shot_train(recs, classes, "multilabel", 4, seed=0)
    c = few_shot_train(recs, classes, "multilabel", 4, seed=1)
    train = [r for r in a if r.split == "train"]
    assert [r.id for r in a] == [r.id for r in b]  # seeded
    assert {r.id for r in train} != {r.id for r in c if r.split == "train"}  # another fold, other images
    counts = {f: sum(r.finding == f for r in train) for f in ("normal", "pneumonia", "covid19", "pneumothorax")}
    assert counts == {"normal": 4, "pneumonia": 4, "covid19": 4, "pneumothorax": 4}  # + 4 negatives for all
    assert [r.id for r in a if r.split != "train"] == [r.id for r in recs if r.split != "train"]
    with pytest.raises(DataError, match="16 training images of 'normal' asked, the training split has 15"):
        few_shot_train(recs, classes, "multilabel", 16, seed=0)


def test_few_shot_protocol_option_is_checked():
    from core_model.training.protocol import load_protocol

    base = "tasks: [{name: a, task: classification, metric: auroc}]\n"
    p = ROOT / "configs" / "protocols" / "phantoms-smoke.yaml"
    smoke = load_protocol(p)
    assert smoke.few_shot_k == [16] and smoke.few_shot_folds >= 2
    tmp = Path(pytest.importorskip("tempfile").mkdtemp())
    f = tmp / "p.yaml"
    f.write_text(base + "few_shot: {k: [16, 4], folds: 5}\n")
    assert load_protocol(f).few_shot_k == [4, 16]
    f.write_text(base + "few_shot: {k: [0]}\n")
    with pytest.raises(ConfigError, match="few_shot.k must be a list of positive integers"):
        load_protocol(f)
    f.write_text(base + "few_shot: {shots: [4]}\n")
    with pytest.raises(ConfigError, match="unknown config key 'few_shot.shots'"):
        load_protocol(f)


# ---- zero-shot prompt sets ------------------------------------------------------------------------
def test_shipped_prompt_sets_load_by_name_with_ensembles_and_descriptive_negatives():
    from core_model.training.evaluate import load_prompts, shipped_prompt_sets

    assert {"chexpert-5x200", "rsna-pneumonia", "covidx", "phantoms", "ms-cxr"} <= set(shipped_prompt_sets())
    five = load_prompts("chexpert-5x200")
    assert five.name == "chexpert-5x200" and five.source.endswith("configs/prompts/chexpert-5x200.yaml")
    assert list(five) == ["atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion"]
    assert set(load_prompts("covidx")) == {"normal", "pneumonia", "covid19"}
    assert set(load_prompts("rsna-pneumonia")) == {"pneumonia"}
    for name in shipped_prompt_sets():
        for cls, (pos, neg) in load_prompts(name).items():
            assert len(pos) >= 2, (name, cls)  # an ensemble
            # negatives describe competing findings; none is a negation of the class
            assert not any(t.lower().startswith(("no ", "there is no", "without")) for t in neg), (name, cls)
            assert not set(pos) & set(neg)


def test_prompt_files_in_both_formats_and_their_errors(tmp_path):
    from core_model.training.evaluate import load_prompts

    old = tmp_path / "old.yaml"
    old.write_text("pneumonia: [[There is pneumonia.], [The lungs are clear.]]\n")
    p = load_prompts(str(old))
    assert p["pneumonia"] == (["There is pneumonia."], ["The lungs are clear."]) and p.name == "old"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nclasses: {pneumonia: {positive: [a]}}\n")
    with pytest.raises(ConfigError, match="exactly 'positive' and 'negative'"):
        load_prompts(str(bad))
    with pytest.raises(ConfigError, match="shipped prompt sets: chexpert-5x200"):
        load_prompts(str(tmp_path / "absent.yaml"))


# ---- CheXpert 5x200 ------------------------------------------------------------------------------
FIVE = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def _chexpert_csv(path: Path, n_per: int) -> None:
    from core_model.data.chexpert import OBSERVATIONS

    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]
    rows = []
    k = 0
    for c in FIVE:
        for _ in range(n_per):
            row = dict.fromkeys(OBSERVATIONS, "")
            row[c] = "1.0"
            for o in FIVE:
                if o != c:
                    row[o] = "0.0" if k % 3 else ""  # blanks count as 0 (GLoRIA's fillna(0))
            rows.append(
                {
                    "Path": f"CheXpert-v1.0-small/train/patient{k:05d}/study1/view1_frontal.jpg",
                    "Frontal/Lateral": "Frontal",
                    "AP/PA": "PA",
                    **row,
                }
            )
            k += 1
    # not exclusive: two positives, or Cardiomegaly uncertain (competition policy: 0 -> still fine),
    # Edema uncertain (-> 1, so a second positive)
    two = dict.fromkeys(OBSERVATIONS, "")
    two.update({"Atelectasis": "1.0", "Edema": "-1.0"})
    rows.append(
        {
            "Path": "CheXpert-v1.0-small/train/patient99999/study1/view1_frontal.jpg",
            "Frontal/Lateral": "Frontal",
            "AP/PA": "AP",
            **two,
        }
    )
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        for r in rows:
            w.writerow({h: r.get(h, "") for h in header})


def test_chexpert_5x200_draws_exclusive_positives_per_class(tmp_path):
    from core_model.data.chexpert import chexpert_5x200, read_chexpert

    _chexpert_csv(tmp_path / "train.csv", 8)
    recs = read_chexpert(tmp_path / "train.csv", uncertainty="competition", blank="zeros").records
    chosen, keys = chexpert_5x200(recs, per_class=5)
    assert keys == ["atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion"]
    assert len(chosen) == 25 and len({r.id for r in chosen}) == 25
    assert all(r.split == "test" and sum(r.labels.values()) == 1 and r.labels[r.finding] == 1 for r in chosen)
    assert "CheXpert-v1.0-small/train/patient99999/study1/view1_frontal.jpg" not in {r.id for r in chosen}
    again, _ = chexpert_5x200(
        read_chexpert(tmp_path / "train.csv", uncertainty="competition", blank="zeros").records, per_class=5
    )
    assert [r.id for r in again] == [r.id for r in chosen]  # seeded (random_state 42)
    with pytest.raises(DataError, match="only 8 images have atelectasis"):
        chexpert_5x200(recs, per_class=9)


# ---- MS-CXR ----------------------------------------------------------------------------------------
def _ms_cxr(tmp_path: Path) -> Path:
    root = tmp_path / "mimic-cxr-jpg"
    rows = [
        # dicom, category, phrase, x, y, w, h
        ("d1", "Pneumonia", "right lower lobe pneumonia", 60, 100, 30, 40),
        ("d1", "Pneumonia", "right lower lobe pneumonia", 10, 10, 10, 10),  # a second box, same phrase
        ("d1", "Pleural Effusion", "small left effusion", 150, 150, 60, 60),  # clipped to the image
        ("d2", "Pneumothorax", "apical pneumothorax", -5, -5, 2, 2),  # entirely outside: skipped
        ("d3", "Cardiomegaly", "enlarged heart", 20, 20, 50, 50),  # no image on disk
    ]
    out = []
    for dicom, cat, phrase, x, y, w, h in rows:
        path = f"files/p10/p10000032/s50414267/{dicom}.jpg"
        out.append(
            dict(
                dicom_id=dicom,
                category_name=cat,
                label_text=phrase,
                path=path,
                x=x,
                y=y,
                w=w,
                h=h,
                image_width=200,
                image_height=180,
            )
        )
        if dicom != "d3":
            img = root / path
            img.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((90, 100), 128, np.uint8)).save(img)  # a half-size copy
    csv_path = tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(out[0]))
        w.writeheader()
        w.writerows(out)
    return csv_path


def test_ms_cxr_reader_gives_one_record_per_phrase_with_its_box_mask(tmp_path):
    from core_model.data.mscxr import read_ms_cxr

    csv_path = _ms_cxr(tmp_path)
    result = read_ms_cxr(csv_path, tmp_path / "mimic-cxr-jpg")
    by_phrase = {r.report: r for r in result.records}
    assert set(by_phrase) == {"right lower lobe pneumonia", "small left effusion"}
    pna = by_phrase["right lower lobe pneumonia"]
    assert pna.finding == "pneumonia" and pna.labels == {"pneumonia": 1.0} and pna.split == "test"
    assert pna.patient_id == "p10000032" and pna.study_id == "s50414267"
    assert result.skip_counts() == {"bad_row": 1, "missing_image": 1}
    full = result.mask(pna.id)  # on the original 180 x 200 grid: both boxes filled
    assert full.shape == (180, 200) and full.sum() == 30 * 40 + 10 * 10
    assert full[100:140, 60:90].all() and not full[99, 60] and full[10:20, 10:20].all()
    eff = result.mask(by_phrase["small left effusion"].id)
    assert eff.sum() == 50 * 30  # clipped at the image edge (x 150..200, y 150..180)
    # masks written on the file's own grid (a half-size copy here) become the lesion masks
    assert result.write_mask_pngs(tmp_path / "masks") == 2
    with Image.open(pna.lesion_mask_path) as im:
        m = np.asarray(im) > 127
    assert m.shape == (90, 100) and pna.mask_path == pna.lesion_mask_path
    assert m[50:70, 30:45].all() and m.sum() == 15 * 20 + 5 * 5


def test_ms_cxr_through_the_reader_registry_and_its_errors(tmp_path):
    from core_model.data.mscxr import read_ms_cxr
    from core_model.training.config import FINETUNE_DEFAULTS
    from core_model.training.downstream_data import load_labeled

    csv_path = _ms_cxr(tmp_path)
    data = {
        **FINETUNE_DEFAULTS["data"],
        "kind": "ms_cxr",
        "path": str(csv_path),
        "images": str(tmp_path / "mimic-cxr-jpg"),
    }
    labeled = load_labeled(data, "classification", tmp_path / "out")
    assert labeled.dataset == "ms_cxr" and set(labeled.classes) == {"pleural_effusion", "pneumonia"}
    assert all(Path(r.lesion_mask_path).is_file() for r in labeled.records)
    assert labeled.by_split("test") and not labeled.by_split("train")
    bad = tmp_path / "bad.csv"
    bad.write_text("dicom_id,label_text,path\nd1,x,files/a.jpg\n")
    with pytest.raises(DataError, match="lacks the column"):
        read_ms_cxr(bad)


# ---- evaluate --task zeroshot --prompts: the result names the prompts used ------------------------
@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory):
    import textwrap

    from training_cli.main import main

    root = tmp_path_factory.mktemp("zeroshot")
    (root / "pretrain.yaml").write_text(
        textwrap.dedent(f"""\
        data: {{kind: phantoms, path: {root / "phantoms"}, n: 60, seed: 4}}
        encoders: {{image: tiny-vit, text: tiny-bert}}
        cache: {{patch_pool: 2, batch_size: 16, workers: 0}}
        adaptor: {{dim: 32, heads: 2, ffn_dim: 64, cross_heads: 2}}
        loss: {{local_candidates: 4}}
        train: {{epochs: 1, batch_size: 16, lr: 2.0e-3}}
        """)
    )
    (root / "eval.yaml").write_text(
        textwrap.dedent(f"""\
        data: {{kind: phantoms, path: {root / "phantoms"}, n: 60, seed: 4, classes: [normal, pneumonia, covid19]}}
        prompts: phantoms
        """)
    )
    assert main(["pretrain", "--config", str(root / "pretrain.yaml"), "--out", str(root / "pre"), "--no-progress"]) == 0
    return root


@pytest.mark.slow
def test_zeroshot_takes_a_prompt_set_by_file_name_or_config_key(tiny_pretrained, capsys):
    import json

    from training_cli.main import main

    root = tiny_pretrained
    base = ["evaluate", "--run", str(root / "pre"), "--task", "zeroshot", "--bootstrap", "20", "--no-progress"]
    assert main([*base, "--config", str(root / "eval.yaml"), "--out", str(root / "zs-key")]) == 0
    m = json.loads((root / "zs-key" / "metrics.json").read_text())["metrics"]
    assert m["prompt_set"] == "phantoms" and m["prompts_file"].endswith("configs/prompts/phantoms.yaml")
    assert m["prompts"]["pneumonia"]["negative"][1].startswith("Bilateral peripheral ground-glass")
    assert "Prompts used: set **phantoms**" in (root / "zs-key" / "report.md").read_text()
    assert "prompts: phantoms" in capsys.readouterr().out
    f = ROOT / "configs" / "prompts" / "covidx.yaml"
    assert main([*base, "--config", str(root / "eval.yaml"), "--prompts", str(f), "--out", str(root / "zs-file")]) == 0
    m2 = json.loads((root / "zs-file" / "metrics.json").read_text())["metrics"]
    assert m2["prompt_set"] == "covidx" and set(m2["per_class"]) == {"normal", "pneumonia", "covid19"}
    assert m2["per_class"]["pneumonia"]["auroc"] != m["per_class"]["pneumonia"]["auroc"]  # the prompts matter
    # a set lacking a class of the data: one clear error
    assert (
        main([*base, "--config", str(root / "eval.yaml"), "--prompts", "rsna-pneumonia", "--out", str(root / "zs-bad")])
        == 2
    )
    assert "no prompts for ['normal', 'covid19']" in capsys.readouterr().err


# ---- the released code's pooled behaviour, as a labelled option --------------------------------
def test_paper_released_code_normalises_and_attends_across_the_batch():
    import torch

    from core_model.adaptor import Adaptor, AdaptorConfig, make_config

    torch.manual_seed(0)
    faithful = Adaptor(make_config("paper", 16, 12, dim=32, heads=4, ffn_dim=64, paper_released_code=True)).eval()
    ours = Adaptor(make_config("paper", 16, 12, dim=32, heads=4, ffn_dim=64)).eval()
    ours.load_state_dict(faithful.state_dict())  # the same weights: only the flag differs
    x = torch.randn(6, 16)
    with torch.no_grad():
        for model, mixes in ((faithful, True), (ours, False)):
            alone = model.encode_image(x[:1]).pooled
            in_batch = model.encode_image(x).pooled[:1]
            other_batch = model.encode_image(torch.cat([x[:1], torch.randn(5, 16)])).pooled[:1]
            # the released code: an image's embedding depends on the other images of its batch
            assert torch.allclose(in_batch, other_batch, atol=1e-6) is not mixes
            assert torch.allclose(alone, in_batch, atol=1e-6) is not mixes
        # ... and the projected vectors are L2-normalised first, so the input's scale does not matter
        assert torch.allclose(faithful.encode_image(3 * x).pooled, faithful.encode_image(x).pooled, atol=1e-5)
        assert not torch.allclose(ours.encode_image(3 * x).pooled, ours.encode_image(x).pooled, atol=1e-3)
        t = torch.randn(6, 12)
        assert torch.allclose(faithful.encode_text(3 * t).pooled, faithful.encode_text(t).pooled, atol=1e-5)
    with pytest.raises(ValueError, match="pooled"):
        AdaptorConfig(image_dim=16, text_dim=12, paper_released_code=True)


# ---- ablation rows ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_ablation_rows_are_pretrained_scored_and_compared_with_the_method(tiny_pretrained):
    import json
    import textwrap

    import torch

    from core_model.training.artifacts import load_adaptor
    from training_cli.main import main

    root = tiny_pretrained
    data = f"data.path={root / 'phantoms'}"
    (root / "ablate.yaml").write_text(
        textwrap.dedent(f"""\
        name: ablate
        seeds: 1
        fractions: [1.0]
        bootstrap: 30
        pretrain: {{config: {root / "pretrain.yaml"}}}
        controls: []
        heads: [linear]
        ablations:
          - name: released
            preset: paper
            overrides: ["adaptor.dim=32", "adaptor.heads=2", "adaptor.ffn_dim=64", "adaptor.paper_released_code=true"]
            description: paper preset as the released code runs it
          - {{name: contextual, overrides: ["adaptor.cross_tokens=contextual"]}}
        tasks:
          - name: cls
            task: classification
            metric: auroc
            overrides: ["{data}", "data.n=60", "data.seed=4", "data.classes=[normal, pneumonia, covid19]",
                        "train.epochs=3", "cache.workers=0", "eval.examples=0"]
          - name: seg
            task: segmentation
            metric: dice_positive
            overrides: ["{data}", "data.n=60", "data.seed=4", "head.kind=light", "train.epochs=1",
                        "cache.workers=0", "eval.examples=0"]
          - name: retr
            task: retrieval
            metric: i2t_R@5
            overrides: ["{data}", "data.n=60", "data.seed=4", "data.classes=[normal, pneumonia, covid19]",
                        "cache.workers=0"]
        """)
    )
    out = root / "ablate-out"
    assert main(["protocol", "--config", str(root / "ablate.yaml"), "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert rows["released"]["ablation"] and rows["contextual"]["ablation"] and not rows["adaptor"]["ablation"]
    cells = {(c["task"], c["row"]): c for c in results["cells"]}
    for row in ("adaptor", "released", "contextual"):
        assert cells[("cls", row)]["status"] == "measured" and cells[("retr", row)]["status"] == "measured"
    assert "not applicable" in cells[("seg", "released")]["reason"]  # pooled: no patch tokens
    assert cells[("seg", "contextual")]["status"] == "measured"
    pairs = {(k["task"], k["method"], k["control"]) for k in results["comparisons"]}
    assert {("cls", "adaptor", "released"), ("retr", "adaptor", "contextual")} <= pairs
    released, _, _ = load_adaptor(out / "pretrained" / "released", torch.device("cpu"))
    assert released.config.mode == "pooled" and released.config.paper_released_code
    contextual, _, _ = load_adaptor(out / "pretrained" / "contextual", torch.device("cpu"))
    assert contextual.config.cross_tokens == "contextual" and not contextual.config.paper_released_code
    assert "ablation released: paper preset as the released code runs it" in (out / "results.md").read_text()
