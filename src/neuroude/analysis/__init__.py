"""Analysis of fitted models."""
