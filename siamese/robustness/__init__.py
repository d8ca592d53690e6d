"""Artefact robustness: real bubbles, ink and rulers inserted into images, and how far a model moves."""
