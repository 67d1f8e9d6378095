"""Helpers shared by models, data and scripts: images, HTML, visualizer, metrics, checkpoints."""
