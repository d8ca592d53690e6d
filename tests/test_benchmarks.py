"""The benchmark scripts' measuring functions, at toy sizes: they must keep running as the package changes."""

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from benchmarks import bench_data, bench_dedup, bench_extract, bench_train_step, harness


@pytest.fixture
def in_process(monkeypatch):
    """Each case run in the test's own process: a spawned one costs seconds of imports per case, and
    ``harness.isolated`` has its own test above."""
    for script in (bench_data, bench_train_step):
        monkeypatch.setattr(script, "isolated", lambda fn, *args: fn(*args))


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
    for compute in ("fp32", "channels_last"):
        project = bench_train_step.project("resnet18", 32, 16, 2, compute=compute)
        assert project["images_per_s"] > 0 and 0 <= project["data_wait"] <= 1
        bare = bench_train_step.bare("resnet18", 32, 16, 2, compute=compute)
        assert bare["images_per_s"] > 0 and 0 <= bare["data_wait"] <= 1
    phases = bench_train_step.breakdown("resnet18", 32, 16, 2)
    assert set(phases) == set(bench_train_step.PHASES) and min(phases.values()) >= 0
    assert phases["forward"] > 0 and phases["backward"] > 0 and phases["optimizer"] > 0


def test_extraction_and_stage2_benchmark_cases():
    for compute in ("fp32", "channels_last"):
        assert bench_extract.extract_project("resnet18", 32, 16, 8, compute=compute)["per_s"] > 0
        assert bench_extract.extract_bare("resnet18", 32, 16, 8, compute=compute)["per_s"] > 0
    assert bench_extract.classifier_project(256)["per_s"] > 0
    assert bench_extract.classifier_bare(256)["per_s"] > 0


def test_dedup_benchmark_finds_the_same_pairs_as_sklearn():
    project, baseline = bench_dedup.project(400, 32), bench_dedup.sklearn_baseline(400, 32)
    assert project["pairs"] == baseline["pairs"] >= 50


def test_data_benchmark_on_real_images_reads_the_same_files_on_both_sides(shared_ham_small, tmp_path):
    images = harness.real_images("ham10000", shared_ham_small, 12)
    metadata = pd.read_csv(shared_ham_small / "HAM10000_metadata.csv")
    assert set(images["image_id"]) <= set(metadata["image_id"])
    root = bench_data.link_images(tmp_path, images)
    links = sorted((root / "images").glob("*/*.jpg"))
    assert len(links) == 12 and all(link.is_symlink() for link in links)
    # both sides resolved: ../shared may itself be a link
    listed = {Path(p).resolve() for p in pd.read_csv(root / "images.csv")["path"]}
    assert {link.resolve() for link in links} == listed
    assert all(link.resolve().is_relative_to(shared_ham_small.resolve()) for link in links)
    assert {link.parent.name for link in links} == set(images["label"])


def test_real_images_take_the_classes_in_turn_so_a_scarce_class_is_in_every_sample(monkeypatch):
    labels = ["common"] * 20 + ["rare"] * 2 + ["common"] * 5 + ["other"] * 3
    frame = pd.DataFrame({"image_id": [f"img{i}" for i in range(len(labels))], "path": "x.jpg", "label": labels})
    monkeypatch.setattr("siamese.data.load_dataset", lambda *args, **kwargs: SimpleNamespace(frame=frame))
    assert harness.real_images("any", "dir", 7)["image_id"].tolist() == [
        "img0", "img20", "img27", "img1", "img21", "img28", "img2"]
    assert harness.real_images("any", "dir", 30)["label"].value_counts().to_dict() == {
        "common": 25, "other": 3, "rare": 2}
    with pytest.raises(SystemExit, match="has 30 images; the benchmark needs 31"):
        harness.real_images("any", "dir", 31)


def test_data_benchmark_main_on_real_images(shared_ham_small, in_process, capsys):
    rows = bench_data.main(["--dataset", "ham10000", "--data-dir", str(shared_ham_small), "--images", "12",
                            "--size", "32"])
    out = capsys.readouterr().out
    assert f"images: 12 ham10000 JPEGs in {shared_ham_small}: HAM10000_images_part_1 (12); sizes 200x150 (12)" in out
    assert "data pipeline: 12 ham10000 JPEGs 200x150 -> 32px" in out
    assert f"CPUs ({torch.backends.cpu.get_cpu_capability()}" in out and "torch threads" in out  # the machine line
    assert len(rows) == 6 and min(row["images_per_s"] for row in rows) > 0


def test_training_step_benchmark_main_on_real_images_with_packaged_weights(shared_ham_small, in_process, capsys):
    rows = bench_train_step.main(["--dataset", "ham10000", "--data-dir", str(shared_ham_small), "--backbone",
                                  "efficientnet_lite0", "--weights", "imagenet", "--size", "32", "--batch", "8",
                                  "--steps", "2", "--breakdown"])
    out = capsys.readouterr().out
    assert f"images: 16 ham10000 JPEGs in {shared_ham_small}: HAM10000_images_part_1 (16); sizes 200x150 (16)" in out
    assert "efficientnet_lite0 (imagenet weights) 32px, batch 8, 2 steps, 16 ham10000 JPEGs, 7 classes" in out
    assert "project step, phases synchronised" in out
    assert "vs the fastest bare loop" in out
    bare = [f"bare loop, {choice}" for choice in bench_train_step.bare_choices(torch.device("cpu"))]
    assert [row["case"] for row in rows] == [*bare, "project stage-1 step, channels_last",
                                             "project stage-1 step, fp32 (contiguous)"]  # bf16: where native
    assert all(row["images_per_s"] > 0 and 0 <= row["data_wait"] <= 1 for row in rows)


def test_training_step_benchmark_json_names_the_loops_the_ratios_and_the_machine(in_process, capsys, monkeypatch):
    monkeypatch.setattr(bench_train_step, "bare_choices", lambda device: ["fp32", "channels_last"])
    bench_train_step.main(["--preset", "tiny", "--steps", "2", "--batch", "16", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert (figures["backbone"], figures["size"], figures["batch"]) == ("resnet18", 32, 16)
    loops = figures["images_per_s"]
    assert set(loops) == {"bare loop, fp32", "bare loop, channels_last", "project stage-1 step, channels_last",
                          "project stage-1 step, fp32 (contiguous)"}
    best = max(loops["bare loop, fp32"], loops["bare loop, channels_last"])
    assert figures["project_vs_best_bare"] == pytest.approx(loops["project stage-1 step, channels_last"] / best)
    assert figures["project_vs_project_fp32"] == pytest.approx(
        loops["project stage-1 step, channels_last"] / loops["project stage-1 step, fp32 (contiguous)"])
    assert {"device", "torch", "threads", "interop_threads", "date"} <= set(figures)
    assert figures["cpu_capability"].startswith(torch.backends.cpu.get_cpu_capability())
    assert 0 <= figures["project_empty_batch_fraction"] <= 1


def test_extraction_benchmark_json(monkeypatch, capsys):
    monkeypatch.setattr(bench_extract, "isolated", lambda fn, *args: fn(*args))
    monkeypatch.setattr(bench_extract, "bare_choices", lambda device: ["fp32", "channels_last"])
    figures = bench_extract.main(["--backbone", "resnet18", "--size", "32", "--images", "16", "--embeddings", "256",
                                  "--json"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(figures))
    assert figures["project_compute"] == "channels_last" and figures["extraction_vs_best_bare"] > 0
    assert len(figures["extraction_images_per_s"]) == 3 and figures["stage2_vs_bare"] > 0


def test_training_step_dataset_reads_real_files_with_their_labels(shared_ham_small):
    images = harness.real_images("ham10000", shared_ham_small, 8)
    data = bench_train_step.dataset(32, 8, images)
    first, _ = data[0]
    assert tuple(first.shape) == (3, 32, 32) and first.dtype == torch.uint8
    assert data.source.paths == images["path"].tolist()
    assert sorted(set(data.targets)) == list(range(images["label"].nunique()))


def test_training_step_benchmark_builds_the_packaged_imagenet_efficientnet_as_training_does():
    pretrained = bench_train_step.embedding_net("efficientnet_lite0", "imagenet")
    scratch = bench_train_step.embedding_net("efficientnet_lite0", "none")
    stem = next(iter(pretrained.backbone.state_dict()))
    assert not torch.equal(pretrained.backbone.state_dict()[stem], scratch.backbone.state_dict()[stem])
    assert torch.allclose(pretrained.normalize.mean.flatten(), torch.tensor([0.5, 0.5, 0.5]))


def test_explorer_benchmark_reads_the_pages_marks_and_main_thread_time(tmp_path):
    from benchmarks import bench_explorer
    from siamese.diagnostics.page import MARKS, page_data
    from tests.browser import find_chromium

    browser = find_chromium()
    payload = bench_explorer.synthetic_payload(40)
    explorer = bench_explorer.write_explorer(tmp_path / "explorer.html", payload)
    assert page_data(explorer)["drawn"] == 40 and len(page_data(explorer, "thumbs")) == len(payload["records"]["id"])
    for page in (bench_explorer.bare_page(payload, tmp_path / "bare.html"), explorer):
        opened = bench_explorer.open_page(browser, page, top=3)
        assert [m for m in MARKS if m in opened["marks"]] == list(MARKS), page.name
        assert opened["marks"][MARKS[0]] <= opened["marks"][MARKS[1]] <= opened["marks"][MARKS[2]]
        assert opened["cpu_ms"] > 0 and len(opened["kinds"]) == 3


def test_training_step_benchmark_repeats_interleave_rounds_and_report_medians(monkeypatch, capsys):
    """Every loop runs once a round, the order turning each round; each figure is the median of its rounds
    and the project's ratio is also given round by round against that round's fastest bare loop."""
    speeds = {("bare", "fp32"): [10.0, 14.0, 18.0], ("bare", "channels_last"): [20.0, 12.0, 40.0],
              ("project", "auto"): [30.0, 24.0, 16.0], ("project", "fp32"): [5.0, 6.0, 7.0]}
    calls = []

    def fake(fn, *args):
        case = (fn.__name__, args[-2])
        calls.append(case)
        empty = {"empty_batches": 0.25} if fn.__name__ == "project" else {}
        return {"images_per_s": speeds[case][calls.count(case) - 1], "data_wait": 0.0, **empty}

    monkeypatch.setattr(bench_train_step, "isolated", fake)
    monkeypatch.setattr(bench_train_step, "bare_choices", lambda device: ["fp32", "channels_last"])
    bench_train_step.main(["--preset", "tiny", "--steps", "2", "--batch", "16", "--repeats", "3", "--json"])
    figures = json.loads(capsys.readouterr().out)
    cases = [("bare", "fp32"), ("bare", "channels_last"), ("project", "auto"), ("project", "fp32")]
    assert calls == cases + cases[1:] + cases[:1] + cases[2:] + cases[:2]
    rounds = figures["rounds_images_per_s"]
    assert rounds["bare loop, fp32"] == [10.0, 14.0, 18.0]
    assert rounds["bare loop, channels_last"] == [20.0, 12.0, 40.0]
    assert rounds["project stage-1 step, channels_last"] == [30.0, 24.0, 16.0]
    assert figures["images_per_s"]["project stage-1 step, channels_last"] == 24.0
    assert figures["project_vs_best_bare"] == pytest.approx(24.0 / 20.0)
    assert figures["project_vs_best_bare_by_round"] == pytest.approx([30 / 20, 24 / 14, 16 / 40])
    assert figures["project_empty_batch_fraction"] == 0.25


def test_training_step_benchmark_refuses_no_rounds():
    with pytest.raises(SystemExit):
        bench_train_step.main(["--repeats", "0"])


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--batch", "0"], ["--size", "-1"], ["--workers", "-1"],
                                  ["--batch", "x"], ["--preset", "nosuch"]])
def test_training_step_benchmark_refuses_sizes_it_cannot_run_by_name(argv, capsys):
    with pytest.raises(SystemExit):
        bench_train_step.main(argv)
    assert argv[0] in capsys.readouterr().err
