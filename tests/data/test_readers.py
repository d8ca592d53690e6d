import csv

import numpy as np
import pandas as pd
import pytest

from siamese.data import DataError, ImageError, load_dataset, load_image, read_npz, read_pairs, to_binary
from siamese.data.readers import read_image_csv, read_isic2020
from tests.conftest import random_jpegs, write_ham_layout


def test_ham_reader_finds_images_in_both_parts(ham_dir, synthetic):
    table = load_dataset("ham10000", data_dir=ham_dir)
    assert len(table.frame) == len(synthetic.frame)
    assert set(table.frame["group"]) == set(synthetic.frame["group"])
    assert table.frame["path"].str.contains("part_2").any() and table.frame["path"].str.contains("part_1").any()
    assert load_image(table.frame["path"].iloc[0], 32).shape == (32, 32, 3)


def test_ham_flat_folder_and_metadata_only(tmp_path, synthetic):
    root = write_ham_layout(tmp_path / "flat", synthetic, split_parts=False)
    assert len(load_dataset("ham10000", data_dir=root).frame) == len(synthetic.frame)
    only_table = load_dataset("ham10000", metadata=root / "HAM10000_metadata.csv", require_images=False)
    assert (only_table.frame["path"] == "").all()


def test_isic2018_one_hot_layout_with_lesion_groupings(tmp_path):
    random_jpegs(tmp_path / "ISIC2018_Task3_Training_Input", 3)
    names = ["img_000", "img_001", "img_002"]
    onehot = pd.DataFrame({"image": names, "MEL": [1, 0, 0], "NV": [0, 1, 0], "BCC": [0, 0, 1], "AKIEC": 0,
                           "BKL": 0, "DF": 0, "VASC": 0})
    onehot.to_csv(tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv", index=False)
    pd.DataFrame({"image": names, "lesion_id": ["L1", "L1", "L2"]}).to_csv(
        tmp_path / "ISIC2018_Task3_Training_LesionGroupings.csv", index=False)
    frame = load_dataset("ham10000", data_dir=tmp_path).frame
    assert list(frame["label"]) == ["mel", "nv", "bcc"]
    assert list(frame["group"]) == ["L1", "L1", "L2"]


@pytest.mark.parametrize("layout", ["kaggle", "official"])
def test_isic2020_reader(tmp_path, layout):
    random_jpegs(tmp_path / "train", 4)
    ids = [f"img_{i:03d}" for i in range(4)]
    frame = pd.DataFrame({"image_name": ids, "patient_id": ["P1", "P1", "P2", "P3"]})
    if layout == "kaggle":
        frame["target"] = [0, 1, 0, 0]
        frame.to_csv(tmp_path / "train.csv", index=False)
    else:
        frame["benign_malignant"] = ["benign", "malignant", "benign", "benign"]
        frame.to_csv(tmp_path / "ISIC_2020_Training_GroundTruth.csv", index=False)
    table = read_isic2020(tmp_path)
    assert list(table.frame["label"]) == ["benign", "malignant", "benign", "benign"]
    assert list(table.frame["group"]) == ["P1", "P1", "P2", "P3"]


def test_npz_keeps_its_split(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8) for s, n in
              [("train", 6), ("val", 2), ("test", 3)]}
    arrays.update({f"{s}_labels": rng.integers(0, 7, (n, 1)) for s, n in [("train", 6), ("val", 2), ("test", 3)]})
    np.savez(tmp_path / "dermamnist.npz", **arrays)
    table = read_npz(tmp_path / "dermamnist.npz")
    assert table.frame["split"].value_counts().to_dict() == {"train": 6, "test": 3, "val": 2}
    assert table.images.shape == (11, 28, 28, 3)


def test_generic_csv_and_binary_view(tmp_path):
    paths = random_jpegs(tmp_path / "imgs", 3)
    pd.DataFrame({"path": [f"imgs/{p.name}" for p in paths], "label": ["mel", "nv", "bcc"],
                  "group": ["a", "a", "b"]}).to_csv(tmp_path / "images.csv", index=False)
    table = read_image_csv(tmp_path / "images.csv")
    assert list(table.frame["group"]) == ["a", "a", "b"]
    binary = to_binary(table)
    assert list(binary.frame["label"]) == ["malignant", "benign", "malignant"]
    assert list(binary.frame["dx"]) == ["mel", "nv", "bcc"]


def test_missing_image_is_named(ham_dir):
    victim = next((ham_dir / "HAM10000_images_part_1").glob("*.jpg"))
    victim.unlink()
    with pytest.raises(DataError, match=victim.stem) as info:
        load_dataset("ham10000", data_dir=ham_dir)
    assert "1 of" in str(info.value)


def test_corrupt_and_truncated_images_are_named(tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageError, match="garbage.jpg"):
        load_image(garbage)
    good = random_jpegs(tmp_path / "ok", 1, size=64)[0]
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageError, match="truncated.jpg"):
        load_image(truncated)


def test_csv_without_needed_columns(tmp_path):
    (tmp_path / "HAM10000_metadata.csv").write_text("image_id,dx\nISIC_1,nv\n")
    with pytest.raises(DataError, match="lesion_id"):
        load_dataset("ham10000", metadata=tmp_path / "HAM10000_metadata.csv", require_images=False)


def test_unknown_label_and_empty_table(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("lesion_id,image_id,dx\nL1,ISIC_1,nv\nL2,ISIC_2,melanoma\n")
    with pytest.raises(DataError, match="melanoma"):
        load_dataset("ham10000", metadata=bad, require_images=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("lesion_id,image_id,dx\n")
    with pytest.raises(DataError, match="no rows"):
        load_dataset("ham10000", metadata=empty, require_images=False)


def test_missing_metadata_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset("ham10000", metadata=tmp_path / "nope.csv", require_images=False)


def test_real_ham_metadata(shared_ham):
    table = load_dataset("ham10000", metadata=shared_ham / "HAM10000_metadata.csv", require_images=False)
    assert len(table.frame) == 10015
    assert table.frame["group"].nunique() == 7470
    assert table.frame["label"].value_counts()["nv"] == 6705


def test_partial_ham_download_needs_only_present_and_counts_the_missing(ham_dir):
    import shutil

    listed = len(pd.read_csv(ham_dir / "HAM10000_metadata.csv"))
    missing = len(list((ham_dir / "HAM10000_images_part_2").glob("*.jpg")))
    shutil.rmtree(ham_dir / "HAM10000_images_part_2")
    with pytest.raises(DataError, match="--only-present"):
        load_dataset("ham10000", data_dir=ham_dir)
    table = load_dataset("ham10000", data_dir=ham_dir, only_present=True)
    assert len(table.frame) == listed - missing
    assert table.frame["path"].str.contains("part_1").all()
    assert list(table.excluded.values()) == [missing]
    shutil.rmtree(ham_dir / "HAM10000_images_part_1")
    with pytest.raises(DataError, match=f"{listed} of {listed} images"):
        load_dataset("ham10000", data_dir=ham_dir, only_present=True)


def test_real_ham_images_in_both_parts_keep_lesions_in_one_split(shared_ham):
    from siamese.data.splits import split_table

    root = shared_ham / "images"
    table = load_dataset("ham10000", data_dir=root)
    frame = table.frame
    assert len(frame) == 56 and frame["group"].nunique() == 51
    assert frame["path"].str.contains("part_1").any() and frame["path"].str.contains("part_2").any()
    assert load_image(frame["path"].iloc[0]).shape == (450, 600, 3)
    counts = frame["group"].value_counts()
    repeated = counts[counts > 1]  # 56 images of 51 lesions: one lesion with three images, three with two
    assert sorted(repeated) == [2, 2, 2, 3]
    for seed in range(3):
        manifest = split_table(frame, val_fraction=0.2, test_fraction=0.2, seed=seed)
        shared = manifest[manifest["group"].isin(repeated.index)]
        assert shared.groupby("group")["split"].nunique().max() == 1


def test_tab_separated_ham_metadata_as_dataverse_serves_it(shared_ham, tmp_path):
    metadata = pd.read_csv(shared_ham / "HAM10000_metadata.csv")
    tab = tmp_path / "HAM10000_metadata.tab"  # tab-separated, strings quoted, an extra column, NA for no age
    metadata.assign(dataset="vidir_modern").to_csv(tab, sep="\t", quoting=csv.QUOTE_NONNUMERIC, na_rep="NA",
                                                   index=False)
    assert metadata["age"].isna().sum() > 0
    table = load_dataset("ham10000", data_dir=tmp_path, require_images=False).frame
    assert len(table) == 10015 and table["group"].nunique() == 7470
    assert table["label"].value_counts().to_dict() == metadata["dx"].value_counts().to_dict()
    assert table["age"].isna().sum() == metadata["age"].isna().sum()


@pytest.mark.parametrize("delimiter", [";", "|"])
def test_any_common_delimiter_reads_and_an_unknown_format_is_named(ham_dir, delimiter):
    metadata = pd.read_csv(ham_dir / "HAM10000_metadata.csv")
    metadata.to_csv(ham_dir / "HAM10000_metadata.csv", sep=delimiter, index=False)
    assert len(load_dataset("ham10000", data_dir=ham_dir).frame) == len(metadata)
    spaced = ham_dir / "spaced.txt"
    spaced.write_text("lesion_id image_id dx\nHAM_1 ISIC_1 nv\n")
    with pytest.raises(DataError, match="single column .*comma-, tab-, semicolon- or |-separated"):
        load_dataset("ham10000", metadata=spaced, require_images=False)


def test_a_table_of_neither_known_layout_is_named_as_such(tmp_path):
    (tmp_path / "m.csv").write_text("name,diagnosis\nISIC_1,nv\n")
    with pytest.raises(DataError, match="neither HAM10000 metadata .* nor an ISIC 2018"):
        load_dataset("ham10000", metadata=tmp_path / "m.csv", require_images=False)


def test_known_folder_names_match_in_any_case(ham_dir):
    listed = len(pd.read_csv(ham_dir / "HAM10000_metadata.csv"))
    for part in ("part_1", "part_2"):  # as Kaggle's copy unpacks
        (ham_dir / f"HAM10000_images_{part}").rename(ham_dir / f"ham10000_images_{part}")
    table = load_dataset("ham10000", data_dir=ham_dir)
    assert len(table.frame) == listed and table.frame["path"].str.contains("ham10000_images_part_2").any()


def test_missing_images_name_the_folders_searched_and_no_flag_that_cannot_help(ham_dir):
    for part in ("part_1", "part_2"):
        (ham_dir / f"HAM10000_images_{part}").rename(ham_dir / f"jpegs_{part}")
    searched = r"looked in HAM10000_images_part_1/ \(absent\), .*\./ \(1 file\(s\)\)"  # the metadata table
    for only_present in (False, True):
        with pytest.raises(DataError, match=searched) as info:
            load_dataset("ham10000", data_dir=ham_dir, only_present=only_present)
        assert "--only-present" not in str(info.value)


def test_unreadable_tables_and_archives_are_named_by_file(tmp_path):
    (tmp_path / "latin.csv").write_bytes(b"lesion_id,image_id,dx\nHAM_1,ISIC_\xe91,nv\n")
    with pytest.raises(DataError, match="latin.csv: not UTF-8 text"):
        load_dataset("ham10000", metadata=tmp_path / "latin.csv", require_images=False)
    (tmp_path / "dermamnist.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    with pytest.raises(DataError, match="dermamnist.npz: not a readable .npz"):
        read_npz(tmp_path / "dermamnist.npz")
    (tmp_path / "PH2Dataset").mkdir()
    (tmp_path / "PH2Dataset" / "PH2_dataset.xlsx").write_bytes(b"not a workbook")
    with pytest.raises(DataError, match="PH2_dataset.xlsx: not a readable .xlsx workbook"):
        load_dataset("ph2", data_dir=tmp_path)
    (tmp_path / "pairs.csv").write_text("from_img,to_img,similarity\nISIC_1,ISIC_2,high\n")
    with pytest.raises(DataError, match="pairs.csv: column 'similarity' holds non-numbers: high"):
        read_pairs(tmp_path / "pairs.csv")


@pytest.mark.parametrize("blank", ["path", "label", "group"])
def test_a_blank_cell_in_a_csv_is_named_with_its_line(tmp_path, blank):
    paths = random_jpegs(tmp_path, 4)
    table = pd.DataFrame({"path": [p.name for p in paths], "label": ["a", "b", "a", "b"],
                          "group": ["g0", "g1", "g2", "g3"]})
    table.loc[2, blank] = None
    table.to_csv(tmp_path / "images.csv", index=False)
    with pytest.raises(DataError, match=rf"images.csv: 1 row\(s\) with no {blank} \(line\(s\) 4\)"):
        load_dataset("csv", metadata=tmp_path / "images.csv")


def test_an_image_listed_twice_in_a_csv_is_named_with_its_lines(tmp_path):
    paths = random_jpegs(tmp_path, 3)
    names = [paths[0].name, paths[1].name, paths[2].name, paths[1].name]
    pd.DataFrame({"path": names, "label": ["a", "b", "a", "b"]}).to_csv(tmp_path / "images.csv", index=False)
    with pytest.raises(DataError, match=rf"images.csv: image id\(s\) {paths[1].stem} listed more than once "
                                        rf"\(line\(s\) 3, 5\)"):
        load_dataset("csv", metadata=tmp_path / "images.csv")


def test_a_blank_lesion_id_in_ham_metadata_is_named(shared_ham, tmp_path):
    frame = pd.read_csv(shared_ham / "images" / "HAM10000_metadata.csv")
    frame.loc[[0, 5], "lesion_id"] = None
    frame.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DataError, match=r"2 row\(s\) with no lesion_id \(line\(s\) 2, 7\)"):
        load_dataset("ham10000", data_dir=shared_ham / "images", metadata=tmp_path / "HAM10000_metadata.csv")
