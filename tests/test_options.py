"""Each training option declared once, on its field: the parsers derived from the fields, ``--config`` files
under explicit flags, ``validate()`` before a folder exists, and the spellings kept as aliases."""

import argparse
import json
import warnings
from collections import Counter

import pytest

from siamese.cli import build_parser, config_from_args, main
from siamese.config import PRESETS, CVConfig, RunConfig, SegmentConfig, differing_settings, preset
from siamese.options import settings_of
from siamese.settings import fold_config, read_config_file, run_config, segment_config

TRAINING_COMMANDS = ("train", "cv", "compare", "leakage")
COMMAND_EXTRAS = {"help", "config", "full_model", "resume", "recipes", "print_config"}
"""What a training command adds beside the fields' options: no setting of its own."""


def subparser(name: str) -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices[name]


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_every_flag_names_one_setting_and_the_training_parsers_are_built_from_the_fields():
    flagged = [s for s in settings_of(RunConfig) if s.option.flags]
    flags = Counter(flag for s in flagged for flag in s.option.flags)
    assert [f for f, n in flags.items() if n > 1] == []
    fields = {s.name: s.option.flags for s in (*flagged, *settings_of(CVConfig)) if s.option.flags}
    for command in TRAINING_COMMANDS:
        actions = [a for a in subparser(command)._actions if a.option_strings]
        dests = Counter(a.dest for a in actions)
        assert [d for d, n in dests.items() if n > 1] == [], command
        assert set(dests) - set(fields) <= COMMAND_EXTRAS, command
        for action in actions:
            if action.dest in fields:
                assert tuple(action.option_strings) == fields[action.dest], (command, action.dest)
        assert {s.name for s in flagged} <= set(dests), command


def test_a_yaml_file_gives_the_defaults_and_an_explicit_flag_wins(tmp_path):
    path = tmp_path / "ph2.yaml"
    path.write_text("preset: ph2\ndata:\n  dataset: ph2\n  image_size: 96\nembed:\n  lr: 1e-4\n  margin: 0.2\n"
                    "embed.epochs: 3\nreferences: [finetune]\n")
    config = config_from_args(parse(["train", "--config", str(path), "--epochs-embed", "5", "--seed", "7"]))
    expected = preset("ph2")
    expected.data.image_size, expected.embed.lr, expected.embed.margin = 96, 1e-4, 0.2
    expected.embed.epochs, expected.seed, expected.references = 5, 7, ("finetune",)
    assert config == expected
    assert isinstance(config.embed.lr, float)  # YAML reads 1e-4 as a string
    assert config_from_args(parse(["train", "-c", str(path), "--preset", "tiny"])).model.backbone == "resnet18"


def test_a_json_file_and_a_runs_own_config_json_repeat_a_run(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"data.dataset": "synthetic", "model": {"backbone": "resnet18"}, "wandb": "disabled"}))
    config = config_from_args(parse(["train", "--config", str(path), "--backbone", "efficientnet_lite0"]))
    assert (config.preset, config.data.dataset, config.model.backbone, config.wandb) == (
        "tiny", "synthetic", "efficientnet_lite0", "disabled")

    ran = preset("ph2")
    ran.embed.miner, ran.compute, ran.out = "none", "channels_last", str(tmp_path / "run")
    (tmp_path / "run").mkdir()
    ran.save(tmp_path / "run" / "config.json")
    again = config_from_args(parse(["train", "--config", str(tmp_path / "run" / "config.json")]))
    assert again.out is None  # a new run gets its own folder
    again.out = ran.out
    assert again == ran
    changed = config_from_args(parse(["train", "--config", str(tmp_path / "run" / "config.json"), "--lr", "0.01"]))
    assert changed.embed.lr == 0.01 and changed.embed.frozen_epochs == ran.embed.frozen_epochs


@pytest.mark.parametrize(("text", "message"), [
    ("embed:\n  lr: fast\n", "embed.lr must be float; got the text 'fast'"),
    ("embed:\n  epochs: 2.5\n", "embed.epochs must be int; got 2.5"),
    ("embed:\n  epochs: '3'\n", "embed.epochs must be int; got the text '3'"),
    ("embed.lr: \"1e-4\"\n", "embed.lr must be float; got the text '1e-4'"),
    ("classifier:\n  epochs: .nan\n", "classifier.epochs must be int; got nan"),
    ("model:\n  backbone: vgg16\n", "model.backbone must be one of inception_v3, "),
    ("data:\n  crop: centre\n", "data.crop must be one of none, lesion-mask, lesion; got 'centre'"),
    ("model:\n  tta: 3\n", "model.tta must be one of 1, 2, 4, 8; got 3"),
    ("embed:\n  margin: -0.1\n", "embed.margin must be 0 or positive; got -0.1"),
    ("data:\n  augment_artefacts: 1.5\n", "data.augment_artefacts must be between 0 and 1; got 1.5"),
    ("embed:\n  loss: circle\n", "embed.loss must be one of "),
    ("model:\n  depth: 3\n", "unknown setting(s) ['model.depth']"),
    ("- a list\n", "expected a mapping of settings"),
    ("", "empty; a settings file holds a mapping"),
    ("# nothing but a comment\n", "empty; a settings file holds a mapping"),
    ("embed:\n  epochs: 3\nembed.epochs: 4\n", "embed.epochs is set twice (3, then 4)"),
    ("embed:\n  epoch: 3\n", "unknown setting(s) ['embed.epoch']; embed.epoch: did you mean embed.epochs?"),
    ("data.image_sise: 96\n", "unknown setting(s) ['data.image_sise']; data.image_sise: did you mean data.image_size?"),
])
def test_a_settings_file_with_an_unknown_or_mistyped_setting_is_refused_by_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as raised:
        read_config_file(path)
    assert f"{path}: {message}" in str(raised.value)


@pytest.mark.parametrize(("text", "name", "value"), [
    ("embed:\n  lr: 1e-4\n", "embed.lr", 1e-4),
    ("embed:\n  lr: 3E-5\n", "embed.lr", 3e-5),
    ("embed.margin: .5\n", "embed.margin", 0.5),
    ("embed:\n  epochs: 1e1\n", "embed.epochs", 10),
])
def test_yaml_numbers_are_read_as_yaml_1_2_reads_them(tmp_path, text, name, value):
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    read = read_config_file(path)[name]
    assert read == value and type(read) is type(value)


def test_a_json_settings_file_with_a_quoted_number_or_bad_choice_names_the_file_and_key(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"embed": {"batch_size": "32"}}))
    with pytest.raises(ValueError, match=r"bad.json: embed.batch_size must be int; got the text '32'"):
        read_config_file(path)
    path.write_text(json.dumps({"embed.miner": "hardest"}))
    with pytest.raises(ValueError, match=r"bad.json: embed.miner must be one of "):
        read_config_file(path)


@pytest.mark.parametrize(("text", "message"), [
    ("model:\n  backbone: vgg16\n", "bad.yaml: model.backbone must be one of inception_v3, "),
    ("data:\n  crop: centre\n", "bad.yaml: data.crop must be one of none, lesion-mask, lesion; got 'centre'"),
    ("model:\n  tta: 3\n", "bad.yaml: model.tta must be one of 1, 2, 4, 8; got 3"),
    ("references: [finetune, knn]\n", "unknown reference model(s) ['knn']"),
    ("embed:\n  margin: -0.1\n", "bad.yaml: embed.margin must be 0 or positive; got -0.1"),
    ("data:\n  augment_artefacts: 1.5\n", "bad.yaml: data.augment_artefacts must be between 0 and 1; got 1.5"),
    ("embed:\n  loss: supcon\n  miner: hard\n",
     "loss supcon compares every pair of the batch and takes no miner, but miner is hard"),
])
def test_validate_refuses_a_bad_choice_or_number_from_a_file_before_a_folder_exists(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"data.dataset: synthetic\nwandb: disabled\n{text}")
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and "Traceback" not in err
    assert not out.exists()


def test_every_preset_validates_and_a_notebook_gets_the_command_lines_config():
    for name in PRESETS:
        preset(name).validate()
    SegmentConfig().validate()
    assert run_config({"data.dataset": "ph2"}) == preset("ph2")
    assert run_config({"data": {"dataset": "isic2020"}, "references": ["none"]}).references == ()
    assert run_config() == config_from_args(parse(["train"]))
    config = RunConfig()
    config.device = "tpu"
    with pytest.raises(ValueError, match="--device must be one of auto, cpu, cuda; got 'tpu'"):
        config.validate()
    config = RunConfig()
    config.embed.lr = "0.1"
    with pytest.raises(ValueError, match="--lr must be a number"):
        config.validate()


def test_the_older_spellings_stay_aliases():
    assert parse(["cv", "--baselines", "majority", "--out", "x"]).references == parse(
        ["cv", "--references", "majority", "--out", "x"]).references == ["majority"]
    full = config_from_args(parse(["train", "--full-model", "--full-dataset", "--no-onnx"]))
    assert (full.preset, full.model.backbone, full.data.full_dataset, full.export_onnx) == (
        "full", "resnet50", True, False)
    assert config_from_args(parse(["train", "--full-model", "--backbone", "resnet18"])).model.backbone == "resnet18"
    assert config_from_args(parse(["train", "--references", "none"])).references == ()


@pytest.mark.parametrize("argv", [["predict", "RUN", "a.jpg", "b"], ["predict", "--run", "RUN", "a.jpg", "b"],
                                  ["predict", "a.jpg", "b", "--run", "RUN"], ["saliency", "RUN", "a.jpg", "b"],
                                  ["saliency", "--run", "RUN", "a.jpg", "b"]])
def test_a_run_folder_is_the_first_positional_or_run_on_every_command(argv):
    from siamese.cli import resolve_run

    args = parse(argv)
    assert resolve_run(args) is None
    assert (args.run, args.images) == ("RUN", ["a.jpg", "b"])


@pytest.mark.parametrize(("argv", "message"), [
    (["export", "--run", "A", "B"], "two run folders given"),
    (["export"], "export needs RUN"),
    (["predict", "RUN"], "predict needs RUN and at least one image"),
])
def test_a_missing_or_doubled_run_folder_is_one_clear_error(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    for command in ("export", "rescore", "external", "visualize", "robustness"):
        assert parse([command, "--run", "R", *(["--out", "o"] if command == "external" else [])]).run_flag == "R"


def test_cv_takes_a_runs_config_but_refuses_a_test_fraction_asked_of_its_folds(tmp_path):
    ran = preset("tiny")
    ran.data.dataset, ran.data.test_fraction, ran.wandb, ran.out = "synthetic", 0.3, "offline", str(tmp_path)
    ran.save(tmp_path / "config.json")
    defaults = read_config_file(tmp_path / "config.json")
    config = fold_config({}, defaults, command="cv")
    assert (config.out, config.export_onnx, config.wandb, config.data.dataset) == (None, False, "offline", "synthetic")
    assert fold_config({"data.dataset": "synthetic"}).wandb == "disabled"
    with pytest.raises(ValueError, match="--test-fraction is for train"):
        fold_config({"data.test_fraction": 0.1}, defaults, command="cv")
    assert fold_config({"data.test_fraction": 0.1}, command="compare", folds=0).data.test_fraction == 0.1


def test_segment_train_options_come_from_its_config_and_take_a_file(tmp_path):
    path = tmp_path / "seg.yaml"
    path.write_text("preset: cpu\ndataset: ph2\nepochs: 3\ndecoder_channels: [64, 32, 16, 16, 8]\n")
    args = parse(["segment", "train", "--config", str(path), "--epochs", "5"])
    from siamese.cli import file_settings
    from siamese.options import given

    config = segment_config(given(args, SegmentConfig), file_settings(args, SegmentConfig))
    assert (config.encoder, config.epochs, config.decoder_channels) == ("efficientnet_lite0", 5, (64, 32, 16, 16, 8))
    flags = Counter(f for s in settings_of(SegmentConfig) for f in s.option.flags)
    assert max(flags.values()) == 1


@pytest.mark.parametrize(("command", "said"), [
    (["split"], "(required)"), (["dedup"], "(required)"), (["external"], "(required)"),
    (["segment", "evaluate"], "not with --pred"), (["robustness"], "the run's own dataset"),
])
def test_commands_that_only_read_a_dataset_do_not_promise_trains_default(command, said, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    dataset_help = " ".join(capsys.readouterr().out.split("--dataset {")[-1].split())
    assert said in dataset_help and "digits, whose preset" not in dataset_help


def test_an_occupied_run_folder_names_the_way_on_from_python_and_the_command_line(tmp_path):
    from siamese.data.table import DataError
    from siamese.workflows.run_folder import prepare_run_dir

    config = run_config({"out": str(tmp_path / "run")})
    prepare_run_dir(config, None)
    with pytest.raises(DataError, match=r"train --resume .*run_training\(config, resume="):
        prepare_run_dir(run_config({"out": str(tmp_path / "run")}), None)


@pytest.mark.parametrize("text", ["embed: [1, 2]\n", "data: ham10000\n", "classifier: 3\n"])
def test_a_section_given_something_other_than_a_mapping_is_named_as_a_section(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    section = text.split(":")[0]
    with pytest.raises(ValueError, match=rf"bad.yaml: {section} is a section of settings and takes a mapping"):
        read_config_file(path)


@pytest.mark.parametrize(("gpu", "cpu"), [("ham_gpu", "ham_cpu"), ("isic_gpu", "isic_cpu"), ("ph2_gpu", "ph2")])
def test_a_gpu_preset_is_its_cpu_recipe_at_gpu_sizes(gpu, cpu):
    on_gpu, on_cpu = preset(gpu).to_dict(), preset(cpu).to_dict()
    sizes = {"preset", "data.image_size", "data.num_workers", "embed.batch_size", "embed.epochs", "embed.patience"}
    assert set(differing_settings(on_gpu, on_cpu)) <= sizes
    assert on_gpu["data"]["image_size"] == 224 and on_gpu["compute"] == "auto"
    assert on_gpu["embed"]["epochs"] > on_cpu["embed"]["epochs"]


@pytest.mark.parametrize("name", ["ham_cpu", "isic_cpu", "ph2", "ham_leakage", "ham_gpu", "isic_gpu", "ph2_gpu"])
def test_a_preset_named_without_a_dataset_keeps_its_own_dataset(name):
    assert run_config({"preset": name, "data.data_dir": "somewhere"}).data.dataset == preset(name).data.dataset
    assert run_config({"preset": name, "data.dataset": "synthetic"}).data.dataset == "synthetic"


@pytest.mark.parametrize(("name", "loss", "miner"), [
    ("isic_cpu", "supcon", "none"), ("isic_cpu", "arcface", "none"), ("isic_cpu", "contrastive", "none"),
    ("ham_cpu", "triplet", "semihard"), ("ph2", "multi_similarity", "multi_similarity"),
])
def test_a_loss_named_over_a_preset_takes_its_own_miner_unless_one_is_named(tmp_path, capsys, name, loss, miner):
    from siamese.training.losses import resolve_objective

    config = run_config({"preset": name, "embed.loss": loss})
    resolve_objective(config.embed)
    assert config.embed.miner == miner
    path = tmp_path / "loss.yaml"
    path.write_text(f"preset: {name}\nembed:\n  loss: {loss}\n")
    assert main(["train", "-c", str(path), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["embed"]["miner"] == miner
    assert run_config({"preset": name, "embed.loss": loss, "embed.miner": "hard"}).embed.miner == "hard"


@pytest.mark.parametrize(("flags", "message"), [
    (["--test-fraction", "0.3"], "the test fraction (--test-fraction, split --test) must be close to 1/n"),
    (["--val-fraction", "0.95"], "the val fraction (--val-fraction, split --val) over what the test split leaves"),
    (["--val-fraction", "0.3", "--test-fraction", "0.5"], "got 0.6"),
    (["--references", "none", "finetune"], "--references none (references: [none] in a file) means no reference model"),
])
def test_a_setting_the_run_would_refuse_is_refused_before_a_folder_exists(tmp_path, capsys, flags, message):
    for extra in (["--print-config"], ["--out", str(tmp_path / "run")]):
        assert main(["train", "--dataset", "synthetic", *flags, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_warm_up_as_long_as_stage_1_is_warned_about_unless_the_backbone_is_frozen_on_purpose():
    config = preset("ham_gpu")
    config.embed.frozen_epochs, config.embed.epochs = 5, 1
    with pytest.warns(UserWarning, match=r"--frozen-epochs 5 covers every one of the 1 stage-1 epochs"):
        config.validate()
    config.embed.backbone_lr_scale = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config.validate()
