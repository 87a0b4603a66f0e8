"""Datasets: the tabletop world and loaders for real formats, all mapped to Sample."""
