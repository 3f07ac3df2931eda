"""Generated Python code for the `hotline.v1` protocol (from `proto/hotline/v1/*.proto`)."""
