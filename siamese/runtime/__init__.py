"""Run-time plumbing: device choice, seeding and mixed precision, torchrun processes, and the errors the
command line turns into one-line messages."""
