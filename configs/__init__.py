"""Module configurations and asset manifests (YAML), shipped as package data."""
