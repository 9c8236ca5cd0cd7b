"""Training DiffPose: data sources (``datasets``), augmentation (``augment``), heatmap targets
(``targets``) and the loop (``loop.train(TrainConfig) -> Path``). Not imported by inference code."""
