"""`python -m publish`: stage a fine-tuned adapter or merged model for Hugging Face, ModelScope or OpenXLab."""

__version__ = "0.1.0"
