"""Developer tools: sample-data generation for the datalake."""
