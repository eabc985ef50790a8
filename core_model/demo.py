"""`adaptor-train demo`: the whole chain on synthetic phantoms, on a CPU, in minutes.

phantoms -> precompute -> pretrain (tiny-vit + real MiniLM) -> finetune-cls -> finetune-seg ->
evaluate (zero-shot, retrieval) -> export (bundle, int8 text graph, domain model) -> the domain guard
on the phantom test split and generated non-chest images -> demo studies (DICOM + reports).
With ``assets`` the bundle, the studies and the metrics are also written to the demo assets
folder (``assets/demo``) that ``adaptor-review --demo`` and the installer use.

It sits above :mod:`core_model.training` and :mod:`core_model.export` (it runs both); its runs
are made by :mod:`core_model.training.pipeline`, like every other run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from core_model.errors import ConfigError
from core_model.fileio import atomic_write, atomic_write_json, publish_dir

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
RECIPE = {
    "pretrain": "phantoms-minilm.yaml",
    "classification": "phantoms-cls.yaml",
    "segmentation": "phantoms-seg.yaml",
}
# The demo's segmentation head section: the light decoder and no dropout key (unlike the
# pipeline's default, progressive with dropout 0.0), as the committed demo assets were built.
DEMO_SEGMENTATION_HEAD = {"kind": "light"}


def _config(name: str) -> Path:
    p = CONFIGS / name
    if not p.exists():
        raise ConfigError(f"the demo recipe {p} is missing (run the demo from a checkout of the repository)")
    return p


def headline(out: Path) -> dict:
    """The demo's key figures, from the runs' metrics files."""

    def load(rel):
        p = out / rel / "metrics.json"
        return json.loads(p.read_text()) if p.exists() else {}

    pre = load("pretrain").get("final", {})
    cls = load("cls").get("metrics", {})
    seg = load("seg").get("metrics", {})
    zs = load("eval-zeroshot").get("metrics", {})
    ret = load("eval-retrieval").get("metrics", {})
    grd = load("eval-grounding").get("metrics", {})
    grd_val = load("eval-grounding-val").get("metrics", {})
    dom = load("eval-domain").get("metrics", {})
    return {
        "pretrain_val_i2t_P@5_finding": pre.get("i2t_P@5_finding"),
        "pretrain_val_t2i_P@5_finding": pre.get("t2i_P@5_finding"),
        "cls_test_auroc": {k: v.get("auroc") for k, v in cls.get("per_class", {}).items()},
        "cls_test_auroc_macro": (cls.get("auroc_macro") or {}).get("auroc"),
        "seg_test_dice_positive": seg.get("dice_positive"),
        "seg_test_dice_mgca": seg.get("dice_mgca"),
        "seg_test_empty_baseline_dice_mgca": (seg.get("empty_baseline") or {}).get("dice_mgca"),
        "zeroshot_test_auroc": {k: v.get("auroc") for k, v in zs.get("per_class", {}).items()},
        "retrieval_test_i2t_P@5_finding": ret.get("i2t_P@5_finding"),
        "grounding_test_pointing_game": {
            k: v.get("pointing_game_prompt") for k, v in grd.get("per_finding", {}).items()
        },
        "grounding_test_positional_prior": {
            k: v.get("positional_prior") for k, v in grd.get("per_finding", {}).items()
        },
        "grounding_test_chance": {k: v.get("chance") for k, v in grd.get("per_finding", {}).items()},
        "grounding_val_pointing_game": {
            k: v.get("pointing_game_prompt") for k, v in grd_val.get("per_finding", {}).items()
        },
        "grounding_val_positional_prior": {
            k: v.get("positional_prior") for k, v in grd_val.get("per_finding", {}).items()
        },
        "domain_test_in_domain_rate": (dom.get("in_domain") or {}).get("in_domain_rate"),
        "domain_generated_out_of_domain_rate": ((dom.get("out_of_domain") or {}).get("generated") or {}).get(
            "out_of_domain_rate"
        ),
        "domain_auroc_score_generated": dom.get("auroc_score"),
    }


def run_demo(
    out: str | os.PathLike, *, assets: str | os.PathLike | None = None, n: int = 2000, progress: bool = True
) -> dict:
    from core_model.data.demo_studies import write_demo_studies
    from core_model.data.readers import ensure_phantom_manifest
    from core_model.export.bundle import export_bundle
    from core_model.training.artifacts import pretrained_exists
    from core_model.training.config import PRETRAIN_DEFAULTS, load_config
    from core_model.training.datasets import ensure_cache, load_records
    from core_model.training.evaluate import evaluate
    from core_model.training.pipeline import ensure_finetuned, load_finetune_config, pretrain

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    phantoms = out / "phantoms"
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    reused: list[str] = []

    def stage(name):
        print(f"\n== demo: {name} ==", flush=True)
        return time.perf_counter()

    t = stage("synthetic phantoms")
    if (phantoms / "manifest.csv").exists():
        reused.append("phantoms")
    data_over = [f"data.path={json.dumps(str(phantoms))}", f"data.n={n}"]
    pcfg = load_config(PRETRAIN_DEFAULTS, _config(RECIPE["pretrain"]), data_over)
    ensure_phantom_manifest(pcfg["data"])
    timings["phantoms"] = time.perf_counter() - t

    t = stage("precompute frozen features")
    result = load_records(pcfg["data"])
    from core_model.training.datasets import default_cache_dir

    if (default_cache_dir(pcfg, result.records) / "manifest.json").exists():
        reused.append("precompute")
    cache = ensure_cache(pcfg, result.records, progress=progress)
    timings["precompute"] = time.perf_counter() - t

    t = stage("pretrain the Adaptor")
    run = out / "pretrain"
    if pretrained_exists(run):
        reused.append("pretrain")
    else:
        pretrain(pcfg, run, result=result, cache=cache, progress=progress)
    timings["pretrain"] = time.perf_counter() - t

    ft_over = data_over + [f"pretrained={json.dumps(str(run))}", "pretrain_config=null"]
    for key, name in (("classification", "cls"), ("segmentation", "seg")):
        t = stage(f"fine-tune {key}")
        head = DEMO_SEGMENTATION_HEAD if key == "segmentation" else None
        if not ensure_finetuned(key, _config(RECIPE[key]), out / name, ft_over, head=head, progress=progress):
            reused.append(name)
        timings[name] = time.perf_counter() - t

    t = stage("evaluate (zero-shot, retrieval, grounding)")
    for task in ("zeroshot", "retrieval", "grounding"):
        dst = out / f"eval-{task}"
        dst.mkdir(exist_ok=True)
        data = load_finetune_config("classification", _config(RECIPE["classification"]), ft_over)["data"]
        evaluate(run, task, data, dst, progress=progress)
    # what the app may show is decided on validation (the bundle's card), the test split reports
    (out / "eval-grounding-val").mkdir(exist_ok=True)
    evaluate(run, "grounding", data, out / "eval-grounding-val", split="val", progress=progress)
    timings["evaluate"] = time.perf_counter() - t

    t = stage("export the int8 bundle")
    bundle = out / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    export_bundle(
        [out / "cls", out / "seg"],
        bundle,
        quantize="int8-text",
        bundle_id="cxr-adaptor-demo-phantoms",
        grounding=out / "eval-grounding-val",
    )
    timings["export"] = time.perf_counter() - t

    t = stage("domain guard (phantom test split vs generated non-chest images)")
    from core_model.training.evaluate_domain import evaluate_domain, summary_lines

    dom = evaluate_domain(bundle, None, out / "eval-domain")
    for line in summary_lines(dom):
        print("  " + line)
    timings["domain"] = time.perf_counter() - t

    t = stage("demo studies")
    studies = out / "studies"
    if studies.exists():
        shutil.rmtree(studies)
    atomic_write_json(out / "studies.json", write_demo_studies(phantoms, studies))
    timings["studies"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all

    bundle_bytes = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    summary_doc = {
        "research_use_only": True,
        "synthetic_data": True,
        "n_phantoms": n,
        "recipe": {k: f"configs/{v}" for k, v in RECIPE.items()},
        "metrics": headline(out),
        "bundle_bytes": bundle_bytes,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "reused_from_an_earlier_run": reused,
    }
    atomic_write_json(out / "demo.json", summary_doc)
    atomic_write_json(out / "metrics.json", {"command": "demo", **summary_doc})
    if assets:
        publish_assets(out, Path(assets), summary_doc)
    return summary_doc


def publish_assets(out: Path, assets: Path, summary_doc: dict) -> None:
    """Replace assets/demo/{bundle,studies,metrics.json} with this run's (atomically per part)."""
    assets.mkdir(parents=True, exist_ok=True)
    for part in ("bundle", "studies"):
        tmp = assets / f".{part}.new"
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(out / part, tmp)
        publish_dir(tmp, assets / part)
    atomic_write_json(assets / "metrics.json", summary_doc)
    atomic_write(assets / "studies.json", (out / "studies.json").read_bytes())
