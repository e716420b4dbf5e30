"""What the API and compute sides agree on: keys, schemas, the status machine, scripts, settings."""
