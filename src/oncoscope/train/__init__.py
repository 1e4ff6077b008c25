"""Training: configuration and recipes, manifest data, the LightningModule, runs, checkpoints."""
