import numpy as np
import pytest
import torch

from siamese.data import ImageDataset, build_transform, load_dataset, pixel_source
from siamese.data.images import cache_path, channel_stats
from siamese.models import InputNormalization


def test_transforms_keep_uint8_and_evaluation_is_exact(synthetic):
    source = pixel_source(synthetic, 40)
    for augment in ("lesion", "light", "none"):
        x, y = ImageDataset(source, np.zeros(len(source), int), build_transform(augment))[0]
        assert x.shape == (3, 40, 40) and x.dtype == torch.uint8
    plain = build_transform("none")(source[0])
    torch.testing.assert_close(plain, torch.from_numpy(source[0]).permute(2, 0, 1))
    with pytest.raises(ValueError):
        build_transform("heavy")
    torch.manual_seed(0)
    image = source[0]
    augmented = [build_transform("lesion")(image) for _ in range(4)]
    assert all(isinstance(a, torch.Tensor) for a in augmented)
    assert sum(not torch.equal(a, plain) for a in augmented) >= 3  # flips, rotation and jitter do act


def test_large_jpeg_is_decoded_at_reduced_scale_close_to_full_size(tmp_path, monkeypatch):
    from PIL import Image, JpegImagePlugin

    from siamese.data import load_image, make_synthetic

    path = tmp_path / "large.jpg"
    Image.fromarray(make_synthetic(lesions_per_class=1, seed=0).images[0]).resize((2400, 1800)).save(path, quality=90)
    reductions = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = draft(self, mode, size)
        reductions.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    reduced = load_image(path, 64).astype(float)
    assert reductions == [(300, 225)]  # libjpeg decoded at 1/8 scale, still above 64 px
    with Image.open(path) as image:
        full = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=float)
    assert reduced.shape == full.shape and np.abs(reduced - full).mean() < 2.0


def test_input_normalization_scales_uint8_and_adds_noise_only_in_training():
    layer = InputNormalization((0.5,) * 3, (0.5,) * 3, noise=0.1).eval()
    images = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2, 1).expand(1, 3, 2, 1)
    torch.testing.assert_close(layer(images)[0, :, :, 0], torch.tensor([[-1.0, 1.0]] * 3))
    already = torch.randn(1, 3, 2, 1)
    assert layer(already) is already
    torch.manual_seed(0)
    noisy = layer.train()(images)
    assert not torch.equal(noisy, layer.eval()(images))
    assert (noisy - layer(images)).abs().max() < 1.0


def test_file_cache_matches_decoding_and_is_reused(ham_dir, tmp_path):
    table = load_dataset("ham10000", data_dir=ham_dir)
    direct = pixel_source(table, 32)
    cached = pixel_source(table, 32, cache_dir=tmp_path / "cache")
    path = cache_path(table, 32, tmp_path / "cache")
    assert path.is_file() and not list(path.parent.glob("*.partial.npy"))
    assert len(cached) == len(direct)
    np.testing.assert_array_equal(cached[3], direct[3])
    stamp = path.stat().st_mtime_ns
    pixel_source(table, 32, cache_dir=tmp_path / "cache")
    assert path.stat().st_mtime_ns == stamp
    assert cache_path(table, 48, tmp_path / "cache") != path


def test_interrupted_cache_is_rebuilt(ham_dir, tmp_path):
    table = load_dataset("ham10000", data_dir=ham_dir)
    path = cache_path(table, 32, tmp_path)
    path.with_suffix(".partial.npy").write_bytes(b"half written")
    cached = pixel_source(table, 32, cache_dir=tmp_path)
    assert path.is_file() and len(cached) == len(table.frame)


def test_channel_stats_on_training_images(synthetic):
    mean, std = channel_stats(pixel_source(synthetic, 32))
    assert all(0 < m < 1 for m in mean) and all(0 < s < 1 for s in std)
