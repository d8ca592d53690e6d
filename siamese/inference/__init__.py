"""Prediction from a finished run: what to repeat from training (preprocess), the engines that run the
model (ONNX Runtime without torch, or torch), the inference graph and its ONNX export, and the predictor.

Nothing is imported here, so ``predict`` pays only for the modules its engine needs."""
