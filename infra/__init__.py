"""What runs the system: the embedded local stack and the end-to-end demo."""
