"""The ONNX export: same answers as torch, never used once stale, and a predict that needs no torch."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from siamese.cli import main
from siamese.inference.engines import ONNX_FILE, ONNX_INFO, onnx_problem
from siamese.inference.export import export_onnx
from siamese.inference.predictor import Predictor, expand_inputs
from siamese.models import load_checkpoint, save_checkpoint
from siamese.runtime.errors import EngineError, ExportError
from tests.conftest import REPO

SAMPLES = REPO / "assets" / "samples"


@pytest.fixture
def run_copy(run_dir, tmp_path):
    """A copy of the shared run that a test may change."""
    return shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints"))


def test_training_writes_an_export_that_agrees_with_torch(run_dir, tmp_path):
    from PIL import Image

    from siamese.data import make_synthetic

    info = json.loads((run_dir / ONNX_INFO).read_text())
    assert (run_dir / ONNX_FILE).stat().st_size > 0 and max(info["max_abs_difference"].values()) <= 1e-3
    assert onnx_problem(run_dir) is None
    table = make_synthetic(lesions_per_class=1, seed=5)
    for i in range(4):
        Image.fromarray(table.images[i]).resize((90, 70)).save(tmp_path / f"query_{i}.jpg")
    images = expand_inputs([str(tmp_path), str(SAMPLES)])
    by_onnx, by_torch = Predictor(run_dir, engine="onnx"), Predictor(run_dir, engine="torch")
    assert (by_onnx.engine.name, by_torch.engine.name) == ("onnx", "torch")
    assert Predictor(run_dir).engine.name == "onnx"  # auto picks the current export
    for a, b in zip(by_onnx.predict(images), by_torch.predict(images), strict=True):
        assert a.label == b.label
        assert np.allclose([p for _, p in a.top_k], [p for _, p in b.top_k], atol=1e-3)
        assert [n[0] for n in a.neighbours] == [n[0] for n in b.neighbours]
        assert np.allclose([n[2] for n in a.neighbours], [n[2] for n in b.neighbours], atol=1e-4)
    batch = np.stack([np.full((3, 32, 32), v, dtype=np.uint8) for v in (0, 128, 255)])
    embedding, probabilities = by_onnx.engine(batch)  # any batch size, not only the one exported with
    assert embedding.shape[0] == 3 and np.allclose(np.linalg.norm(embedding, axis=1), 1, atol=1e-5)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_predict_with_the_export_never_imports_torch(run_dir):
    script = ("import sys; from siamese.cli import main; "
              f"code = main(['predict', '--run', {str(run_dir)!r}, {str(SAMPLES)!r}, '--format', 'json']); "
              "assert code == 0, code; "
              "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3 and "onnx engine" in done.stderr


def test_an_export_older_than_the_checkpoints_is_never_used(run_copy, capsys):
    payload = load_checkpoint(run_copy / "classifier.pt")
    payload["state"]["layers.6.bias"] += 5.0  # a retrained classifier, say
    save_checkpoint(payload, run_copy / "classifier.pt")
    assert "other checkpoints" in onnx_problem(run_copy)
    with pytest.warns(UserWarning, match="other checkpoints"):
        assert Predictor(run_copy).engine.name == "torch"
    with pytest.raises(EngineError, match="siamese export"):
        Predictor(run_copy, engine="onnx")
    assert main(["predict", "--run", str(run_copy), str(SAMPLES), "--engine", "onnx"]) == 2
    assert "other checkpoints" in capsys.readouterr().err
    assert main(["export", str(run_copy)]) == 0
    assert onnx_problem(run_copy) is None and Predictor(run_copy).engine.name == "onnx"


def test_a_run_without_an_export_predicts_with_torch(run_copy):
    (run_copy / ONNX_FILE).unlink()
    with pytest.warns(UserWarning, match="has no model.onnx"):
        assert Predictor(run_copy).engine.name == "torch"
    with pytest.raises(EngineError, match="the onnx engine runs on the CPU"):
        Predictor(run_copy, engine="onnx", device="cuda")


def test_a_corrupt_export_is_refused_or_replaced_by_torch(run_copy):
    (run_copy / ONNX_FILE).write_bytes(b"not a model")
    with pytest.raises(EngineError, match="cannot load it"):
        Predictor(run_copy, engine="onnx")
    with pytest.warns(UserWarning, match="cannot load it"):
        assert Predictor(run_copy).engine.name == "torch"


def test_export_names_a_folder_that_is_not_a_finished_run(run_copy, tmp_path, capsys):
    assert main(["export", str(tmp_path / "empty")]) == 2
    assert "is this a finished run folder?" in capsys.readouterr().err
    (run_copy / "embedder.pt").unlink()
    assert main(["export", str(run_copy)]) == 2
    assert "embedder.pt: checkpoint not found" in capsys.readouterr().err


def test_missing_onnxruntime_falls_back_to_torch(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert onnx_problem(run_dir) == "onnxruntime is not installed"
    with pytest.warns(UserWarning, match=r"not installed: using torch.*\(`pip install onnxruntime` adds it\)"):
        assert Predictor(run_dir).engine.name == "torch"
    with pytest.raises(EngineError, match="`pip install onnxruntime` adds it"):
        Predictor(run_dir, engine="onnx")


def test_a_failed_or_disagreeing_export_leaves_no_file_behind(run_copy, monkeypatch):
    for path in run_copy.glob(f"{ONNX_FILE}*"):
        path.unlink()
    with pytest.raises(ExportError, match="disagrees with torch"):
        export_onnx(run_copy, tolerance=-1.0)
    assert not any(run_copy.glob(f"{ONNX_FILE}*"))

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match="unsupported operator"):
        export_onnx(run_copy)
    assert not any(run_copy.glob(f"{ONNX_FILE}*"))
    assert main(["export", str(run_copy)]) == 2


def _same_architecture(run_copy, kind: str) -> None:
    """Replace the copy's embedder.pt by another embedder of the same architecture and input statistics."""
    from siamese.models import EmbeddingNet

    payload = load_checkpoint(run_copy / "embedder.pt")
    if kind == "retrained":  # every weight moved a little, as another seed's training would
        generator = torch.Generator().manual_seed(1)
        state = {k: v + 1e-3 * torch.randn(v.shape, generator=generator)
                 if v.is_floating_point() and not k.startswith("normalize.") else v
                 for k, v in payload["state"].items()}
    elif kind == "untrained":
        fresh = EmbeddingNet.from_arch(payload["arch"])
        fresh.normalize.load_state_dict({k.removeprefix("normalize."): v for k, v in payload["state"].items()
                                         if k.startswith("normalize.")})
        state = fresh.state_dict()
    else:  # one bias of the head changed: the smallest difference there is
        state = dict(payload["state"])
        name = next(k for k in state if k.endswith("bias"))
        state[name] = state[name].clone()
        state[name][0] += 1e-6
    save_checkpoint({**payload, "state": state}, run_copy / "embedder.pt")


@pytest.mark.parametrize("kind", ["retrained", "untrained", "one_bias"])
def test_an_embedder_of_the_same_architecture_from_elsewhere_is_refused(run_copy, kind, capsys):
    from siamese.models import CheckpointError
    from siamese.workflows.scoring import rescore_run

    (run_copy / ONNX_FILE).unlink()
    _same_architecture(run_copy, kind)
    assert main(["predict", "--run", str(run_copy), str(SAMPLES), "--engine", "torch"]) == 2
    err = capsys.readouterr().err
    assert "embedder.pt: not the embedder" in err and "Traceback" not in err
    assert main(["export", str(run_copy)]) == 2
    assert "not this run's checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="classifier.pt was trained on"):
        rescore_run(run_copy)


def test_a_runs_own_checkpoints_are_tied_by_the_embedders_digest(run_copy):
    from siamese.models import EmbeddingNet, state_digest

    recorded = load_checkpoint(run_copy / "classifier.pt")["embedder_digest"]
    assert recorded == state_digest(load_checkpoint(run_copy / "embedder.pt")["state"])
    net = EmbeddingNet.from_checkpoint(run_copy / "embedder.pt").to(memory_format=torch.channels_last)
    assert state_digest(net.state_dict()) == recorded  # the memory format is not the model
    assert main(["predict", "--run", str(run_copy), str(SAMPLES), "--engine", "torch"]) == 0


def test_both_checkpoints_from_elsewhere_never_meet_the_runs_cached_embeddings(run_copy, capsys):
    """A consistent embedder/classifier pair copied in from another run: predict refuses the run's training
    embeddings (another embedder made them), rescore recomputes them, and then predict answers again."""
    import numpy as np

    from siamese.models import state_digest
    from siamese.workflows.scoring import rescore_run

    (run_copy / ONNX_FILE).unlink()
    _same_architecture(run_copy, "retrained")
    classifier = load_checkpoint(run_copy / "classifier.pt")
    new_digest = state_digest(load_checkpoint(run_copy / "embedder.pt")["state"])
    save_checkpoint({**classifier, "embedder_digest": new_digest}, run_copy / "classifier.pt")
    assert main(["predict", "--run", str(run_copy), str(SAMPLES), "--engine", "torch"]) == 2
    err = capsys.readouterr().err
    assert "train.npz: made by another embedder.pt than the run's" in err and "rescore" in err
    before = np.load(run_copy / "embeddings" / "train.npz")["embedding"]
    rescore_run(run_copy)
    after = np.load(run_copy / "embeddings" / "train.npz")
    assert not np.allclose(after["embedding"], before)  # recomputed with the new embedder, not reused
    from siamese.runtime.digest import file_sha256

    assert str(after["embedder_sha256"]) == file_sha256(run_copy / "embedder.pt")
    assert main(["predict", "--run", str(run_copy), str(SAMPLES), "--engine", "torch"]) == 0



def test_predict_text_prints_every_probability_and_distance_with_four_decimals():
    """A column whose values all round to zero (the last of a long top-k) keeps the others' width."""
    import numpy as np
    import pandas as pd

    from siamese.inference.predictor import Prediction, predictions_table, predictions_text

    predictions = [Prediction(image=name, label="nv", top_k=[("nv", top), ("mel", 1 - top), ("df", 0.0)],
                              neighbours=[("ISIC_1", "nv", distance)], seconds=0.01, probabilities=np.zeros(3))
                   for name, top, distance in (("a.jpg", 0.99991, 0.0), ("b.jpg", 0.5, 1.2))]
    lines = predictions_text(pd.DataFrame(predictions_table(predictions))).splitlines()
    header = lines[0].split()
    numeric = [i for i, name in enumerate(header) if name.endswith(("_p", "_distance"))]
    assert len(numeric) == 4
    for line in lines[1:]:
        cells = line.split()
        assert all(len(cells[i].split(".")[1]) == 4 for i in numeric), line
