"""Spark: connection to master URL, the pure spark-submit argv builder, and running/killing the submission."""
