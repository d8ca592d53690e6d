"""The README's promise for every command: a file it cannot use is one line, `error: PATH: ...`, exit 2."""

import io
import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from siamese.cli import main
from tests.workflows.test_training import three_class_csv


@pytest.fixture
def files(tmp_path):
    """One bad file of each kind a command reads, beside good images, and an empty folder posing as a run."""
    good = []
    for i in range(4):
        good.append(tmp_path / f"img_{i}.jpg")
        Image.fromarray(np.full((24, 24, 3), 60 * i, np.uint8)).save(good[-1])
    (tmp_path / "text.jpg").write_text("lesion_id,image_id\n")
    whole = good[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    for name, bad in (("not_image.csv", "text.jpg"), ("truncated.csv", "cut.jpg")):
        pd.DataFrame({"path": [bad, *[p.name for p in good]], "label": ["a", "a", "b", "b", "a"]}).to_csv(
            tmp_path / name, index=False)
    (tmp_path / "masks").mkdir()
    (tmp_path / "pred").mkdir()
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(tmp_path / "pred" / "img_0_segmentation.png")
    (tmp_path / "masks" / "img_0_segmentation.png").write_text("not a png")
    (tmp_path / "run").mkdir()
    (tmp_path / "broken").mkdir()  # a run whose JSON files were cut short (interrupted while written, or edited)
    for name in ("config.json", "segment_config.json", "metrics.json"):
        (tmp_path / "broken" / name).write_text('{"model": {"backbone": ')
    return tmp_path


CASES = {
    "split: a binary table": (["split", "--dataset", "csv", "--metadata", "{d}/binary.csv", "--out", "{d}/m.csv"],
                              "binary.csv"),
    "audit: a binary manifest": (["audit", "{d}/binary.csv"], "binary.csv"),
    "dedup: not an image": (["dedup", "--dataset", "csv", "--metadata", "{d}/not_image.csv", "--method", "phash",
                             "--out", "{d}/pairs.csv"], "text.jpg"),
    "dedup: truncated": (["dedup", "--dataset", "csv", "--metadata", "{d}/truncated.csv", "--method", "phash",
                          "--out", "{d}/pairs.csv"], "cut.jpg"),
    "predict: not a run": (["predict", "--run", "{d}/run", "{d}/img_0.jpg"], "run"),
    "rescore: not a run": (["rescore", "{d}/run"], "run"),
    "summarize: not a run": (["summarize", "{d}/run", "--out", "{d}/s"], "run"),
    "external: not a run": (["external", "{d}/run", "--dataset", "csv", "--metadata", "{d}/not_image.csv",
                             "--out", "{d}/e"], "run"),
    "segment predict: not a run": (["segment", "predict", "{d}/run", "{d}/img_0.jpg", "--out", "{d}/o"], "run"),
    "predict: a damaged config.json": (["predict", "--run", "{d}/broken", "{d}/img_0.jpg"], "broken/config.json"),
    "rescore: a damaged config.json": (["rescore", "{d}/broken"], "broken/config.json"),
    "summarize: a damaged metrics.json": (["summarize", "{d}/broken", "--out", "{d}/s"], "broken/metrics.json"),
    "segment predict: a damaged config": (["segment", "predict", "{d}/broken", "{d}/img_0.jpg", "--out", "{d}/o"],
                                          "broken/"),
    "segment evaluate: not a mask": (["segment", "evaluate", "--pred", "{d}/pred", "--masks", "{d}/masks", "--out",
                                      "{d}/ev"],
                                     "img_0_segmentation.png"),
    "cv: a binary table": (["cv", "--dataset", "csv", "--metadata", "{d}/binary.csv", "--out", "{d}/cv"],
                           "binary.csv"),
    "leakage: a binary table": (["leakage", "--dataset", "csv", "--metadata", "{d}/binary.csv", "--out",
                                 "{d}/leak"], "binary.csv"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_command_names_a_bad_file_in_one_line(files, case, capsys):
    argv, named = CASES[case]
    assert main([arg.format(d=files) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and named in line, err


def test_an_image_that_fails_only_once_stage_1_reads_it_keeps_the_run_and_resume_continues(tmp_path, capsys):
    """A truncated PNG passes every check before training (the table, the split, the folder): the run stops
    when stage 1 decodes it, with its one line, keeps the folder, and ``--resume`` finishes once it is fixed."""
    images = three_class_csv(tmp_path / "images")
    victim = sorted(images.parent.glob("*.png"))[5]
    whole = victim.read_bytes()
    victim.write_bytes(whole[:len(whole) // 2])
    out = tmp_path / "run"
    assert main(["train", "--dataset", "csv", "--metadata", str(images), "--preset", "tiny", "--image-size", "32",
                 "--epochs-embed", "2", "--epochs-classifier", "3", "--references", "none", "--wandb", "disabled",
                 "--no-onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"error: {victim}: unreadable image")
    assert (out / "config.json").is_file() and (out / "split.csv").is_file() and not (out / "metrics.json").exists()
    victim.write_bytes(whole)
    assert main(["train", "--resume", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["models"][:2] == ["classifier", "knn"]


def test_predict_on_a_folder_goes_past_unreadable_images_and_accounts_for_every_file(run_dir, files, capsys):
    """Three truncated images (a JPEG whose header is whole, one cut inside it, a PNG) among good ones: the
    good are predicted, each bad one is named on its own line, and the exit status is 2."""
    folder = files / "mixed"
    folder.mkdir()
    good = [folder / f"good_{i}.jpg" for i in range(3)]
    rng = np.random.default_rng(0)
    for path in good:  # noise, so that the entropy-coded data outweighs the header by far
        Image.fromarray(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)).save(path, quality=95)
    whole = good[0].read_bytes()
    (folder / "cut.jpg").write_bytes(whole[:len(whole) * 3 // 4])
    (folder / "head.jpg").write_bytes(whole[:40])  # cut inside its header: Pillow cannot even identify it
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "short.png")
    (folder / "short.png").write_bytes((folder / "short.png").read_bytes()[:-40])
    assert main(["predict", "--run", str(run_dir), str(folder), "--format", "csv"]) == 2
    captured = capsys.readouterr()
    predicted = pd.read_csv(io.StringIO(captured.out))["image"].tolist()
    assert predicted == [str(p) for p in good]
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert [e.split(": ")[1] for e in errors[:3]] == [str(folder / n) for n in ("cut.jpg", "head.jpg", "short.png")]
    assert errors[-1].startswith("error: 3 of 6 image(s) could not be read")
    assert main(["predict", "--run", str(run_dir), str(folder / "cut.jpg"), str(folder / "head.jpg")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert [e.split(": ")[1] for e in errors[:2]] == [str(folder / "cut.jpg"), str(folder / "head.jpg")]
    assert errors[-1] == "error: none of the 2 image(s) could be read (named above)"


def test_predict_accounts_for_a_missing_file_like_an_unreadable_one(run_dir, files, capsys):
    """A path that does not exist, among good images and beside an empty file, is one more image that could
    not be read: the others are predicted, each bad one is named, and the exit status is 2."""
    good = files / "good.png"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(good)
    (files / "empty.jpg").write_bytes(b"")
    missing = [files / "no_such.jpg", files / "gone" / "lesion.png"]
    argv = ["predict", "--run", str(run_dir), str(missing[0]), str(good), str(files / "empty.jpg"), str(missing[1]),
            "--format", "csv"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert pd.read_csv(io.StringIO(captured.out))["image"].tolist() == [str(good)]
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert errors[:3] == [f"error: {missing[0]}: image file not found",
                          f"error: {files / 'empty.jpg'}: unreadable image: empty file (0 bytes)",
                          f"error: {missing[1]}: image file not found"], errors
    assert errors[-1].startswith("error: 3 of 4 image(s) could not be read")
    assert main(["predict", "--run", str(run_dir), str(missing[0])]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {missing[0]}: image file not found"


def test_a_command_line_mistake_is_one_line_that_says_what_was_taken_for_what(run_dir, files, capsys):
    for argv, message in (
        (["predict", str(files / "img_0.jpg")],
         f"needs RUN and at least one image file or folder; {files / 'img_0.jpg'} was taken as RUN"),
        (["train", "--preset", "nosuch"], "argument --preset: invalid choice: 'nosuch'"),
        (["predict", "--run", str(run_dir), str(files / "img_0.jpg"), "--top-k", "0"], "--top-k must be at least 1"),
    ):
        try:
            code = main(argv)
        except SystemExit as parser_exit:  # argparse's own checks end the process, as on a command line
            code = parser_exit.code
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)


@pytest.mark.parametrize("argv, script, hint", [
    (["train", "--bogus"], "train.py", "see python train.py --help"),
    (["predict", "--run", "r", "x.jpg", "--bogus", "1"], "predict.py", "see python predict.py --help"),
    (["segment", "train", "--bogus"], None, "see siamese segment train --help"),
    (["audit", "manifest.csv", "--bogus"], None, "see siamese audit --help"),
])
def test_an_unknown_argument_points_to_the_help_of_the_command_or_script_it_was_given_to(argv, script, hint, capsys):
    with pytest.raises(SystemExit) as parser_exit:
        main(argv, script=script)
    err = capsys.readouterr().err.strip().splitlines()
    assert parser_exit.value.code == 2 and len(err) == 1 and "--bogus" in err[0] and err[0].endswith(f"({hint})")


def test_print_config_shows_the_resolved_settings_and_refuses_what_a_run_would_refuse(tmp_path, capsys):
    assert main(["train", "--preset", "ph2", "--loss", "triplet", "--seed", "7", "--print-config",
                 "--out", str(tmp_path / "run")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["embed"]["miner"] == "semihard" and printed["seed"] == 7 and printed["preset"] == "ph2"
    assert not (tmp_path / "run").exists()
    assert main(["train", "--preset", "ph2", "--loss", "supcon", "--miner", "hard", "--print-config"]) == 2
    assert "takes no miner" in capsys.readouterr().err


def test_print_config_with_resume_shows_the_runs_config_and_a_new_run_may_not_take_a_runs_folder(run_dir, capsys):
    assert main(["train", "--resume", str(run_dir), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((run_dir / "config.json").read_text())
    assert main(["train", "--resume", str(run_dir), "--print-config", "--lr", "0.5"]) == 2
    assert "embed.lr is" in capsys.readouterr().err
    assert main(["train", "--dataset", "synthetic", "--out", str(run_dir), "--print-config"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_a_wrapper_scripts_usage_names_the_script(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"], script="predict.py")
    assert capsys.readouterr().out.startswith("usage: python predict.py ")


def test_the_run_report_lists_its_settings_in_words_and_only_files_the_run_has(run_dir):
    head = (run_dir / "report.md").read_text().split("## ")[0]
    assert "Best epochs: embed " in head and "Split sizes: train " in head and "{" not in head
    assert "Stage 1: `triplet` loss, miner `semihard`, " in head and " (constant; the backbone's x 1)" in head
    machine = json.loads((run_dir / "metrics.json").read_text())["machine"]
    assert f"Trained on {machine}; training its two stages took " in head and " min of wall time" in head
    files = (run_dir / "report.md").read_text().split("## Files")[1]
    named = [name.strip("`. \n") for name in files.split(",")]
    assert "config.json" in named and all((run_dir / name).exists() for name in named)


@pytest.mark.parametrize("bad", ["text.jpg", "cut.jpg"])
@pytest.mark.parametrize("command", [["split", "--out", "{d}/m.csv"], ["cv", "--folds", "5", "--out", "{d}/cv"],
                                     ["train", "--preset", "tiny", "--out", "{d}/run"]])
def test_a_table_too_small_to_split_names_its_unreadable_image_first(files, bad, command, capsys):
    """Four images, one of them unreadable: the file is what to fix first, not the count."""
    table = files / "tiny.csv"
    pd.DataFrame({"path": [bad, "img_1.jpg", "img_2.jpg", "img_3.jpg"], "label": ["a", "a", "b", "b"]}).to_csv(
        table, index=False)
    argv = [command[0], "--dataset", "csv", "--metadata", str(table), *command[1:]]
    assert main([arg.format(d=files) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"error: {files / bad}: unreadable image"), err


@pytest.mark.parametrize("command", [["predict", "--run", "{gone}", "{image}"], ["visualize", "{gone}"],
                                     ["rescore", "{gone}"], ["train", "--resume", "{gone}"]])
def test_a_run_folder_that_does_not_exist_is_named_as_missing(files, tmp_path, command, capsys):
    gone = tmp_path / "no_such_run"
    argv = [arg.format(gone=gone, image=files / "img_1.jpg") for arg in command]
    assert main(argv) == 2
    assert f"error: {gone}: no such folder" in capsys.readouterr().err
    gone.write_text("a file where a run folder was meant")
    assert main(argv) == 2
    assert f"error: {gone}: a file, not a" in capsys.readouterr().err


def test_a_run_file_that_is_missing_not_text_or_not_json_is_named(tmp_path):
    from siamese.runtime.json_files import read_json

    (tmp_path / "cut.json").write_text('{"a": [1, 2')
    (tmp_path / "binary.json").write_bytes(bytes(range(128, 256)))
    (tmp_path / "good.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "good.json") == {"a": [1, 2]}
    for name, error in (("cut.json", ValueError), ("binary.json", ValueError), ("absent.json", FileNotFoundError)):
        with pytest.raises(error, match=f"{name}: "):
            read_json(tmp_path / name)


def test_predict_warns_when_images_are_ones_the_run_was_fitted_or_selected_on(run_dir, tmp_path, recwarn):
    split = pd.read_csv(run_dir / "split.csv", dtype=str)
    named = {s: split.loc[split["split"] == s, "image_id"].iloc[0] for s in ("train", "val", "test")}
    for image_id in named.values():
        Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(tmp_path / f"{image_id}.png")
    assert main(["predict", "--run", str(run_dir), str(tmp_path)]) == 0
    seen = [str(w.message) for w in recwarn if "train or val split" in str(w.message)]
    assert len(seen) == 1 and seen[0].startswith("2 of the 3 image(s)"), seen
    recwarn.clear()
    assert main(["predict", "--run", str(run_dir), str(tmp_path / f"{named['test']}.png")]) == 0
    assert not [w for w in recwarn if "train or val split" in str(w.message)]


@pytest.mark.parametrize("engine", ["onnx", "torch"])
def test_predict_warns_when_an_image_has_a_training_images_pixels_under_another_name(run_dir, tmp_path, engine):
    """The check by name misses a renamed copy: the embedding's nearest training neighbour finds it. Here the
    run's training embeddings are given one more image's, as training would have computed it (``embed``)."""
    from siamese.inference.predictor import Predictor

    rng = np.random.default_rng(1)
    pictures = [tmp_path / f"new_{i}.png" for i in range(3)]
    for path in pictures:
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    predictor = Predictor(run_dir, engine=engine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # new pictures: no warning of any kind
        predictions, _ = predictor.predict_each(pictures)
    assert min(p.neighbours[0][2] for p in predictions) > 0.01
    embedding, _ = predictor.embed([pictures[1]])
    predictor.reference = np.vstack([predictor.reference, embedding])
    predictor.reference_ids = np.append(predictor.reference_ids, "SYN_renamed")
    predictor.reference_labels = np.append(predictor.reference_labels, "nv")
    with pytest.warns(UserWarning, match=r"1 of the 3 image\(s\) have the pixels of a training image under another "
                                         rf"name \(first: {re.escape(str(pictures[1]))}, .* from SYN_renamed\)"):
        predictions, _ = predictor.predict_each(pictures)
    assert predictions[1].neighbours[0][:2] == ("SYN_renamed", "nv")


def test_a_run_folder_given_as_images_is_refused_naming_run(tmp_path):
    from siamese.data.table import DataError
    from siamese.inference.predictor import expand_inputs

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "embedder.pt").write_bytes(b"")
    Image.new("RGB", (8, 8)).save(run / "confusion_matrix.png")
    with pytest.raises(DataError, match=r"run is a run folder, not a folder of images .*with --run"):
        expand_inputs([str(run)])
    (run / "embedder.pt").unlink()  # a folder of images that happens to hold a config.json is read
    assert expand_inputs([str(run)]) == [run / "confusion_matrix.png"]
