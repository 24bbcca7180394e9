"""csfgan: a reproducible benchmarking and ablation harness for CSF-GAN (text-guided image inpainting)."""

__version__ = "0.1.0"
