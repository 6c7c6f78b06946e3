"""The benchmark end to end on a tiny procedural dataset: every stage present, positive numbers, agreement recorded."""
import json
import math
import warnings

import pytest

from benchmarks import STAGES, BenchmarkConfig
from experiments.benchmark import main, parse_args
from models.accel import native_bf16


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_benchmark_end_to_end_tiny(tmp_path):
    config = BenchmarkConfig(
        synthetic_root=str(tmp_path / "faces"), synthetic_images=64, size=32, repeats=1, decode_workers=1,
        baseline_batch_size=16, encode_batch=32, train_images=32, train_batch_size=16, threads=1, probe_jobs=1,
        encode_sizes=(64, 128), train_sizes=(32,), encode_batch_sizes=(16, 64), train_batch_sizes=(16,),
        batch_sweep_images=64, out_dir=str(tmp_path / "benchmarks"), runs_root=str(tmp_path / "runs"),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = main(config)
    # Every cache the benchmark writes has a folder of its own: none is replaced by other data.
    assert not [w for w in caught if "replaced the cache" in str(w.message)]

    files = list((tmp_path / "benchmarks").glob("*.json"))
    assert len(files) == 1 and files[0].name.endswith(f"-{results['machine']['description']}.json")
    saved = json.loads(files[0].read_text())
    assert set(STAGES) - {"resident"} <= set(saved["stages"])
    assert "celeba_resident" not in saved["stages"]  # CUDA only: skipped on CPU, not faked
    machine = saved["machine"]
    assert machine["torch"] and machine["cpu_count"] >= 1 and machine["device_name"]
    assert saved["dataset"]["num_images"] == 64 and saved["dataset"]["size"] == 32

    enc = saved["stages"]["encode"]
    for path in ("baseline", "project_end_to_end", "project_resident"):
        assert enc[path]["images"] == 64
        assert _positive(enc[path]["wall_s"]) and _positive(enc[path]["images_per_s"]), path
        assert _positive(enc[path]["peak_rss_mb"]) and _positive(enc[path]["peak_tree_pss_mb"]), path
    assert _positive(enc["speedup_resident"]) and _positive(enc["speedup_end_to_end"])
    agreement = enc["agreement"]
    for check in ("numerics", "pipeline", "resident_vs_end_to_end"):
        assert agreement[check]["max_abs"] >= 0 and isinstance(agreement[check]["passed"], bool)
    # Same pixels through both encoders: fp32 on CPU, so they agree closely whatever the weights.
    assert agreement["numerics"]["passed"] and agreement["resident_vs_end_to_end"]["max_abs"] < 1e-4
    pixels = agreement["pixels"]
    assert pixels["max_abs"] <= 255 and 0 <= pixels["mean_abs"] <= pixels["max_abs"]
    assert enc["project_resident"]["latents_device"] == "cpu"  # CUDA: left on the GPU, so the encoder is what is timed

    build = saved["stages"]["cache_build"]["runs"]
    assert {(r["draft"], r["workers"]) for r in build} == {(True, 1), (False, 1)}
    assert all(_positive(r["images_per_s"]) and _positive(r["images_per_s_per_worker"]) for r in build)
    assert {r["folder"] for r in build if r["draft"]}.isdisjoint(r["folder"] for r in build if not r["draft"])

    train = saved["stages"]["train"]
    for path in ("baseline", "project"):
        assert train[path]["images"] == 32 and _positive(train[path]["images_per_s"]), path
    assert _positive(train["speedup"])

    directions = saved["stages"]["directions"]
    for method in ("mean", "probe"):
        assert _positive(directions[method]["images_per_s"]), method

    scaling = saved["stages"]["scaling"]
    assert [p["images"] for p in scaling["encode_by_size"]] == [64, 128]
    assert [p["images"] for p in scaling["train_by_size"]] == [32]
    assert [p["batch_size"] for p in scaling["encode_by_batch"]] == [16, 64]
    assert [p["batch_size"] for p in scaling["train_by_batch"]] == [16]
    for point in scaling["encode_by_size"] + scaling["train_by_size"] + scaling["encode_by_batch"] + scaling["train_by_batch"]:
        assert _positive(point["images_per_s"]) and _positive(point["wall_s"])
    assert scaling["encode_knee_batch"] in (16, 64)

    profiled = saved["stages"]["profile"]
    assert _positive(profiled["ceilings"]["matmul_tflops"]) and _positive(profiled["ceilings"]["copy_gb_per_s"])
    for call, images in (("train_step", 16), ("encode", 32)):
        r = profiled[call]
        assert r["images_per_call"] == images and _positive(r["ms_per_call"]) and _positive(r["gflops_per_call"])
        assert _positive(r["kernel_ms_per_call"]) and r["top"] and r["verdict"].startswith("CPU")
    # The counted FLOPs are the model's: per image, a training step (encoder and decoder, forward and backward: about
    # 3 x (encoder + decoder)) costs several times the encoder's forward pass, not the same or a hundred times.
    per_image = {c: profiled[c]["gflops_per_call"] / profiled[c]["images_per_call"] for c in ("train_step", "encode")}
    assert 3 < per_image["train_step"] / per_image["encode"] < 20

    precision = saved["stages"]["precision"]
    if native_bf16("cpu"):  # fp32 against bf16, timed on this machine, and how far bf16 decodes land from fp32 ones
        for key in ("train_step_fp32", "train_step_bf16", "decode_fp32", "decode_bf16"):
            assert _positive(precision[key]["wall_s"])
        assert 25 < precision["decode_bf16_vs_fp32_psnr_db"] < 100
    else:
        assert "no native bf16" in precision["skipped"]

    statuses = {g["goal"]: g["status"] for g in saved["goals"]}
    assert any(goal.startswith("GPU") and status == "not measured" for goal, status in statuses.items())
    assert all(s in ("pass", "FAIL", "not measured") for s in statuses.values())
    kinds = {g["kind"] for g in saved["goals"]}
    assert {"GPU headline", "decode-bound", "CPU", "check"} <= kinds
    # The run folder keeps the same results and the summary table; the work caches are gone.
    run_dir = tmp_path / "runs" / saved["run_dir"].split("/")[-1]
    assert json.loads((run_dir / "results.json").read_text())["stages"].keys() == saved["stages"].keys()
    summary = (run_dir / "summary.md").read_text()
    assert "| goal | kind |" in summary and "decode-bound" in summary and "| profiled call |" in summary
    assert "Precision" in summary
    assert not (run_dir / "results.partial.json").exists()  # replaced by results.json once every stage is done
    assert not (run_dir / "work").exists()


def test_parse_args_preset_and_overrides():
    config = parse_args(["--preset", "gpu", "--repeats", "5", "--stages", "encode", "train", "--no-keep-work"])
    assert config.repeats == 5 and config.stages == ("encode", "train")
    assert config.encode_sizes == (10_000, 50_000, 200_000)
    auto = parse_args(["--threads", "2", "--probe-jobs", "3", "--decode-workers", "1", "--encode-batch", "32",
                       "--checkpoint", "c.pt", "--encode-compile"])
    assert (auto.threads, auto.probe_jobs, auto.decode_workers, auto.encode_batch) == (2, 3, 1, 32)  # ints, not strings
    assert auto.checkpoint == "c.pt" and auto.encode_compile is True
    with pytest.raises(ValueError, match="unknown stage"):
        BenchmarkConfig(stages=("encode", "fly"))
