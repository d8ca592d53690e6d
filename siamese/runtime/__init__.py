"""Run-time plumbing: device choice, seeding and mixed precision, torchrun processes, experiment tracking
(W&B), and the errors the command line turns into one-line messages."""
