"""Figures and reports a person opens: training curves, confusion matrices, ROC, image grids, the run
report, t-SNE/UMAP projections and Grad-CAM saliency."""
