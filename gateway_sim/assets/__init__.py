"""Static files of the simulated login page and the gateway layout templates."""
