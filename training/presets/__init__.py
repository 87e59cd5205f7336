"""DINO pre-training presets (YAML), shipped as package data."""
