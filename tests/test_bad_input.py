"""The README's promise for every command: a file it cannot use is one line, `error: PATH: ...`, exit 2."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from siamese.cli import main


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
