"""Lesion segmentation: U-Net training on real masks, Dice/IoU evaluation and the segmenter's ONNX export (the
masks a trained run predicts for new images are inference: :mod:`siamese.inference.lesion_masks`)."""
