"""Small clients of faceport's surfaces."""
