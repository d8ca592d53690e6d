import json
import warnings

import pandas as pd
import pytest

from siamese.cli import main
from siamese.data import (
    audit_manifest,
    drop_conflicts,
    kfold_table,
    label_conflicts,
    load_dataset,
    planted_pairs,
    read_pairs,
    split_table,
    write_manifest,
)
from siamese.data.splits import linked_components


@pytest.fixture(scope="module")
def lesions():
    return load_dataset("synthetic", lesions_per_class=12, seed=1)


def test_linked_components_are_transitive():
    frame = pd.DataFrame({"image_id": list("abcde"), "group": ["g1", "g1", "g2", "g3", "g4"]})
    pairs = pd.DataFrame({"from_img": ["b", "c"], "to_img": ["c", "d"], "distance": [0.1, 0.1]})
    comp = linked_components(frame, pairs)
    assert comp[0] == comp[1] == comp[2] == comp[3] != comp[4]


def test_grouped_split_never_shares_groups_or_duplicates(lesions):
    pairs = planted_pairs(lesions)
    manifest = split_table(lesions.frame, pairs, seed=0)
    report = audit_manifest(manifest, pairs)
    assert report["leaking_groups"] == 0
    assert report["straddling_duplicate_pairs"] == 0
    assert report["duplicate_pairs"] == len(pairs)
    assert not report["leaks"]
    assert set(manifest["split"]) == {"train", "val", "test"}
    share = manifest["split"].value_counts(normalize=True)
    assert 0.1 < share["test"] < 0.3 and 0.03 < share["val"] < 0.2


def test_without_duplicate_list_planted_copies_straddle(lesions):
    pairs = planted_pairs(lesions)
    straddles = [audit_manifest(split_table(lesions.frame, None, seed=s), pairs)["straddling_duplicate_pairs"]
                 for s in range(4)]
    assert max(straddles) > 0


def test_random_split_is_reported_as_leaking(lesions):
    manifest = split_table(lesions.frame, seed=0, strategy="random")
    report = audit_manifest(manifest)
    assert report["leaks"] and report["leaking_groups"] > 0


def test_same_seed_same_bytes(lesions, tmp_path):
    pairs = planted_pairs(lesions)
    for name in ("a.csv", "b.csv"):
        write_manifest(split_table(lesions.frame, pairs, seed=7), tmp_path / name)
    write_manifest(split_table(lesions.frame, pairs, seed=8), tmp_path / "c.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_kfold_keeps_groups_whole(lesions):
    pairs = planted_pairs(lesions)
    manifest = kfold_table(lesions.frame, pairs, folds=4, seed=0)
    assert sorted(manifest["split"].unique()) == ["fold0", "fold1", "fold2", "fold3"]
    report = audit_manifest(manifest, pairs)
    assert report["leaking_groups"] == 0 and report["straddling_duplicate_pairs"] == 0
    assert (manifest.groupby("split")["label"].nunique() == lesions.frame["label"].nunique()).all()


def test_conflicting_duplicates_reported_and_dropped(lesions):
    pairs = planted_pairs(lesions)
    conflicts = label_conflicts(lesions.frame, pairs)
    assert len(conflicts) == 1
    kept = drop_conflicts(lesions, pairs)
    assert len(kept.frame) == len(lesions.frame) - 2
    assert kept.excluded == {"label-conflicting near-duplicate": 2}


def test_pair_file_formats(tmp_path):
    (tmp_path / "fastdup.csv").write_text("from_img,to_img,distance\nISIC_1.jpg,ISIC_2.jpg,0.05\n")
    (tmp_path / "sim.csv").write_text("similarity,from_img,to_img\n0.97,ISIC_1.jpg,ISIC_3\n")
    (tmp_path / "plain.csv").write_text("a,b\nISIC_4,ISIC_5\n")
    assert read_pairs(tmp_path / "fastdup.csv").iloc[0].tolist() == ["ISIC_1", "ISIC_2", 0.05]
    assert read_pairs(tmp_path / "sim.csv").iloc[0]["distance"] == pytest.approx(0.03)
    assert read_pairs(tmp_path / "plain.csv")[["from_img", "to_img"]].iloc[0].tolist() == ["ISIC_4", "ISIC_5"]


def test_cli_split_and_audit_exit_codes(ham_dir, tmp_path, capsys):
    out = tmp_path / "split.csv"
    assert main(["split", "--dataset", "ham10000", "--data-dir", str(ham_dir), "--seed", "1", "--out", str(out)]) == 0
    assert "all" in capsys.readouterr().out
    assert main(["audit", str(out), "--out", str(tmp_path / "audit.json")]) == 0
    assert json.loads((tmp_path / "audit.json").read_text())["leaking_groups"] == 0
    naive = tmp_path / "naive.csv"
    main(["split", "--dataset", "ham10000", "--data-dir", str(ham_dir), "--strategy", "random", "--out", str(naive)])
    assert main(["audit", str(naive)]) == 1


def test_cli_reports_bad_input(tmp_path, capsys):
    bad = tmp_path / "m.csv"
    bad.write_text("image_id,dx\nx,nv\n")
    assert main(["split", "--dataset", "ham10000", "--metadata", str(bad), "--out", str(tmp_path / "s.csv")]) == 2
    assert "lesion_id" in capsys.readouterr().err


def test_real_ham_split_is_clean_and_random_split_leaks(shared_ham, tmp_path):
    meta = shared_ham / "HAM10000_metadata.csv"
    dups = [shared_ham / "newly_discovered_duplicates.csv", shared_ham / "near_duplicates_different_times.csv"]
    out = tmp_path / "split.csv"
    args = ["split", "--dataset", "ham10000", "--metadata", str(meta), "--seed", "0", "--out", str(out)]
    for d in dups:
        args += ["--duplicates", str(d)]
    assert main(args) == 0
    audit_args = ["audit", str(out), "--out", str(tmp_path / "a.json")]
    for d in dups:
        audit_args += ["--duplicates", str(d)]
    assert main(audit_args) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["leaking_groups"] == 0 and report["straddling_duplicate_pairs"] == 0
    assert report["duplicate_pairs"] == 20
    assert report["max_class_share_gap_pp"] < 2.0
    naive = tmp_path / "naive.csv"
    main(["split", "--dataset", "ham10000", "--metadata", str(meta), "--strategy", "random", "--out", str(naive)])
    assert main(["audit", str(naive), *sum([["--duplicates", str(d)] for d in dups], [])]) == 1


def test_too_small_dataset_gets_a_clear_error():
    from siamese.data import DataError

    frame = pd.DataFrame({"image_id": list("abcdef"), "label": list("xxxyyy"), "group": list("abcdef")})
    with pytest.raises(DataError, match="too few images"):
        split_table(frame, seed=0)


def test_a_table_read_alone_that_is_too_small_is_refused_for_its_size_not_for_images(tmp_path, capsys):
    for rows in (3, 6):
        meta = tmp_path / f"meta{rows}.csv"
        pd.DataFrame({"lesion_id": [f"HAM_{i:07d}" for i in range(rows)],
                      "image_id": [f"ISIC_{i:07d}" for i in range(rows)],
                      "dx": ["nv", "mel", "bkl"] * (rows // 3)}).to_csv(meta, index=False)
        assert main(["split", "--dataset", "ham10000", "--metadata", str(meta), "--out", str(tmp_path / "s.csv")]) == 2
        err = capsys.readouterr().err
        assert "too few images" in err and "not found" not in err, err


def test_a_pair_list_that_matches_nothing_is_named_by_the_columns_it_was_read_from(tmp_path, capsys):
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"lesion_id": [f"HAM_{i:07d}" for i in range(30)], "image_id": [f"ISIC_{i:07d}" for i in range(30)],
                  "dx": ["nv", "mel", "bkl"] * 10}).to_csv(meta, index=False)
    listings = {"junk.csv": ("foo,bar\n1,2\n", "first two columns, 'foo' and 'bar'"),
                "named.csv": ("image_name_1,image_name_2\nISIC_9000001,ISIC_9000002\n",
                              "first two columns, 'image_name_1' and 'image_name_2'"),
                "fastdup_rows.csv": ("from,to,distance\n1,2,0.99\n", "by row number")}
    for name, (text, message) in listings.items():
        (tmp_path / name).write_text(text)
        argv = ["split", "--dataset", "ham10000", "--metadata", str(meta), "--duplicates", str(tmp_path / name),
                "--out", str(tmp_path / "s.csv")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert ("row number" in err) == (name == "fastdup_rows.csv"), err


def ham_path(name: str) -> str:
    """Where fastdup, run over the HAM10000 download, names an image: its full path."""
    part = 1 if int(name[5:12]) <= 29305 else 2
    return f"/data/HAM10000/HAM10000_images_part_{part}/{name}"


def test_fastdup_lists_match_by_file_stem_and_a_list_matching_nothing_is_refused(shared_ham, tmp_path, capsys):
    meta, published = shared_ham / "HAM10000_metadata.csv", shared_ham / "newly_discovered_duplicates.csv"
    pairs = pd.read_csv(published)
    fastdup = tmp_path / "similarity.csv"
    pd.DataFrame({"from": pairs["from_img"].map(ham_path), "to": pairs["to_img"].map(ham_path),
                  "distance": pairs["similarity"]}).to_csv(fastdup, index=False)
    assert read_pairs(fastdup)["distance"].tolist() == pytest.approx((1 - pairs["similarity"]).tolist())
    out = tmp_path / "split.csv"
    assert main(["split", "--dataset", "ham10000", "--metadata", str(meta), "--duplicates", str(fastdup),
                 "--out", str(out)]) == 0
    assert "similarity.csv: 18 of 18 pair(s) have both images here" in capsys.readouterr().err
    for listing in (published, fastdup):
        assert main(["audit", str(out), "--duplicates", str(listing), "--out", str(tmp_path / "a.json")]) == 0
        report = json.loads((tmp_path / "a.json").read_text())
        assert report["duplicate_pairs"] == 18 and report["straddling_duplicate_pairs"] == 0
    names = sorted(set(pairs["from_img"]) | set(pairs["to_img"]))  # fastdup's first version: row numbers
    rows = tmp_path / "rows.csv"
    pd.DataFrame({"from": pairs["from_img"].map(names.index), "to": pairs["to_img"].map(names.index),
                  "distance": pairs["similarity"]}).to_csv(rows, index=False)
    other = tmp_path / "other.csv"
    other.write_text("image_name_1,image_name_2\nISIC_9000001,ISIC_9000002\n")
    capsys.readouterr()
    for listing, message in ((rows, "by row number"), (other, "none of its 2 images")):
        for command in (["split", "--dataset", "ham10000", "--metadata", str(meta), "--out", str(tmp_path / "s")],
                        ["audit", str(out)]):
            assert main([*command, "--duplicates", str(listing)]) == 2
            assert message in capsys.readouterr().err


def test_windows_paths_in_a_pair_list(tmp_path):
    (tmp_path / "win.csv").write_text("from,to\nC:\\HAM\\ISIC_1.JPG,D:\\x\\ISIC_2.png\n")
    assert read_pairs(tmp_path / "win.csv")[["from_img", "to_img"]].iloc[0].tolist() == ["ISIC_1", "ISIC_2"]


def isic2018_tables(metadata: pd.DataFrame, folder, groupings: bool = True):
    """The ISIC 2018 Task 3 download's tables for these HAM10000 rows: the one-hot ground truth in its own
    folder and, one folder up, the lesion groupings."""
    truth = folder / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    truth.parent.mkdir(parents=True)
    pd.DataFrame({"image": metadata["image_id"], **{c.upper(): (metadata["dx"] == c).astype(float)
                                                     for c in ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")}}
                 ).to_csv(truth, index=False)
    if groupings:
        pd.DataFrame({"image": metadata["image_id"], "lesion_id": metadata["lesion_id"],
                      "diagnosis_confirm_type": metadata["dx_type"]}).to_csv(
            folder / "ISIC2018_Task3_Training_LesionGroupings.csv", index=False)
    return truth


def test_isic2018_lesion_groupings_one_folder_up_keep_lesions_whole(shared_ham, tmp_path):
    metadata = pd.read_csv(shared_ham / "HAM10000_metadata.csv")
    truth = isic2018_tables(metadata, tmp_path)
    out = tmp_path / "split.csv"
    assert main(["split", "--dataset", "ham10000", "--metadata", str(truth), "--out", str(out)]) == 0
    manifest = pd.read_csv(out)
    assert manifest["group"].nunique() == 7470
    lesion = metadata.set_index("image_id")["lesion_id"]
    assert (manifest.groupby(manifest["image_id"].map(lesion))["split"].nunique() > 1).sum() == 0


def test_a_one_hot_table_without_lesion_ids_is_said_aloud_and_its_audit_checks_no_lesions(synthetic, tmp_path,
                                                                                          capsys):
    frame = synthetic.frame
    metadata = pd.DataFrame({"image_id": frame["image_id"], "lesion_id": frame["group"], "dx": frame["label"],
                             "dx_type": "histo"})
    truth = isic2018_tables(metadata, tmp_path, groupings=False)
    out = tmp_path / "split.csv"
    with pytest.warns(UserWarning, match="no lesion ids .* images of one lesion may straddle"):
        assert main(["split", "--dataset", "ham10000", "--metadata", str(truth), "--out", str(out)]) == 0
    assert main(["audit", str(out), "--out", str(tmp_path / "a.json")]) == 0
    assert "not checked: lesions" in capsys.readouterr().err
    assert json.loads((tmp_path / "a.json").read_text())["unchecked"][0].startswith("lesions:")


@pytest.mark.parametrize("strategy", ["grouped", "random"])
def test_no_test_fraction_gives_a_train_val_manifest_stratified_with_groups_whole(lesions, strategy):
    pairs = planted_pairs(lesions) if strategy == "grouped" else None
    manifest = split_table(lesions.frame, pairs, val_fraction=0.2, test_fraction=0, seed=0, strategy=strategy)
    assert set(manifest["split"]) == {"train", "val"} and len(manifest) == len(lesions.frame)
    assert 0.1 < (manifest["split"] == "val").mean() < 0.3
    assert (manifest.groupby("split")["label"].nunique() == lesions.frame["label"].nunique()).all()
    if strategy == "grouped":
        report = audit_manifest(manifest, pairs)
        assert report["leaking_groups"] == 0 and report["straddling_duplicate_pairs"] == 0
    with pytest.raises(ValueError, match="test_fraction must be at least 0"):
        split_table(lesions.frame, pairs, test_fraction=-0.2, strategy=strategy)


def test_a_class_with_fewer_lesions_than_folds_is_named_in_lesions_not_in_sklearns_image_count():
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(40)],
                          "group": [f"l{k}" for k in range(36)] + ["rare"] * 4,
                          "label": ["common"] * 36 + ["rare"] * 4})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split_table(frame, val_fraction=0.1, test_fraction=0.2, seed=0)
    messages = [str(w.message) for w in caught]
    assert any("the test split is one of 5 stratified folds" in m and "rare (1)" in m for m in messages), messages
    assert not any("least populated class" in m for m in messages), messages
