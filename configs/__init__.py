"""YAML presets shipped with samtrack (installed as ``samtrack.configs``)."""
