"""ofa-deploy: train a Once-For-All supernet and ship its subnets to many devices."""

__version__ = "0.1.0"
