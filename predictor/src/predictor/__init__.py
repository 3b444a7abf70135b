"""Predictor stage: batch churn scoring written back to the warehouse."""
