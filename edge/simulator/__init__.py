"""A simulated site behind a real pymodbus server: `python -m edge.simulator`."""
