"""The PyTorch trainer: the DCN model, its training step, and the command line both trainers share
(trainer_cli, which the HugeCTR trainer imports too)."""
