import numpy as np
import pytest
from PIL import Image

from siamese.data import DataError, load_dataset, load_image
from siamese.data.crops import find_mask, lesion_box, read_mask
from siamese.data.images import pixel_source
from siamese.data.table import DatasetTable
from siamese.inference.lesion_masks import crop_boxes


def test_lesion_box_is_a_square_with_margin_inside_the_image():
    mask = np.zeros((100, 200), dtype=bool)
    mask[40:60, 90:130] = True  # 20 high, 40 wide, centred at (110, 50)
    left, top, right, bottom = lesion_box(mask, margin=0.25)
    assert right - left == bottom - top == 60  # 40 * (1 + 2 * 0.25)
    assert (left + right) / 2 == 110 and (top + bottom) / 2 == 50
    corner = np.zeros((100, 200), dtype=bool)
    corner[0:10, 190:200] = True
    assert lesion_box(corner, margin=0.5) == (180, 0, 200, 20)  # shifted inside, not clipped smaller
    huge = np.ones((100, 200), dtype=bool)
    assert lesion_box(huge, 0.15) == (0, 0, 200, 100)
    assert lesion_box(np.zeros((10, 10), dtype=bool)) is None


def test_read_mask_accepts_0_255_and_0_1_and_checks_size(tmp_path):
    values = np.zeros((8, 12), dtype=np.uint8)
    values[2:5, 3:9] = 1
    Image.fromarray(values).save(tmp_path / "ones.png")
    Image.fromarray(values * 255).save(tmp_path / "full.png")
    assert read_mask(tmp_path / "ones.png").sum() == read_mask(tmp_path / "full.png").sum() == 18
    with pytest.raises(DataError, match="full.png: mask is 12x8 but its image is 10x8"):
        read_mask(tmp_path / "full.png", size=(10, 8))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png: unreadable lesion mask: not an image"):
        read_mask(tmp_path / "bad.png")


def test_crop_keeps_the_lesion_and_drops_the_surroundings(tmp_path):
    image = np.full((80, 120, 3), 200, dtype=np.uint8)
    image[30:50, 50:70] = (90, 40, 20)  # a dark lesion in pale skin
    mask = np.zeros((80, 120), dtype=np.uint8)
    mask[30:50, 50:70] = 255
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "img_lesion.png")
    box = lesion_box(read_mask(find_mask(tmp_path / "img.png", tmp_path)), margin=0.15)
    cropped = load_image(tmp_path / "img.png", 32, box)
    whole = load_image(tmp_path / "img.png", 32)
    dark = (cropped.mean(axis=2) < 100).mean()
    assert dark > 0.5 and dark > 4 * (whole.mean(axis=2) < 100).mean()


def test_find_mask_in_a_folder_and_in_the_ph2_layout(tmp_path, ph2_dir):
    (tmp_path / "ISIC_0000001_segmentation.png").write_bytes(b"")
    assert find_mask(tmp_path / "x" / "ISIC_0000001.jpg", tmp_path).name == "ISIC_0000001_segmentation.png"
    assert find_mask(tmp_path / "x" / "ISIC_0000002.jpg", tmp_path) is None
    image = next(ph2_dir.rglob("IMD001.bmp"))
    assert find_mask(image).name == "IMD001_lesion.bmp"


def test_pixel_source_crops_ph2_to_the_lesion_and_needs_masks(ph2_dir, synthetic):
    table = load_dataset("ph2", ph2_dir)
    whole = pixel_source(table, 24)[0]
    cropped = pixel_source(table, 24, boxes=crop_boxes(table, "lesion-mask", margin=0.0))[0]
    assert cropped.shape == whole.shape == (24, 24, 3)
    assert not np.array_equal(cropped, whole)
    with pytest.raises(DataError, match="needs image files"):
        crop_boxes(synthetic, "lesion-mask")
    with pytest.raises(DataError, match="needs lesion masks"):
        crop_boxes(DatasetTable(table.frame.drop(columns="mask")), "lesion-mask")
    with pytest.raises(DataError, match="needs --seg-run"):
        crop_boxes(table, "lesion")
    with pytest.raises(ValueError, match="crop must be one of"):
        crop_boxes(table, "centre")


def test_inference_reads_images_with_the_runs_crop_and_names_a_missing_mask_folder(tmp_path, ph2_dir):
    from siamese.inference.preprocess import Preprocessing

    image = next(ph2_dir.rglob("IMD001.bmp"))
    prep = Preprocessing(24, (0.5,) * 3, (0.2,) * 3, ["a", "b"], "lesion-mask", 0.0)
    table = load_dataset("ph2", ph2_dir)
    row = table.frame.index[table.frame["image_id"] == "IMD001"][0]
    boxes = crop_boxes(table, "lesion-mask", margin=0.0)
    assert np.array_equal(prep.read(image), pixel_source(table, 24, boxes=boxes)[row])
    with pytest.raises(DataError, match="nowhere: mask folder not found"):
        prep.read(image, tmp_path / "nowhere")
