"""Export jobs to verified files in S3."""
