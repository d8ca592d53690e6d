import json

import numpy as np
import pandas as pd
import pytest
import torch

from siamese.cli import main
from siamese.config import RunConfig
from siamese.data import DataError
from siamese.inference.predictor import Predictor, expand_inputs
from siamese.models import CheckpointError, EmbeddingNet, load_checkpoint
from siamese.training import metric_learning as metric
from siamese.workflows.training_run import run_training
from tests.conftest import REPO, tiny_config, upright_and_rotated

RUN_FILES = ["config.json", "split.csv", "split_audit.json", "embedder.pt", "classifier.pt", "history.csv",
             "metrics.json", "per_class.csv", "preprocess.json", "test_predictions.csv", "curves_embed.png",
             "curves_classifier.png", "confusion_matrix.png", "roc.png", "per_class.png", "confident_errors.png",
             "report.md"]


def test_run_folder_holds_every_file(run_dir):
    for name in RUN_FILES:
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "curves_embed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = RunConfig.load(run_dir / "config.json")
    assert saved.data.dataset == "synthetic" and saved.seed == 0


def test_triplet_loss_falls_and_mined_triplets_are_logged(run_dir):
    history = pd.read_csv(run_dir / "history.csv")
    embed = history[history["stage"] == "embed"]
    assert len(embed) == 4
    assert embed["loss"].iloc[-1] < embed["loss"].iloc[0]
    assert (embed["triplets"] > 0).all()
    assert embed["empty_batch_fraction"].between(0, 1).all()
    assert embed["val_precision_at_1"].between(0, 1).all()


def test_classifier_beats_chance_on_held_out_data(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    chance = 1 / 7
    assert metrics["classifier"]["balanced_accuracy"] > 2 * chance
    assert metrics["knn"]["balanced_accuracy"] > 2 * chance
    assert metrics["classifier"]["roc_auc"] > 0.6
    assert len(metrics["classifier"]["confusion_matrix"]) == 7
    assert "top3_accuracy" in metrics["classifier"]
    per_class = pd.read_csv(run_dir / "per_class.csv")
    assert set(per_class["model"]) == {"classifier", "knn", "colour_baseline", "colour_embedding"}
    assert len(per_class) == 28


def test_split_used_by_the_run_does_not_leak(run_dir):
    split = pd.read_csv(run_dir / "split.csv")
    assert (split.groupby("group")["split"].nunique() == 1).all()


def test_resume_after_interruption_keeps_history(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "run", epochs_embed=3)
    real_epoch = metric.MetricTrainer.train_epoch

    def interrupted(self, epoch, loader):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self, epoch, loader)

    monkeypatch.setattr(metric.MetricTrainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_training(config)
    before = load_checkpoint(tmp_path / "run" / "checkpoints" / "embed_last.pt")["progress"]["history"]
    assert [row["epoch"] for row in before] == [1, 2]
    monkeypatch.setattr(metric.MetricTrainer, "train_epoch", real_epoch)
    run_training(RunConfig(), resume=tmp_path / "run")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    embed = history[history["stage"] == "embed"]
    assert list(embed["epoch"]) == [1, 2, 3]
    assert embed["loss"].iloc[:2].tolist() == pytest.approx([row["loss"] for row in before])
    assert (history["stage"] == "classifier").sum() == 30


def three_class_csv(folder):
    """A ``path,label,group`` CSV of synthetic lesions of three classes, as PNG files."""
    from PIL import Image

    from siamese.data import make_synthetic

    table = make_synthetic(lesions_per_class=6, image_size=32, seed=0)
    frame = table.frame[table.frame["label"].isin(table.classes[:3])]
    folder.mkdir()
    for row in frame.itertuples():
        Image.fromarray(table.images[row.index]).save(folder / f"{row.image_id}.png")
    pd.DataFrame({"path": frame["image_id"] + ".png", "label": frame["label"], "group": frame["group"]}).to_csv(
        folder / "images.csv", index=False)
    return folder / "images.csv"


def test_settings_that_cannot_train_leave_no_folder_and_resume_refuses_a_change_by_name(tmp_path, capsys):
    out = tmp_path / "run"
    command = ["train", "--dataset", "csv", "--metadata", str(three_class_csv(tmp_path / "images")), "--preset",
               "tiny", "--wandb", "disabled", "--no-onnx", "--out", str(out)]
    assert main([*command, "--batch-size", "7"]) == 2
    assert "--batch-size 7: no class-balanced batch of 7 fits 3 classes" in capsys.readouterr().err
    assert not out.exists()  # so the corrected command is not refused as "already holds a run"
    out.mkdir()
    tiny_config(out).save(out / "config.json")  # a run interrupted after its setup, batch 56, lr 0.001
    assert main(["train", "--resume", str(out), "--batch-size", "12", "--lr", "0.01"]) == 2
    refusal = capsys.readouterr().err
    assert "embed.batch_size is 56 there, not 12" in refusal and "embed.lr is 0.001 there, not 0.01" in refusal
    assert RunConfig.load(out / "config.json").embed.batch_size == 56


def test_resume_honours_settings_that_change_how_a_run_runs_and_saves_them(tmp_path):
    from siamese.config import resumed
    from siamese.workflows.run_folder import prepare_run_dir

    saved = tiny_config(tmp_path / "run")
    config = resumed(saved, {"device": "cpu", "data.num_workers": 2, "data.data_dir": "/moved", "embed.epochs": 3},
                     "config.json")
    assert (config.device, config.data.num_workers, config.data.data_dir) == ("cpu", 2, "/moved")
    with pytest.raises(ValueError, match="embed.epochs is 3 there, not 5"):
        resumed(saved, {"device": "cpu", "embed.epochs": 5}, "config.json")
    (tmp_path / "run").mkdir()
    saved.save(tmp_path / "run" / "config.json")
    prepare_run_dir(RunConfig(), tmp_path / "run", {"device": "cpu", "wandb": "offline"})
    assert RunConfig.load(tmp_path / "run" / "config.json").to_dict() == {
        **saved.to_dict(), "device": "cpu", "wandb": "offline"}


def test_existing_run_folder_is_not_overwritten(run_dir):
    with pytest.raises(ValueError, match="--resume"):
        run_training(tiny_config(run_dir))


def test_a_run_that_fails_before_training_leaves_nothing_that_blocks_a_rerun(tmp_path, ham_dir):
    victim = next((ham_dir / "HAM10000_images_part_1").glob("*.jpg"))
    victim.unlink()
    config = tiny_config(tmp_path / "new-run", dataset="ham10000", data_dir=str(ham_dir))
    for _ in range(2):  # the second attempt fails for the same reason, not "already holds a run"
        with pytest.raises(DataError, match="--only-present"):
            run_training(RunConfig.from_dict(config.to_dict()))
        assert not (tmp_path / "new-run").exists()
    kept = tmp_path / "existing"
    (kept / "notes.txt").parent.mkdir()
    (kept / "notes.txt").write_text("mine")
    config.out = str(kept)
    with pytest.raises(DataError, match="--only-present"):
        run_training(RunConfig.from_dict(config.to_dict()))
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_only_present_trains_on_a_partial_download_and_counts_the_missing(tmp_path, ham_dir):
    import shutil

    missing = len(list((ham_dir / "HAM10000_images_part_2").glob("*.jpg")))
    shutil.rmtree(ham_dir / "HAM10000_images_part_2")
    code = main(["train", "--dataset", "ham10000", "--data-dir", str(ham_dir), "--only-present", "--binary",
                 "--full-dataset", "--preset", "tiny", "--epochs-embed", "1", "--epochs-classifier", "2",
                 "--batch-size", "16", "--wandb", "disabled", "--no-onnx", "--out", str(tmp_path / "run")])
    assert code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert list(metrics["excluded"].values()) == [missing]
    assert sum(metrics["split_sizes"].values()) > 0


def test_checkpoint_from_another_architecture_is_refused(run_dir):
    other = EmbeddingNet("resnet18", "none", embedding_dim=32, head_hidden=64)
    with pytest.raises(CheckpointError, match="another model"):
        load_checkpoint(run_dir / "embedder.pt", other.arch)


def test_predict_returns_top_k_for_a_folder(run_dir, tmp_path, capsys):
    from PIL import Image

    from siamese.data import make_synthetic

    table = make_synthetic(lesions_per_class=1, seed=99)
    for i in range(3):
        Image.fromarray(table.images[i]).save(tmp_path / f"new_{i}.jpg")
    predictions = Predictor(run_dir).predict(expand_inputs([str(tmp_path)]), top_k=3)
    assert len(predictions) == 3
    for p in predictions:
        assert len(p.top_k) == 3 and p.label == p.top_k[0][0]
        assert sum(prob for _, prob in p.top_k) <= 1.0001
        assert len(p.neighbours) == 3 and p.neighbours[0][2] <= p.neighbours[-1][2]
    assert main(["predict", "--run", str(run_dir), str(tmp_path), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and {"top1", "top3_p", "nn1"} <= set(rows[0])
    samples = expand_inputs([str(REPO / "assets" / "samples")])  # the README's 8x8 PNG digits, upscaled
    assert len(samples) == 3 and all(len(p.top_k) == 3 for p in Predictor(run_dir).predict(samples))
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    assert main(["predict", "--run", str(run_dir), str(tmp_path / "broken.jpg")]) == 2
    assert "broken.jpg" in capsys.readouterr().err


@pytest.mark.parametrize(("seed", "index"), [(99, 1), (99, 2), (98, 1), (97, 3)])
def test_predict_reads_an_exif_rotated_photo_as_displayed(run_dir, tmp_path, seed, index):
    """Same class, probabilities and neighbours; neighbours within JPEG re-encoding noise of each other may
    swap places, so they are compared as a set with their distances."""
    from siamese.data import make_synthetic

    pixels = make_synthetic(lesions_per_class=1, seed=seed).images[index]
    upright, rotated = upright_and_rotated(pixels, tmp_path)
    shown, stored = Predictor(run_dir).predict([upright, rotated], top_k=3)
    assert stored.label == shown.label
    np.testing.assert_allclose([p for _, p in stored.top_k], [p for _, p in shown.top_k], atol=0.05)
    distance = {n[0]: n[2] for n in shown.neighbours}
    assert set(distance) == {n[0] for n in stored.neighbours}
    assert all(abs(distance[image] - d) < 0.02 for image, _, d in stored.neighbours)


def test_binary_full_dataset_run(tmp_path):
    config = tiny_config(tmp_path / "bin", epochs_embed=1, binary=True, full_dataset=True)
    config.classifier.epochs = 5
    config.export_onnx = True
    run_dir = run_training(config)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["classifier"]["classes"] == ["benign", "malignant"]
    assert metrics["classifier"]["roc_auc"] is not None
    assert np.isfinite(metrics["knn"]["accuracy"])
    samples = expand_inputs([str(REPO / "assets" / "samples")])
    by_onnx = Predictor(run_dir, engine="onnx").predict(samples, top_k=2)
    by_torch = Predictor(run_dir, engine="torch").predict(samples, top_k=2)
    for a, b in zip(by_onnx, by_torch, strict=True):  # the sigmoid head's two columns survive the export
        assert a.label == b.label and np.allclose([p for _, p in a.top_k], [p for _, p in b.top_k], atol=1e-3)


def test_compiled_training_writes_a_plain_checkpoint(tmp_path):
    """``--compile``: torch.compile runs the stage-1 forward; the saved weights load into an uncompiled net."""
    config = tiny_config(tmp_path / "run", epochs_embed=1, augment="lesion")
    config.compile = True
    config.classifier.epochs = 2
    run_dir = run_training(config)
    saved = load_checkpoint(run_dir / "embedder.pt")
    net = EmbeddingNet.from_arch(saved["arch"])
    net.load_state_dict(saved["state"])
    assert not any(key.startswith("_orig_mod") for key in saved["state"])
    assert json.loads((run_dir / "config.json").read_text())["compile"] is True
    history = pd.read_csv(run_dir / "history.csv")
    assert np.isfinite(history.loc[history["stage"] == "embed", "loss"]).all()


def test_self_supervised_stage_lowers_nt_xent_and_resumes(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "ssl", epochs_embed=1, augment="lesion")
    config.embed.ssl_epochs = 5
    config.embed.batch_size = 32
    config.classifier.epochs = 2
    run_training(config)
    history = pd.read_csv(tmp_path / "ssl" / "history.csv")
    ssl = history[history["stage"] == "selfsup"]
    assert list(ssl["epoch"]) == [1, 2, 3, 4, 5]
    assert ssl["loss"].iloc[-1] < ssl["loss"].iloc[0]
    assert (tmp_path / "ssl" / "curves_selfsup.png").stat().st_size > 1000
    from siamese.training import selfsup

    calls = []
    monkeypatch.setattr(selfsup.SelfSupervisedTrainer, "fit",
                        lambda self: calls.append(self.state["epoch"]) or self.state["history"])
    (tmp_path / "ssl" / "metrics.json").unlink()
    run_training(config, resume=tmp_path / "ssl")
    assert calls == [5]  # resumed at the end of stage 0: nothing retrained
    config.data.augment, config.out = "none", str(tmp_path / "none")
    with pytest.raises(ValueError, match="needs an augmentation"):
        run_training(config)


def test_deterministic_switches_torch_to_deterministic_kernels_and_back():
    import torch

    from siamese.runtime.device import seed_everything

    seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    first = torch.rand(3)
    seed_everything(0)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.rand(3), first)


def test_colour_settings_that_would_do_nothing_are_refused_before_a_folder_is_left(tmp_path, capsys):
    for flags, message in ((["--colour-stats", "--colour-noise", "-0.5"], "at least 0"),
                           (["--colour-noise", "0.5"], "needs --colour-stats")):
        code = main(["train", "--dataset", "digits", "--wandb", "disabled", *flags, "--out", str(tmp_path / "run")])
        assert code == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_transfer_learning_options_freeze_scale_and_keep_batch_statistics():
    from siamese.config import EmbedTrainConfig
    from siamese.models import EmbeddingNet
    from siamese.training.metric_learning import parameter_groups, set_training_mode

    torch.manual_seed(0)
    net = EmbeddingNet("resnet18", "none", embedding_dim=8, head_hidden=16)
    cfg = EmbedTrainConfig(lr=1e-2, backbone_lr_scale=0.1, frozen_epochs=1, freeze_bn=True)
    groups = parameter_groups(net, cfg)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-2])
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    optimizer = torch.optim.Adam(groups)
    batch = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8)

    def step(frozen):
        before = {k: v.clone() for k, v in net.state_dict().items()}
        set_training_mode(net, cfg, frozen)
        optimizer.zero_grad()
        net(batch).pow(3).sum().backward()
        optimizer.step()
        after = net.state_dict()
        return {k for k in before if not torch.equal(before[k], after[k])}

    changed = step(frozen=True)  # the warm-up: only the head learns, batch statistics untouched
    assert changed and all(k.startswith("head.") for k in changed)
    changed = step(frozen=False)  # then the backbone learns too, with its batch statistics kept
    assert any(k.startswith("backbone.") and k.endswith("weight") for k in changed)
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)
    assert net.backbone.bn1.training is False and net.head.training is True


def test_a_warm_up_as_long_as_stage_1_is_flagged(tmp_path):
    config = tiny_config(tmp_path / "run", epochs_embed=1)
    config.embed.frozen_epochs, config.classifier.epochs = 1, 2
    with pytest.warns(UserWarning, match="the backbone is never fine-tuned"):
        run_training(config)


def test_wandbs_own_disabled_switch_is_honoured(tmp_path, monkeypatch):
    from siamese.runtime.tracking import Tracker

    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert Tracker(tmp_path, {}, "offline").run is None
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "wandb_id.txt").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--epochs-embed", "0"], "--epochs-embed must be at least 1; got 0"),
    (["--epochs-classifier", "-1"], "--epochs-classifier must be at least 1; got -1"),
    (["--lr", "-1"], "--lr must be positive; got -1.0"),
    (["--ce-weight", "nan"], "--ce-weight must be 0 (none) or positive; got nan"),
    (["--ce-weight", "inf"], "--ce-weight must be 0 (none) or positive; got inf"),
    (["--patience", "0"], "--patience must be at least 1; got 0"),
    (["--backbone-lr-scale", "-0.5"], "--backbone-lr-scale must be 0 (a frozen backbone) or positive; got -0.5"),
])
def test_numbers_out_of_range_are_refused_by_option_before_a_folder_is_claimed(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "synthetic", "--preset", "tiny", "--image-size", "32", "--wandb", "disabled",
                 "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert code == 2 and f"error: {message}" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("top_k", ["0", "-1"])
def test_predict_refuses_a_top_k_below_one(run_dir, capsys, top_k):
    code = main(["predict", "--run", str(run_dir), str(REPO / "assets" / "samples"), "--top-k", top_k])
    err = capsys.readouterr().err
    assert code == 2 and f"--top-k must be at least 1; got {top_k}" in err and "Traceback" not in err
