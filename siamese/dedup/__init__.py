"""Near-duplicate search: frozen-CNN and perceptual-hash descriptors (``features``), exact chunked
neighbour search (``search``), the ``dedup`` command's pairs, clusters and label conflicts (``find``),
agreement with a published list (``compare``) and the side-by-side page (``page``)."""
