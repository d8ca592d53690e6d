"""Lesion segmentation: U-Net training on real masks, Dice/IoU evaluation, masks for lesion-centred crops."""
