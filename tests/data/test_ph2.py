from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from siamese.data import DataError, load_dataset, load_image
from tests.conftest import ph2_like, write_ph2_layout


def test_ph2_reader_reads_the_distributed_layout_in_bmp(ph2_dir):
    table = load_dataset("ph2", ph2_dir)
    frame = table.frame
    assert len(frame) == 12
    assert frame["label"].value_counts().to_dict() == {"common_nevus": 4, "atypical_nevus": 4, "melanoma": 4}
    assert (frame["group"] == frame["image_id"]).all()
    assert frame["path"].str.endswith(".bmp").all() and frame["mask"].str.endswith("_lesion.bmp").all()
    assert load_image(frame["path"].iloc[0], 16).shape == (16, 16, 3)
    same = load_dataset("ph2", ph2_dir / "PH2Dataset").frame
    assert list(same["path"]) == list(frame["path"])


def test_ph2_binary_is_melanoma_vs_nevus(ph2_dir):
    frame = load_dataset("ph2", ph2_dir, binary=True).frame
    assert frame["label"].value_counts().to_dict() == {"nevus": 8, "melanoma": 4}
    assert set(frame.loc[frame["label"] == "nevus", "dx"]) == {"common_nevus", "atypical_nevus"}


def test_ph2_any_image_extension(tmp_path, synthetic):
    root = write_ph2_layout(tmp_path, SimpleNamespace(frame=ph2_like(synthetic, 2)), suffix=".png")
    assert load_dataset("ph2", root).frame["path"].str.endswith(".png").all()


def test_ph2_without_workbook_names_it(tmp_path):
    (tmp_path / "PH2Dataset").mkdir()
    with pytest.raises(DataError, match="PH2_dataset.xlsx: PH2 workbook not found"):
        load_dataset("ph2", tmp_path)


def test_ph2_missing_folder_is_named_as_missing(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load_dataset("ph2", tmp_path / "nowhere")


def test_ph2_workbook_without_header_row(ph2_dir):
    workbook = ph2_dir / "PH2Dataset" / "PH2_dataset.xlsx"
    raw = pd.read_excel(workbook, header=None)
    raw[raw[0] != "Image Name"].to_excel(workbook, header=False, index=False)
    with pytest.raises(DataError, match="no header row with 'Image Name'"):
        load_dataset("ph2", ph2_dir)


@pytest.mark.parametrize(("cells", "message"), [([None, None, None], "no 'X' in"),
                                                (["X", None, "X"], "more than one 'X'")])
def test_ph2_case_with_no_or_two_diagnoses_is_named(tmp_path, synthetic, cells, message):
    cases = ph2_like(synthetic, 2)
    root = write_ph2_layout(tmp_path, SimpleNamespace(frame=cases), marks={"IMD101": cells})
    with pytest.raises(DataError, match=f"{message}.*IMD101"):
        load_dataset("ph2", root)


def test_ph2_listed_case_without_image_is_named(ph2_dir):
    image = next((ph2_dir / "PH2Dataset" / "PH2 Dataset images" / "IMD002").rglob("IMD002.bmp"))
    image.unlink()
    with pytest.raises(DataError, match="case IMD002 is listed but has no image"):
        load_dataset("ph2", ph2_dir)


def test_ph2_image_that_does_not_decode_is_named(ph2_dir):
    image = next((ph2_dir / "PH2Dataset" / "PH2 Dataset images" / "IMD101").rglob("IMD101.bmp"))
    image.write_bytes(image.read_bytes()[:200])
    with pytest.raises(DataError, match="IMD101.bmp: unreadable image: truncated or corrupt BMP data"):
        load_dataset("ph2", ph2_dir)


def test_ph2_workbook_only_plans_a_split_without_images(ph2_dir, tmp_path, capsys):
    from siamese.cli import main

    table = load_dataset("ph2", ph2_dir, require_images=False)
    assert (table.frame["path"] == "").all() and len(table.frame) == 12
    assert main(["split", "--dataset", "ph2", "--data-dir", str(ph2_dir), "--folds", "2",
                 "--out", str(tmp_path / "folds.csv")]) == 0
    folds = pd.read_csv(tmp_path / "folds.csv")
    assert sorted(folds["split"].unique()) == ["fold0", "fold1"]
    assert folds.groupby("split")["label"].value_counts().min() == 2


def test_shared_ph2_reads_every_case_and_mask(shared_ph2):
    frame = load_dataset("ph2", shared_ph2).frame
    assert len(frame) == 160
    assert frame["label"].value_counts().to_dict() == {"common_nevus": 64, "atypical_nevus": 64, "melanoma": 32}
    assert (frame["mask"] != "").all()
    mask = np.asarray(Image.open(frame["mask"].iloc[0]))
    assert mask.shape[:2] == load_image(frame["path"].iloc[0]).shape[:2]
    assert set(np.unique(mask)) <= {0, 255}


def test_shared_ph2_copied_as_bmp_reads_the_same(shared_ph2, tmp_path):
    """The original PH2 download ships 24-bit BMPs; a BMP copy of a few shared cases reads identically."""
    source = load_dataset("ph2", shared_ph2).frame
    picks = pd.concat([rows.head(2) for _, rows in source.groupby("label")])
    cases = pd.DataFrame({"image_id": picks["image_id"], "label": picks["label"],
                          "pixels": [load_image(p) for p in picks["path"]]})
    root = write_ph2_layout(tmp_path, SimpleNamespace(frame=cases), suffix=".bmp")
    copy = load_dataset("ph2", root).frame.set_index("image_id")
    for _, row in picks.iterrows():
        assert copy.loc[row["image_id"], "label"] == row["label"]
        assert np.array_equal(load_image(copy.loc[row["image_id"], "path"]), load_image(row["path"]))


def test_ph2_folders_match_in_any_case(ph2_dir):
    root = ph2_dir / "PH2Dataset"
    (root / "PH2 Dataset images").rename(root / "ph2 dataset images")
    root.rename(ph2_dir / "ph2dataset")
    table = load_dataset("ph2", data_dir=ph2_dir)
    assert len(table.frame) == 12 and (table.frame["mask"] != "").all()
