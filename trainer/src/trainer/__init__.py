"""Trainer stage: train, evaluate, register and promote the churn model."""
