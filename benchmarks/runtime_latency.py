"""Runtime latency: the torch-free bundle runtime (onnxruntime) vs torch eager on the same model.

Per image, both sides do the same work: decode + preprocess (the shared function) + the image
graph (frozen ViT + Adaptor image side + classification head + segmentation decoder) + the
text graph for one phrase + the heatmap graph. Random weights with the real architectures (same
compute as trained ones): a DINOv2 ViT-S/14 at 224 px (the issue's target) and, with --text
minilm, the real all-MiniLM-L6-v2. Then exact top-10 retrieval over banks of 10k, 100k and 1M
report embeddings, and the HNSW report index (core_model.runtime.report_index, built as export
builds it) against exact search at 100k (and 1M with --index-1m): build time, top-10 ms of each,
recall@10 of the index against exact. The banks are seeded synthetic 256-d embeddings clustered
like a report bank (topics of near-duplicate reports); on structureless Gaussian vectors no HNSW
reaches the recall goal at this speed (see benchmarks/README.md).

    python benchmarks/runtime_latency.py [--images 30] [--text tiny-bert|minilm] [--threads 0]
        [--bank-sizes 10000,100000,1000000] [--index-sizes 100000] [--index-1m] [--only analysis|retrieval]
        [--quick]

Targets on the 2-core CI machine: runtime >= 2x faster than torch eager; ViT-S/14 at 224 px
analysed in <= 150 ms median; exact top-10 over 1M reports <= 50 ms; index top-10 <= 2 ms with
recall@10 >= 0.98 (the issue's goal is at 1 M; --index-1m: its build took 724 s here).
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


def analysis(args) -> None:
    import onnxruntime as ort
    import torch

    from benchmarks._targets import print_target
    from core_model.imaging.preprocess import PreprocessSpec, prepare_input

    if args.threads:
        torch.set_num_threads(args.threads)
    image_path = ROOT.parent / "shared" / "data" / "real" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    if not image_path.exists():
        from PIL import Image

        image_path = Path(tempfile.mkdtemp()) / "img.png"
        Image.fromarray((np.random.default_rng(0).random((1024, 1024)) * 255).astype(np.uint8)).save(image_path)
    spec = PreprocessSpec(size=224)
    phrase = "right lower lobe consolidation"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image, text, heat, txt = build(args.text, folder)
        opts = ort.SessionOptions()
        if args.threads:
            opts.intra_op_num_threads = args.threads
        s_img, s_txt, s_heat = (
            ort.InferenceSession(str(folder / f), opts, providers=["CPUExecutionProvider"])
            for f in ("image.onnx", "text.onnx", "heatmap.onnx")
        )
        enc = txt.tokenize([phrase])
        ids_np, mask_np = enc["input_ids"].numpy(), enc["attention_mask"].numpy()
        weights_np = np.array(
            [[0.0 if int(t) in txt.tokenizer.all_special_ids else 1.0 for t in ids_np[0]]], np.float32
        )

        def runtime_once():
            x = prepare_input(image_path, spec)[None]
            outs = s_img.run(None, {"pixel_values": x})
            tok, _ = s_txt.run(None, {"input_ids": ids_np, "attention_mask": mask_np})
            s_heat.run(None, {"token_embeddings": tok, "word_weights": weights_np, "patch_tokens": outs[3]})

        @torch.no_grad()
        def torch_once():
            x = torch.from_numpy(prepare_input(image_path, spec))[None]
            outs = image(x)
            tok, _ = text(enc["input_ids"], enc["attention_mask"])
            heat(tok, torch.from_numpy(weights_np), outs[3])

        def image_only():
            s_img.run(None, {"pixel_values": prepare_input(image_path, spec)[None]})

        rt = median_ms(runtime_once, args.images)
        te = median_ms(torch_once, args.images)
        img_only = median_ms(image_only, args.images)
        decode = median_ms(lambda: prepare_input(image_path, spec), args.images)

    print(
        f"Per-image latency, ViT-S/14 at 224 px + Adaptor + heads + {args.text} phrase + heatmap "
        f"(median of {args.images}; input {image_path.name}):"
    )
    print(f"  {'decode + preprocess only':<40} {decode:8.1f} ms")
    print(f"  {'runtime (onnxruntime), analyse only':<40} {img_only:8.1f} ms")
    print(f"  {'runtime (onnxruntime), all graphs':<40} {rt:8.1f} ms")
    print(f"  {'torch eager, all graphs':<40} {te:8.1f} ms")
    print(f"  ratio torch / runtime: {te / rt:.2f}x")
    print_target("analyse_vit_s14_224", img_only, "ms", goal="<= 150 ms", met=img_only <= 150)
    print_target("runtime_vs_torch_eager", rt, "ms", baseline=te, ratio=te / rt, goal="ratio >= 2", met=te / rt >= 2)


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
