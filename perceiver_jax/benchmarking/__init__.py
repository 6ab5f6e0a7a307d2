"""Measurement library behind the commands in experiments/: timing, FLOPs,
the machine's own matmul rate, model summaries, peers and the GPU report."""
