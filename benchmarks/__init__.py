"""Benchmarks: sweeps run through `python -m forecast.train -m`, read back from MLflow into tables.

    python -m benchmarks ett        # the ETT table (README), benchmarks/results/ett.{json,md}
    python -m benchmarks design     # the validation sweep that chose the model defaults

Not part of the test suite: they take from minutes to hours.
"""
