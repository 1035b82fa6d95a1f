"""Policies: YAML files mapping category scores and post metadata to allow / review / block."""
