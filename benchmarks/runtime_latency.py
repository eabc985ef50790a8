"""Runtime latency: the bundle's whole analysis against the bare image-graph forward and torch eager.

Analysis: a bundle with a DINOv2 ViT-S/14 at 224 px + Adaptor + classification head +
segmentation decoder (random weights, the real architectures: same compute as trained ones) and a
domain model, written as export writes one and opened with ``load_bundle``. On DICOMs written by
the repo's own writer, small (512 x 640) and real-sized (2,000 x 2,500), 16-bit, uncompressed and
JPEG Lossless (plus the real SIIM sample, 8-bit JPEG Baseline, when present), it times
``Bundle.analyze`` (decode + preprocess + image graph + domain guard + mask on the original grid)
against the bare forward of the same onnxruntime session on a preallocated input, and torch eager
doing the same work with the torch graph; then the phrase heatmap for an analysed image (text
graph + heatmap graph + map on the original grid). Retrieval: exact top-10 over banks of 10k,
100k and 1M report embeddings, and the HNSW report index (core_model.runtime.report_index, built
as export builds it) against exact search at 100k (and 1M with --index-1m): build time, top-10
ms of each, recall@10 of the index against exact. The banks are seeded synthetic 256-d
embeddings clustered like a report bank (topics of near-duplicate reports); on structureless
Gaussian vectors no HNSW reaches the recall goal at this speed (see benchmarks/README.md).

    python benchmarks/runtime_latency.py [--images 20] [--text tiny-bert|minilm] [--threads 0]
        [--bank-sizes 10000,100000,1000000] [--index-sizes 100000] [--index-1m] [--only analysis|retrieval]
        [--quick]

Targets (issue 15) on the 2-core CI machine: analyze <= 1.5x the bare forward on small files and
<= 2x on real-sized ones (decode included); >= 3x faster than torch eager doing the same; the
phrase heatmap <= 30 ms after the analysis; exact top-10 over 1M reports <= 50 ms; index top-10
<= 2 ms with recall@10 >= 0.98 (the issue's goal is at 1 M; --index-1m: its build took 724 s here).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def build(text_name: str, folder: Path):
    import torch

    from core_model.adaptor import Adaptor, make_config
    from core_model.encoders import create_image_encoder, create_text_encoder
    from core_model.export.bundle import export_onnx
    from core_model.export.graphs import HeatmapGraph, ImageGraph, TextGraph
    from core_model.heads import SegDecoder, make_cls_head

    torch.manual_seed(0)
    vit = create_image_encoder("tiny-vit", hidden_size=384, layers=12, heads=6, patch_size=14)  # ViT-S/14
    txt = create_text_encoder(text_name)
    adaptor = Adaptor(
        make_config("tokens", 384, txt.dim, dim=256, heads=4, layers=1, ffn_dim=1024, patch_grid=(8, 8), local_mixing=1)
    ).eval()
    image = ImageGraph(
        vit,
        adaptor,
        encoder_grid=(16, 16),
        cls_pool=2,
        cls_head=make_cls_head("mlp", 256, 3).eval(),
        temperature=1.2,
        seg_decoder=SegDecoder(256, (8, 8), 224, "light").eval(),
        seg_pool=2,
    ).eval()
    text = TextGraph(txt, adaptor).eval()
    heat = HeatmapGraph(adaptor).eval()
    export_onnx(image, text, heat, 224, folder)
    return image, text, heat, txt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20, help="timed repetitions per side")
    ap.add_argument("--text", default="tiny-bert", help="text encoder preset (tiny-bert or minilm)")
    ap.add_argument("--threads", type=int, default=0, help="threads for both sides (0: library defaults)")
    ap.add_argument("--bank-sizes", default="10000,100000,1000000", help="exact-search bank sizes")
    ap.add_argument("--index-sizes", default="100000", help="bank sizes for the report index ('' for none)")
    ap.add_argument("--index-1m", action="store_true", help="also build and time the index at 1,000,000")
    ap.add_argument("--only", choices=["analysis", "retrieval"], help="run one half only")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 3 images, small banks")
    args = ap.parse_args()
    if args.quick:
        args.images, args.bank_sizes, args.index_sizes = 3, "10000", "5000"
    if args.index_1m:
        args.index_sizes = ",".join(filter(None, [args.index_sizes, "1000000"]))
    if args.only != "retrieval":
        analysis(args)
    if args.only != "analysis":
        retrieval(args)
    return 0


def interleaved(fns, repeat: int, every=None) -> list[float]:
    """Median ms of each of ``fns``, run in turn (after one warm-up each); ``every[i]``: run the
    i-th only every that many rounds (a slow baseline)."""
    every = every or [1] * len(fns)
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()
    for r in range(repeat):
        for i, fn in enumerate(fns):
            if r % every[i] == 0:
                t = time.perf_counter()
                fn()
                times[i].append((time.perf_counter() - t) * 1000)
    return [statistics.median(t) for t in times]


def bench_bundle(folder: Path, image, text, heat, txt, *, seed: int = 0) -> Path:
    """Complete the folder :func:`build` exported the graphs to into a bundle, written as export
    writes one (tokenizer, report bank, config, card, a domain model fitted on the image graph's
    own outputs, manifest), so that ``load_bundle`` and ``Bundle.analyze`` run as in the app."""
    import json

    import torch

    from core_model.export.bundle import write_manifest
    from core_model.fileio import atomic_write_json
    from core_model.runtime.domain import fit_domain_model

    txt.save_tokenizer(folder / "tokenizer")
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        outs = image(torch.from_numpy(rng.standard_normal((48, 3, 224, 224), dtype=np.float32) * 0.5))
    emb, patches = outs[4].numpy(), outs[3].numpy()
    dim = int(emb.shape[1])
    (folder / "reports").mkdir()
    bank = rng.standard_normal((2000, dim), dtype=np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    np.save(folder / "reports" / "embeddings.npy", bank.astype(np.float16), allow_pickle=False)
    with open(folder / "reports" / "reports.jsonl", "w") as f:
        for i in range(len(bank)):
            f.write(json.dumps({"id": f"r{i}", "text": f"synthetic report {i}"}) + "\n")
    domain, fit = fit_domain_model(
        (emb[:40], patches[:40]), (emb[40:], patches[40:]), views=("PA", "AP"), grid=(8, 8), synthetic=True
    )
    tok = txt.tokenizer
    config = {
        "classes": ["normal", "pneumonia", "covid19"],
        "task": "multilabel",
        "thresholds": {"normal": 0.5, "pneumonia": 0.5, "covid19": 0.5},
        "temperature": 1.2,
        "mask_label": "pneumothorax",
        "mask_threshold": 0.5,
        "preprocess": {"size": 224, "mean": 0.5, "std": 0.5, "channels": 3, "resize": "letterbox", "resize_to": None},
        "patch_grid": [8, 8],
        "embedding_dim": dim,
        "text": {
            "max_length": 112,
            "special_ids": sorted(int(i) for i in tok.all_special_ids),
            "pad_id": int(tok.pad_token_id or 0),
        },
        "graphs": {"image": "image.onnx", "text": "text.onnx", "heatmap": "heatmap.onnx"},
        "report_bank": {"count": len(bank), "source": "synthetic (benchmark)", "index": None},
        "research_use_only": True,
        "domain": domain.save(folder),
    }
    atomic_write_json(folder / "config.json", config)
    card = {"name": "runtime_latency benchmark (random weights)", "research_use_only": True, "domain": fit}
    atomic_write_json(folder / "model_card.json", card)
    write_manifest(folder, "benchmark-vit-s14")
    return folder


def bench_files(folder: Path, quick: bool = False) -> list[tuple[str, Path]]:
    """(label, path) of the DICOMs the analysis is timed on: small (512 x 640) and real-sized
    (2,000 x 2,500), 16 bits allocated / 12 stored with a VOI window as DX detectors write them,
    uncompressed and JPEG Lossless SV1, written by the repo's own writer; plus the real SIIM
    sample (1,024 x 1,024 8-bit JPEG Baseline) when it is on this machine."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1

    from core_model.imaging.dicom_write import DicomSpec, write_dicom

    rng = np.random.default_rng(0)
    out = []
    for size_label, (rows, cols) in (("small", (640, 512)), ("real-size", (2500, 2000))):
        yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        body = 1800 + 1400 * np.sin(xx / (cols / 6.5)) * np.cos(yy / (rows / 6.0))
        pixels = (body + rng.normal(0, 25, (rows, cols))).clip(0, 4095).astype(np.uint16)
        spec = DicomSpec(bits_stored=12, windows=[(2048.0, 4000.0)], modality="DX", view_position="PA")
        for ts_label, ts in (("uncompressed", ExplicitVRLittleEndian), ("JPEG lossless", JPEGLosslessSV1)):
            path = folder / f"{size_label}-{ts_label.replace(' ', '-')}.dcm"
            write_dicom(path, pixels, spec, ts)
            out.append((f"{size_label} {cols}x{rows} 16-bit {ts_label}", path))
    real = ROOT.parent / "shared" / "data" / "real" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    if real.exists() and not quick:
        out.insert(2, ("small 1024x1024 8-bit JPEG baseline (real SIIM)", real))
    return out


def analysis(args) -> None:
    import torch

    from benchmarks._targets import print_target
    from core_model.imaging.preprocess import from_square, prepare_input_with_shape
    from core_model.runtime import load_bundle
    from core_model.runtime.domain import header_view_modality

    if args.threads:
        torch.set_num_threads(args.threads)
    phrase = "right lower lobe consolidation"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bundle"
        folder.mkdir()
        image, text, heat, txt = build(args.text, folder)
        bench_bundle(folder, image, text, heat, txt)
        b = load_bundle(folder, threads=args.threads)
        spec, dm = b.preprocess, b.domain_model
        files = bench_files(Path(tmp), quick=args.quick)
        session = b.sessions.get("image")
        x0 = np.random.default_rng(1).standard_normal((1, 3, 224, 224), dtype=np.float32)
        bare = lambda: session.run(None, {"pixel_values": x0})  # noqa: E731

        @torch.no_grad()
        def torch_analyze(path):  # the same work as Bundle.analyze, with the torch image graph
            x, (h, w) = prepare_input_with_shape(path, spec)
            probs, _, mask_logits, patches, emb = (t.numpy() for t in image(torch.from_numpy(x)[None]))
            score = float(dm.scores(emb, patches)[0])
            view, modality = header_view_modality(path)
            dm.assess(score, view=view, modality=modality)
            mask = from_square(1.0 / (1.0 + np.exp(-mask_logits[0, 0])), h, w, spec)
            return float((mask >= 0.5).mean())

        # Interleaved (forward, analyze, torch eager, ...) so that a change of load on the shared
        # machine hits a ratio's two sides alike; each file's ratio uses the forwards of its loop.
        rows, forwards = [], []
        for label, path in files:
            fwd, ours, eager = interleaved(
                [bare, lambda p=path: b.analyze(p), lambda p=path: torch_analyze(p)],
                args.images,
                every=[1, 1, 2],
            )
            rows.append((label, fwd, ours, eager))
            forwards.append(fwd)
        forward = statistics.median(forwards)
        real_raw = next(p for label, p in files if label.startswith("real-size") and "uncompressed" in label)
        a = b.analyze(real_raw)
        heat_full = median_ms(lambda: b.heatmap(a, phrase), args.images)
        heat_grid = median_ms(lambda: b.patch_heatmap(a, phrase), args.images)

    print(
        f"Analysis latency, DINOv2 ViT-S/14 at 224 px + Adaptor + classification + segmentation + domain "
        f"guard, random weights (median of {args.images}; torch eager median of {max(3, args.images // 2)}):"
    )
    print(f"  bare image-graph forward (onnxruntime, preallocated input): {forward:.1f} ms (median over the files)")
    print(f"  {'file':<52} {'forward':>8} {'analyze ms':>10} {'/ forward':>9} {'torch ms':>9} {'torch/ours':>10}")
    for label, fwd, ours, eager in rows:
        print(f"  {label:<52} {fwd:8.1f} {ours:10.1f} {ours / fwd:9.2f} {eager:9.1f} {eager / ours:10.2f}")
    print(f"  phrase heatmap after the analysis ({args.text}), on the original 2000x2500 grid: {heat_full:.1f} ms")
    print(f"  phrase heatmap on the patch grid (text graph + heatmap graph only): {heat_grid:.1f} ms")
    print("  (analyze = decode + preprocess + image graph + domain guard + mask on the original grid;")
    print("   JPEG Lossless has no reduced-resolution decode: every pixel is predicted from its neighbours)")
    for label, fwd, ours, _eager in rows:
        kind = "small" if label.startswith("small") else "real_size"
        syntax = "jpeg_lossless" if "lossless" in label else "jpeg_baseline" if "baseline" in label else "uncompressed"
        goal = 1.5 if kind == "small" else 2.0
        print_target(
            f"analyze_{kind}_{syntax}_vs_forward", ours, "ms", baseline=fwd,
            goal=f"ratio <= {goal}", met=ours / fwd <= goal,
        )  # fmt: skip
    worst = min(rows, key=lambda r: r[3] / r[2])  # the file where ours gains least
    print_target(
        "analyze_vs_torch_eager", worst[2], "ms", baseline=worst[3], ratio=worst[3] / worst[2],
        goal="ratio >= 3", met=worst[3] / worst[2] >= 3,
    )  # fmt: skip
    print_target("heatmap_after_analysis", heat_full, "ms", goal="<= 30 ms", met=heat_full <= 30)


def clustered_bank(n: int, dim: int = 256, seed: int = 0) -> np.ndarray:
    """Seeded synthetic report embeddings: n / 50 topics, each report its topic plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(2, n // 50), dim), dtype=np.float32)
    emb = centres[rng.integers(0, len(centres), n)]
    emb += 0.7 * rng.standard_normal((n, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb


def retrieval(args) -> None:
    from benchmarks._targets import print_target
    from core_model.export.report_index import build_report_index, exact_top, held_out_queries, recall_at_k
    from core_model.runtime.retrieval import ReportBank

    print("Exact top-10 retrieval (d=256, fp32 in memory, one query, median of 20):")
    rng = np.random.default_rng(0)
    exact_1m = None
    for n in (int(s) for s in args.bank_sizes.split(",") if s):
        emb = rng.standard_normal((n, 256), dtype=np.float32)
        bank = ReportBank([str(i) for i in range(n)], [""] * n, emb)
        del emb
        q = rng.standard_normal(256).astype(np.float32)
        ms = median_ms(lambda b=bank, q=q: b.top_k(q, 10), 20)
        # baseline: the obvious full sort
        base = median_ms(lambda b=bank, q=q: np.argsort(-(b.embeddings @ q))[:10], 5)
        print(f"  {n:>9,} reports: {ms:7.2f} ms (full sort: {base:7.2f} ms, {base / ms:.1f}x)")
        if n >= 1_000_000:
            exact_1m = (ms, base)
        bank = None
    if exact_1m:
        print_target(
            "exact_top10_1m", exact_1m[0], "ms", baseline=exact_1m[1], ratio=exact_1m[1] / exact_1m[0],
            goal="<= 50 ms", met=exact_1m[0] <= 50,
        )  # fmt: skip

    sizes = [int(s) for s in args.index_sizes.split(",") if s]
    if not sizes:
        return
    print("Report index (HNSW, hnswlib, M 16, ef_construction 200) vs exact, clustered synthetic bank, d=256:")
    print(f"  {'reports':>9} {'build s':>8} {'ef':>5} {'exact ms':>9} {'index ms':>9} {'recall@10':>10}")
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            emb16 = clustered_bank(n).astype(np.float16)
            np.save(folder / "embeddings.npy", emb16, allow_pickle=False)
            t = time.perf_counter()
            meta = build_report_index(folder)
            build_s = time.perf_counter() - t
            bank = ReportBank([str(i) for i in range(n)], [""] * n, emb16)
            del emb16
            bank.attach_index(folder, None)
            queries = held_out_queries(bank.embeddings, n=200, seed=7)  # not export's calibration queries
            exact_ms = statistics.median(_times(lambda q, b=bank: b.top_k(q, 10, exact=True), queries[:20]))
            index_ms = statistics.median(_times(lambda q, b=bank: b.top_k(q, 10), queries))
            found = np.stack([bank.top_k(q, 10)[0] for q in queries])
            truth = np.concatenate([exact_top(bank.embeddings, queries[i : i + 50], 10) for i in range(0, 200, 50)])
            recall = recall_at_k(found, truth)
            bank = None
        print(f"  {n:>9,} {build_s:8.1f} {meta.ef_search:5d} {exact_ms:9.2f} {index_ms:9.3f} {recall:10.4f}")
        rows.append((n, exact_ms, index_ms, recall))
    for n, exact_ms, index_ms, recall in rows:
        tag = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}m"
        print_target(
            f"index_top10_{tag}", index_ms, "ms", baseline=exact_ms, ratio=exact_ms / index_ms,
            goal="<= 2 ms", met=index_ms <= 2,
        )  # fmt: skip
        print_target(f"index_recall_at_10_{tag}", recall, "recall", baseline=1.0, goal=">= 0.98", met=recall >= 0.98)


def _times(fn, queries) -> list[float]:
    fn(queries[0])  # warm-up
    out = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - t) * 1000)
    return out


if __name__ == "__main__":
    sys.exit(main())
