"""The benchmark scripts' measuring functions, at toy sizes: they must keep running as the package changes."""

from benchmarks import bench_data, bench_dedup, bench_extract, bench_train_step, harness


def hold_megabytes(n: int) -> dict:
    block = bytearray(n * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
    return {"held": len(block)}


def test_isolated_case_reports_its_own_peak_memory_not_its_parents():
    parent = bytearray(1500 * 2**20)
    parent[::4096] = b"x" * len(parent[::4096])
    small, large = harness.isolated(hold_megabytes, 1), harness.isolated(hold_megabytes, 400)
    assert small["peak_rss_mb"] < 1500 and large["peak_rss_mb"] >= small["peak_rss_mb"] + 350


def test_data_benchmark_cases(tmp_path):
    root = bench_data.write_images(tmp_path, 20)
    assert bench_data.baseline(root, 32, 0)["images_per_s"] > 0
    cached = bench_data.project(root, 32, 0, tmp_path / "cache", "none")
    assert cached["images_per_s"] > 0 and cached["cache_build_s"] > 0


def test_training_step_benchmark_cases():
    project = bench_train_step.project("resnet18", 32, 16, 2)
    assert project["images_per_s"] > 0 and 0 <= project["data_wait"] <= 1
    bare = bench_train_step.bare("resnet18", 32, 16, 2)
    assert bare["images_per_s"] > 0 and 0 <= bare["data_wait"] <= 1
    phases = bench_train_step.breakdown("resnet18", 32, 16, 2)
    assert set(phases) == set(bench_train_step.PHASES) and min(phases.values()) >= 0
    assert phases["forward"] > 0 and phases["backward"] > 0 and phases["optimizer"] > 0


def test_extraction_and_stage2_benchmark_cases():
    assert bench_extract.extract_project("resnet18", 32, 16)["per_s"] > 0
    assert bench_extract.extract_bare("resnet18", 32, 16)["per_s"] > 0
    assert bench_extract.classifier_project(256)["per_s"] > 0
    assert bench_extract.classifier_bare(256)["per_s"] > 0


def test_dedup_benchmark_finds_the_same_pairs_as_sklearn():
    project, baseline = bench_dedup.project(400, 32), bench_dedup.sklearn_baseline(400, 32)
    assert project["pairs"] == baseline["pairs"] >= 50
