//! imgpipe domain: recipes and presets, step inputs/outputs, the steps over ports, step errors.
