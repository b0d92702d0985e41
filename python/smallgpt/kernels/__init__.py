"""Triton kernels, shipped inside the wheel as ``smallgpt.kernels``."""
