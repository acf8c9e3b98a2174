"""Measurement: PSNR evaluation, peers, the paper's tables, accuracy and throughput benchmarks."""
