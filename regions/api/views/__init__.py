"""The region's HTTP API, one module per caller and resource."""
