"""The trainers: stage 0 (self-supervised warm-up, ``selfsup``), stage 1 (metric learning with
pytorch-metric-learning's losses and miners by name, ``metric_learning`` and ``losses``), stage 2 (the dense
classifier on frozen embeddings, ``classify``), the end-to-end fine-tuned reference network (``finetune``)
and the embedding caches (``embeddings``).

Above ``models`` and ``config``; below ``evaluation`` and the workflows that call them."""
