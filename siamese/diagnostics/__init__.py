"""Figures and pages a person opens about a finished run: t-SNE/UMAP projections, Grad-CAM saliency and the
explorer page (a run's own plots and report are written by :mod:`siamese.workflows.run_report`, with the
figures of :mod:`siamese.evaluation.figures`)."""
